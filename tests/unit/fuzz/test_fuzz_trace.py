"""Hostile trace files: `parse_trace` answers TraceError or a consistent trace, never another error."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoscaler.domain.errors import TraceError
from autoscaler.sim.trace import HEADER, Trace, parse_trace

NUMBER_TEXT = st.one_of(
    st.sampled_from(["", "nan", "inf", "-inf", "1e999", "-0", "0x1", "1_0", "١", " 1 ", "+5", "1e-320", "٣.5"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
)
ROW = st.one_of(
    st.tuples(NUMBER_TEXT, NUMBER_TEXT).map(",".join),
    st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40),
)
LINES = st.lists(ROW, max_size=30).flatmap(
    lambda rows: st.sampled_from([HEADER, "\ufefftimestamp,value", " timestamp , value", "value,timestamp", ""]).map(
        lambda header: [header, *rows]
    )
)


def parse_or_trace_error(lines: list[str], step_seconds: float | None = None) -> Trace | None:
    try:
        return parse_trace(lines, step_seconds=step_seconds)
    except TraceError as error:
        assert error.row is None or 1 <= error.row <= len(lines), error
        return None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(LINES, st.sampled_from([None, 1.0, 60.0]))
def test_arbitrary_rows_give_trace_error_or_a_regular_trace(lines: list[str], step: float | None) -> None:
    trace = parse_or_trace_error(lines, step_seconds=step)
    if trace is not None:
        assert len(trace) >= 1 and trace.step_seconds > 0
        assert all(math.isfinite(value) and value >= 0 for value in trace.values)
        gaps = trace.timestamps[1:] - trace.timestamps[:-1]
        assert all(abs(gap - trace.step_seconds) <= 1e-6 * trace.step_seconds for gap in gaps)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=2000))
def test_arbitrary_text_gives_trace_error_or_a_trace(text: str) -> None:
    parse_or_trace_error(text.splitlines(keepends=True))


def test_row_limit_is_enforced_before_reading_everything() -> None:
    def endless() -> Iterator[str]:
        yield HEADER
        index = 0
        while True:
            yield f"{index},1"
            index += 1

    started = time.perf_counter()
    with pytest.raises(TraceError, match="more than 1000 rows"):
        parse_trace(endless(), max_rows=1000)
    assert time.perf_counter() - started < 1.0


def test_a_huge_line_is_an_error_naming_the_row() -> None:
    with pytest.raises(TraceError) as raised:
        parse_trace([HEADER, "1," + "9" * 100_000])
    assert raised.value.row == 2
