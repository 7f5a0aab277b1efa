"""Parse a recorded trace: CSV text with the header `timestamp,value` and regular steps.

Pure: it takes lines, the command opens the file. Every problem is a `TraceError`
naming the 1-based line (the header is line 1), so a user can jump straight to it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from autoscaler.domain.errors import TraceError
from autoscaler.domain.types import FloatArray

HEADER = "timestamp,value"
MAX_ROWS = 2_000_000
MAX_LINE_CHARS = 256  # a timestamp, a comma and a number: anything longer is not a trace row
STEP_TOLERANCE = 1e-6


@dataclass(frozen=True, slots=True)
class Trace:
    timestamps: FloatArray
    values: FloatArray
    step_seconds: float

    def __len__(self) -> int:
        return int(self.values.size)

    @property
    def span_seconds(self) -> float:
        """The time the rows cover: from the first row to the end of the last row's step."""
        return float(self.timestamps[-1] - self.timestamps[0]) + self.step_seconds


def _number(text: str, *, line: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TraceError(line, f"{column} {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise TraceError(line, f"{column} {text.strip()!r} is not finite")
    return value


def parse_trace(
    lines: Iterable[str],
    *,
    step_seconds: float | None = None,
    allow_negative: bool = False,
    max_rows: int = MAX_ROWS,
) -> Trace:
    """Read `timestamp,value` rows; `step_seconds` None takes the step from the first two rows."""
    timestamps: list[float] = []
    values: list[float] = []
    header_seen = False
    step = step_seconds
    for line_number, raw in enumerate(lines, start=1):
        if len(raw) > MAX_LINE_CHARS:
            raise TraceError(line_number, f"line longer than {MAX_LINE_CHARS} characters")
        line = raw.strip().lstrip("\ufeff")
        if not header_seen:
            if line.replace(" ", "") != HEADER:
                raise TraceError(line_number, f"header must be {HEADER!r}, found {line[:60]!r}")
            header_seen = True
            continue
        if not line:
            continue
        if len(values) >= max_rows:
            raise TraceError(line_number, f"trace has more than {max_rows} rows")
        fields = line.split(",")
        if len(fields) != 2:
            raise TraceError(line_number, f"expected 2 fields (timestamp,value), found {len(fields)}")
        timestamp = _number(fields[0], line=line_number, column="timestamp")
        value = _number(fields[1], line=line_number, column="value")
        if value < 0 and not allow_negative:
            raise TraceError(line_number, f"value {value:g} is negative")
        if timestamps:
            gap = timestamp - timestamps[-1]
            if gap <= 0:
                raise TraceError(
                    line_number, f"timestamp {timestamp:g} does not increase (previous {timestamps[-1]:g})"
                )
            if step is None:
                step = gap
            elif abs(gap - step) > STEP_TOLERANCE * step:
                raise TraceError(
                    line_number, f"timestamp {timestamp:g} is {gap:g}s after the previous row; the step is {step:g}s"
                )
        timestamps.append(timestamp)
        values.append(value)
    if not header_seen:
        raise TraceError(None, "empty trace: no header and no rows")
    if not values:
        raise TraceError(None, "no data rows after the header")
    if step is None:
        raise TraceError(None, "one row only: pass the step to read a single-row trace")
    return Trace(timestamps=np.asarray(timestamps), values=np.asarray(values), step_seconds=float(step))
