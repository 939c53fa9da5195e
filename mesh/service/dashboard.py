"""The live web dashboard: `GET /` on every node serves one read-only page about the whole fleet.

The page is three static files shipped in the package (mesh/service/web/: index.html,
app.js, style.css; declared as package data in pyproject.toml), read once when the API
is built. There is no build step and nothing is fetched from elsewhere: the page's script
polls this node's own JSON endpoints (GET /v1/health, /v1/regions, /v1/nodes?region=R,
/v1/placements?region=R, /v1/deployments) every 2 s and follows GET /v1/events/stream.
It issues no command. docs/dashboard.md describes it for its users.

Every answer carries headers that keep the page to itself: a Content-Security-Policy
that allows scripts, styles and connections to this origin only (no inline script, no
eval, no framing), `X-Content-Type-Options: nosniff`, no referrer. The names of nodes,
labels and deployments come from the mesh, so the script writes them as text, never as
markup (tests/mesh/test_dashboard.py checks it has no way to write markup).
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass

from aiohttp import web

WEB_PACKAGE = "mesh.service"
WEB_DIR = "web"
# The page's own files, by the name the page asks for: nothing else under /ui/ is served,
# so a request cannot reach another file of the package.
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
INDEX = "index.html"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # A node's upgrade changes the files: a browser asks again rather than run an old script.
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class Asset:
    """One file of the page, held in memory."""

    body: bytes
    content_type: str


class DashboardMissing(Exception):
    """The page's files are not in the installed package (a broken install)."""


def load_assets() -> dict[str, Asset]:
    """The page's files by name, read from the installed package; DashboardMissing if one is absent."""
    folder = importlib.resources.files(WEB_PACKAGE).joinpath(WEB_DIR)
    assets: dict[str, Asset] = {}
    for name, content_type in {INDEX: "text/html; charset=utf-8", **ASSETS}.items():
        try:
            body = folder.joinpath(name).read_bytes()
        except OSError as exc:
            raise DashboardMissing(
                f"the dashboard file {WEB_DIR}/{name} is missing from the installed package ({exc}); "
                "reinstall murmuration (pip install murmuration, or pip install -e . in a checkout)"
            ) from None
        assets[name] = Asset(body, content_type)
    return assets


ASSETS_KEY = web.AppKey("dashboard_assets", dict[str, Asset])


def _response(asset: Asset) -> web.Response:
    return web.Response(body=asset.body, headers={"Content-Type": asset.content_type, **SECURITY_HEADERS})


async def get_index(request: web.Request) -> web.Response:
    return _response(request.app[ASSETS_KEY][INDEX])


async def get_asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in ASSETS:
        return web.json_response(
            {"error": f"no dashboard file {name[:64]!r}; the page is at /"},
            status=404,
            headers=SECURITY_HEADERS,
        )
    return _response(request.app[ASSETS_KEY][name])


def add_routes(app: web.Application, assets: dict[str, Asset] | None = None) -> None:
    """Serve the dashboard at GET / (and its script and style under /ui/) on `app`."""
    app[ASSETS_KEY] = load_assets() if assets is None else assets
    app.router.add_get("/", get_index)
    app.router.add_get("/ui/{name}", get_asset)
