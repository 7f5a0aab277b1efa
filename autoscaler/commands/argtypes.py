"""argparse `type=` checks the trace commands share; each error names the bad text."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TypeVar

Number = TypeVar("Number", int, float)

EXIT_USAGE = 2
"""A command's exit code for input it cannot use (argparse's own, for its errors)."""


def positive(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def non_negative(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be zero or a positive number")
    return value


def between(low: Number, high: Number, *, parse: Callable[[str], Number], name: str) -> Callable[[str], Number]:
    """A check that `text` parses to a value in [low, high]; `name` is what argparse calls it
    when `parse` itself fails ("invalid NAME value")."""

    def check(text: str) -> Number:
        value = parse(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} must be between {low:g} and {high:g}")
        return value

    check.__name__ = name
    return check
