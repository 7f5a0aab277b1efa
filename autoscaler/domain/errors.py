"""Errors raised by the pure core."""

from __future__ import annotations


class SpecError(ValueError):
    """A scalerMetadata key is missing, unknown or has a bad value."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"scalerMetadata key {key!r}: {reason}")
        self.key = key
        self.reason = reason

    def __reduce__(self) -> tuple[type[SpecError], tuple[str, str]]:
        # A process pool (the backtest's --jobs) pickles it back: by its own arguments,
        # not by the message, which the default would pass as `key` alone.
        return type(self), (self.key, self.reason)


class TraceError(ValueError):
    """A recorded trace cannot be used; the message names the row."""

    def __init__(self, row: int | None, reason: str) -> None:
        where = f"row {row}" if row is not None else "trace"
        super().__init__(f"{where}: {reason}")
        self.row = row
        self.reason = reason

    def __reduce__(self) -> tuple[type[TraceError], tuple[int | None, str]]:
        return type(self), (self.row, self.reason)
