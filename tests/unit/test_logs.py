"""Log formats keep one record on one line, whatever a caller put in a name or a message."""

from __future__ import annotations

import json
import logging

import pytest

from autoscaler.logs import JsonFormatter, TextFormatter, escape_controls

FORGED = "llm\nerror   autoscaler.engine: target evicted\r\x1b[2K\u2028tail\x85"


def record(message: str, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("autoscaler.engine", logging.INFO, __file__, 1, message, None, None)
    for key, value in extra.items():
        setattr(made, key, value)
    return made


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain name", "plain name"),
        ("a\nb", "a\\nb"),
        ("\r\t\x00\x1b\x7f", "\\r\\t\\x00\\x1b\\x7f"),
        ("\x85\u2028\u2029", "\\x85\\u2028\\u2029"),
        ("ünïcode ✓", "ünïcode ✓"),
    ],
)
def test_controls_are_escaped_and_the_rest_kept(text: str, expected: str) -> None:
    assert escape_controls(text) == expected


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
def test_a_forged_target_name_stays_on_one_line(formatter: logging.Formatter) -> None:
    line = formatter.format(record(f"target registered {FORGED}", target=FORGED))
    assert len(line.splitlines()) == 1
    assert "\x1b" not in line
    assert "\u2028" not in line


def test_json_keeps_the_name_exactly() -> None:
    payload = json.loads(JsonFormatter().format(record("target registered", target=FORGED)))
    assert payload["target"] == FORGED
