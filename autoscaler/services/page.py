"""The web page for a person: one HTML shell, our own script and stylesheet.

The script reads the JSON API and draws the charts itself (SVG); nothing is fetched
from outside the daemon, so the page works offline and a strict Content-Security-Policy
holds.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

STATIC_FILES = {
    "app.js": "text/javascript",
    "app.css": "text/css",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _read(name: str) -> bytes:
    return resources.files("autoscaler.services").joinpath("static", name).read_bytes()


def add_routes(app: web.Application) -> None:
    """GET / (target list), GET /targets/{namespace}/{name}/{digest} and /static/*."""
    shell = _read("index.html")
    assets = {name: (_read(name), content_type) for name, content_type in STATIC_FILES.items()}

    async def index(request: web.Request) -> web.Response:
        return web.Response(body=shell, content_type="text/html", charset="utf-8", headers=SECURITY_HEADERS)

    async def asset(request: web.Request) -> web.Response:
        found = assets.get(request.match_info["file"])
        if found is None:
            raise web.HTTPNotFound()
        body, content_type = found
        return web.Response(body=body, content_type=content_type, charset="utf-8", headers=SECURITY_HEADERS)

    app.router.add_get("/", index, allow_head=False)
    app.router.add_get("/targets/{namespace}/{name}/{digest}", index, allow_head=False)
    app.router.add_get("/static/{file}", asset, allow_head=False)
