from __future__ import annotations

import pytest

from autoscaler.domain.errors import TraceError
from autoscaler.sim.trace import parse_trace

GOOD = "timestamp,value\n0,1.5\n60,2\n120,0\n"


def test_parses_a_regular_trace() -> None:
    trace = parse_trace(GOOD.splitlines())
    assert trace.step_seconds == 60.0
    assert list(trace.timestamps) == [0.0, 60.0, 120.0]
    assert list(trace.values) == [1.5, 2.0, 0.0]
    assert len(trace) == 3
    assert trace.span_seconds == 180.0  # three one-minute steps


def test_tolerates_bom_spaces_and_trailing_blank_lines() -> None:
    trace = parse_trace(["\ufefftimestamp, value", " 0 , 1", "10,2", "", ""], step_seconds=10)
    assert list(trace.values) == [1.0, 2.0]


ERRORS = [
    # name, text, kwargs, row, fragment
    ("empty", "", {}, None, "empty trace"),
    ("header only", "timestamp,value\n", {}, None, "no data rows"),
    ("bad header", "time,value\n0,1\n", {}, 1, "header must be 'timestamp,value'"),
    ("three fields", "timestamp,value\n0,1\n60,2,3\n", {}, 3, "expected 2 fields"),
    ("non-numeric value", "timestamp,value\n0,1\n60,abc\n", {}, 3, "value 'abc' is not a number"),
    ("non-numeric timestamp", "timestamp,value\nnoon,1\n", {}, 2, "timestamp 'noon' is not a number"),
    ("NaN", "timestamp,value\n0,1\n60,nan\n", {}, 3, "value 'nan' is not finite"),
    ("Inf", "timestamp,value\n0,inf\n", {}, 2, "value 'inf' is not finite"),
    ("negative", "timestamp,value\n0,1\n60,-4\n", {}, 3, "value -4 is negative"),
    ("repeated timestamp", "timestamp,value\n0,1\n60,2\n60,3\n", {}, 4, "does not increase"),
    ("decreasing timestamp", "timestamp,value\n60,1\n0,2\n", {}, 3, "does not increase"),
    ("irregular step", "timestamp,value\n0,1\n60,2\n180,3\n", {}, 4, "120s after the previous row; the step is 60s"),
    ("step differs from flag", "timestamp,value\n0,1\n60,2\n", {"step_seconds": 30.0}, 3, "the step is 30s"),
    ("too many rows", "timestamp,value\n0,1\n60,2\n120,3\n", {"max_rows": 2}, 4, "more than 2 rows"),
    ("single row without step", "timestamp,value\n0,1\n", {}, None, "one row only"),
    ("line too long", "timestamp,value\n0," + "1" * 300 + "\n", {}, 2, "longer than 256 characters"),
]


@pytest.mark.parametrize(("name", "text", "kwargs", "row", "fragment"), ERRORS, ids=[case[0] for case in ERRORS])
def test_errors_name_the_row(name: str, text: str, kwargs: dict[str, float], row: int | None, fragment: str) -> None:
    with pytest.raises(TraceError) as caught:
        parse_trace(text.splitlines(), **kwargs)  # type: ignore[arg-type]
    assert caught.value.row == row
    assert fragment in str(caught.value)
    if row is not None:
        assert str(caught.value).startswith(f"row {row}: ")


def test_negative_values_allowed_when_asked() -> None:
    trace = parse_trace(["timestamp,value", "0,-1", "5,-2"], allow_negative=True)
    assert list(trace.values) == [-1.0, -2.0]


def test_single_row_with_step() -> None:
    trace = parse_trace(["timestamp,value", "0,7"], step_seconds=60)
    assert trace.step_seconds == 60.0
    assert trace.span_seconds == 60.0
