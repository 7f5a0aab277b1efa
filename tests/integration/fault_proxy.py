"""A fault-injecting HTTP proxy on loopback in front of a real Prometheus.

The proxy forwards the Prometheus HTTP API and, while a fault is set, breaks it the
way production does:

- `DOWN`: nothing listens on the port any more (connection refused); clearing the fault
  listens again on the same port, so clients built before keep working;
- `RESET`: the connection is accepted, then reset (RST) before any answer;
- `SLOW`: the answer is held `delay_seconds` before forwarding (past the client timeout);
- `HTTP_ERROR`: a plain-text error with `status` (500, 503, 429 with Retry-After);
- `NAN`, `INF`: every sample value in the answer is rewritten to NaN or +Inf;
- `MULTI_SERIES`: every series in the answer is duplicated under another label set.

A fault may be limited to the requests `applies_to(method, path)` selects and to the
first `times` of them, after which requests pass again. The upstream may be HTTPS with
a client certificate (`upstream_ssl`), so the same proxy stands in front of the
Kubernetes API server. `requests` counts what reached the proxy per last path segment
("query", "query_range", a Deployment's name), and `faulted` how many were broken.
"""

from __future__ import annotations

import asyncio
import copy
import enum
import json
import socket
import ssl
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web


class Fault(enum.Enum):
    NONE = "none"
    DOWN = "down"
    RESET = "reset"
    SLOW = "slow"
    HTTP_ERROR = "http-error"
    NAN = "nan"
    INF = "inf"
    MULTI_SERIES = "multi-series"


def _every_request(_method: str, _path: str) -> bool:
    return True


@dataclass(frozen=True)
class FaultSetting:
    fault: Fault = Fault.NONE
    status: int = 503
    delay_seconds: float = 0.0
    retry_after_seconds: float | None = None
    body: str | None = None
    """The error answer's body; a plain-text line naming the status by default."""
    applies_to: Callable[[str, str], bool] = _every_request
    times: int | None = None
    """Fault only the first `times` selected requests; None: all of them."""


_REWRITTEN_VALUES = {Fault.NAN: "NaN", Fault.INF: "+Inf"}


class FaultProxy:
    """Forwards /api/v1/* to `upstream`; runs on the test's event loop."""

    def __init__(self, upstream: str, *, upstream_ssl: ssl.SSLContext | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.upstream_ssl = upstream_ssl
        self.setting = FaultSetting()
        self.requests: Counter[str] = Counter()
        self.faulted = 0
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._site: web.SockSite | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        self._session = aiohttp.ClientSession()
        await self._listen()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        self._runner = self._site = self._session = None

    async def set(self, setting: FaultSetting) -> None:
        """Switch faults; DOWN closes the listening socket, leaving DOWN opens it again."""
        previous, self.setting = self.setting, setting
        self.faulted = 0
        if setting.fault is Fault.DOWN and previous.fault is not Fault.DOWN and self._site is not None:
            await self._site.stop()
            self._site = None
        elif setting.fault is not Fault.DOWN and self._site is None:
            await self._listen()

    async def clear(self) -> None:
        await self.set(FaultSetting())

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def _listen(self) -> None:
        assert self._runner is not None
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        self.port = listener.getsockname()[1]
        self._site = web.SockSite(self._runner, listener)
        await self._site.start()

    def _faults(self, request: web.Request) -> bool:
        setting = self.setting
        if setting.fault is Fault.NONE or not setting.applies_to(request.method, request.path):
            return False
        if setting.times is not None and self.faulted >= setting.times:
            return False
        self.faulted += 1
        return True

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        setting = self.setting
        self.requests[request.path.rsplit("/", 1)[-1]] += 1
        if not self._faults(request):
            status, body, content_type = await self._forward(request)
            return web.Response(status=status, body=body, content_type=content_type)
        if setting.fault in (Fault.RESET, Fault.DOWN):
            # DOWN: connections kept alive from before the listener closed die too.
            return _reset(request)
        if setting.fault is Fault.HTTP_ERROR:
            headers = {}
            if setting.retry_after_seconds is not None:
                headers["Retry-After"] = f"{setting.retry_after_seconds:g}"
            text = setting.body if setting.body is not None else f"injected HTTP {setting.status}"
            return web.Response(status=setting.status, text=text, headers=headers)
        if setting.fault is Fault.SLOW:
            await asyncio.sleep(setting.delay_seconds)
        status, body, content_type = await self._forward(request)
        if status == 200 and setting.fault in (Fault.NAN, Fault.INF, Fault.MULTI_SERIES):
            body = json.dumps(_rewrite(json.loads(body), setting.fault)).encode()
        return web.Response(status=status, body=body, content_type=content_type)

    async def _forward(self, request: web.Request) -> tuple[int, bytes, str]:
        assert self._session is not None
        async with self._session.request(
            request.method,
            f"{self.upstream}{request.path_qs}",
            data=await request.read(),
            # Only what the client sent: the API server reads a body without a type as JSON.
            headers={name: value for name, value in request.headers.items() if name.lower() == "content-type"},
            skip_auto_headers=("Content-Type",),
            ssl=self.upstream_ssl if self.upstream_ssl is not None else True,
        ) as upstream:
            return upstream.status, await upstream.read(), upstream.content_type


def _reset(request: web.Request) -> web.StreamResponse:
    """Abort with SO_LINGER 0, so the client sees a TCP reset rather than a clean close."""
    transport = request.transport
    if transport is not None:
        connection = transport.get_extra_info("socket")
        if connection is not None:
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    raise asyncio.CancelledError  # aiohttp ends the handler quietly once the peer is gone


def _rewrite(answer: Any, fault: Fault) -> Any:
    """NaN/Inf sample values, or each series twice, in a Prometheus success answer."""
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("result"), list):
        return answer
    result: list[dict[str, Any]] = data["result"]
    if fault is Fault.MULTI_SERIES:
        twins = []
        for series in result:
            twin = copy.deepcopy(series)
            twin["metric"] = {**series.get("metric", {}), "replica": "injected-twin"}
            twins.append(twin)
        data["result"] = result + twins
        return answer
    value = _REWRITTEN_VALUES[fault]
    for series in result:
        if "value" in series:
            series["value"] = [series["value"][0], value]
        if "values" in series:
            series["values"] = [[timestamp, value] for timestamp, _ in series["values"]]
    return answer
