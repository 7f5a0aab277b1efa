"""`autoscaler spec-keys`: print the scalerMetadata reference table (Markdown)."""

from __future__ import annotations

import argparse
from typing import Any

from autoscaler.domain.spec import keys_markdown_table


def add_parser(subparsers: Any) -> None:
    subparsers.add_parser("spec-keys", help="print the table of scalerMetadata keys")


def run(args: argparse.Namespace) -> int:
    print(keys_markdown_table())
    return 0
