"""A scripted HTTP server on loopback, for answers a real Prometheus will not give on demand.

Only faults live here: malformed JSON shapes, 5xx, 429 with Retry-After, slow or huge
answers. Everything Prometheus itself can answer is tested against the real server in
tests/integration/test_prometheus_adapter.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.loopback_http import serve_on_loopback


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_seconds: float = 0.0
    chunked: bool = False  # stream the body without a Content-Length


def success(result_type: str, result: Any) -> Answer:
    return Answer(
        body=json.dumps({"status": "success", "data": {"resultType": result_type, "result": result}}).encode()
    )


@dataclass(frozen=True)
class Received:
    path: str
    form: Mapping[str, str]
    headers: Mapping[str, str]


Script = Callable[[Received], Answer]


class ScriptedServer:
    """Answers each request with `script(request)`; records what it received."""

    def __init__(self) -> None:
        self.script: Script = lambda _: Answer(status=500)
        self.received: list[Received] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    def answer_in_turn(self, *answers: Answer) -> None:
        """The n-th request gets the n-th answer; later ones get the last."""

        def script(_: Received) -> Answer:
            return answers[min(len(self.received) - 1, len(answers) - 1)]

        self.script = script

    async def start(self) -> None:
        self._runner, self.url = await serve_on_loopback(self._handle)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        form = {key: str(value) for key, value in (await request.post()).items()}
        received = Received(request.path, form, dict(request.headers))
        self.received.append(received)
        answer = self.script(received)
        if answer.delay_seconds:
            await asyncio.sleep(answer.delay_seconds)
        if not answer.chunked:
            return web.Response(status=answer.status, body=answer.body, headers=answer.headers)
        response = web.StreamResponse(status=answer.status, headers=answer.headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(answer.body)
        await response.write_eof()
        return response
