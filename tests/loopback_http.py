"""An aiohttp handler served on a free loopback port, for the test servers that script or relay answers."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serve_on_loopback(handler: Handler) -> tuple[web.AppRunner, str]:
    """Route every method and path to `handler`; returns the runner (the caller cleans it up) and the base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        # Bound here rather than by the site, so the port is known without reaching into the site.
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        await web.SockSite(runner, listener).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, f"http://127.0.0.1:{listener.getsockname()[1]}"
