"""Structured logging: one JSON object per line, with the `extra` fields of each call.

Decisions log through here with their reason, so `kubectl logs` explains every change.
Both formats keep one record to one line whatever a caller put in a target's name or a
message: JSON escapes control characters itself, and the text format escapes them here,
so a ScaledObject named "a\nlevel=error ..." cannot forge a line.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
_LINE_BREAKING = [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029]
"""C0 and C1 controls and Unicode's line and paragraph separators: what a reader may take for a new line."""
_ESCAPES = str.maketrans({code: ascii(chr(code))[1:-1] for code in _LINE_BREAKING})


def escape_controls(text: str) -> str:
    """`text` with control characters written as Python escapes (\\n, \\x1b, \\u2028)."""
    return text.translate(_ESCAPES)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{key}={escape_controls(str(value))}"
            for key, value in vars(record).items()
            if key not in _RESERVED and not key.startswith("_")
        )
        line = f"{record.levelname.lower():7} {record.name}: {escape_controls(record.getMessage())}"
        return f"{line} {extras}".rstrip()


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiohttp.access", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
