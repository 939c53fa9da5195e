"""The dashboard's files and headers (mesh/service/dashboard.py), without a browser: GET / and
its script and style are served from the package with the security headers, nothing else under
/ui/ is, the package data covers every file, and the script has no way to write the mesh's
strings as markup or to send a command. tests/mesh/test_dashboard_browser.py runs the page."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mesh.service import dashboard
from mesh.service.dashboard import ASSETS, INDEX, Asset, DashboardMissing, add_routes, load_assets

REPO_ROOT = Path(__file__).resolve().parents[2]
WEB_DIR = REPO_ROOT / "mesh" / "service" / "web"

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    app = web.Application()
    add_routes(app)
    test_client = TestClient(TestServer(app, host="127.0.0.1"))
    await test_client.start_server()
    yield test_client
    await test_client.close()


def _security_headers_of(response: object) -> None:
    headers = response.headers  # type: ignore[attr-defined]
    policy = headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"


async def test_the_page_and_its_files_are_served_with_security_headers(client: Client) -> None:
    page = await client.get("/")
    assert page.status == 200
    assert page.headers["Content-Type"].startswith("text/html")
    _security_headers_of(page)
    html = await page.text()
    assert '<script src="/ui/app.js"' in html and 'href="/ui/style.css"' in html
    for name, content_type in ASSETS.items():
        asset = await client.get(f"/ui/{name}")
        assert asset.status == 200, name
        assert asset.headers["Content-Type"] == content_type
        _security_headers_of(asset)
        assert await asset.read() == (WEB_DIR / name).read_bytes()


@pytest.mark.parametrize(
    "path", ["/ui/index.html", "/ui/app.js.map", "/ui/..%2Fdashboard.py", "/ui/" + "x" * 300]
)
async def test_nothing_else_is_served_under_ui(client: Client, path: str) -> None:
    response = await client.get(path)
    assert response.status == 404
    body = await response.json()
    assert "the page is at /" in body["error"] and len(body["error"]) < 150
    _security_headers_of(response)


def test_a_missing_file_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(dashboard, "WEB_DIR", "no-such-folder")
    with pytest.raises(DashboardMissing, match=r"missing from the installed package.*reinstall"):
        load_assets()


def test_package_data_ships_every_file_of_the_page() -> None:
    """A wheel carries only what pyproject's package-data names: every file the page needs."""
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["mesh.service"]
    files = sorted(p.relative_to(WEB_DIR.parent).as_posix() for p in WEB_DIR.iterdir())
    assert sorted([INDEX, *ASSETS]) == sorted(p.name for p in WEB_DIR.iterdir())
    for name in files:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), f"{name} is not package data"


def test_page_loads_nothing_from_elsewhere_and_has_no_inline_code() -> None:
    html = (WEB_DIR / INDEX).read_text()
    css = (WEB_DIR / "style.css").read_text()
    # Every script is a file of this node: an inline one would be refused by the policy anyway.
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/ui/app.js" defer>']
    assert not re.search(r"\son\w+\s*=", html), "an inline event handler"
    assert "style=" not in html
    for text in (html, css, (WEB_DIR / "app.js").read_text()):
        assert "http://" not in text and "https://" not in text and "//cdn" not in text
        assert "@import" not in text and "url(" not in text


def test_the_script_writes_text_never_markup_and_only_reads() -> None:
    script = (WEB_DIR / "app.js").read_text()
    code = re.sub(r"^\s*//.*$", "", script, flags=re.MULTILINE)  # comments may name what is avoided
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "Function(",
        "srcdoc",
    ):
        assert sink not in code, f"app.js uses {sink}: the mesh's strings must be written as text"
    assert 'setAttribute("style"' not in code and "setAttribute('style'" not in code
    # Read-only: the only method it ever names is GET, and it never builds a form.
    assert re.findall(r'method:\s*"(\w+)"', code) == ["GET"]
    for verb in ("POST", "PUT", "DELETE", "PATCH", "sendBeacon", "<form", 'createElement("form")'):
        assert verb not in code, f"app.js mentions {verb}: the page must not send commands"


def test_assets_given_to_add_routes_are_served(tmp_path: Path) -> None:
    """add_routes takes the assets it is given (a test or an embedder can serve its own)."""
    app = web.Application()
    assets = {INDEX: Asset(b"<p>x</p>", "text/html"), **{n: Asset(b"", t) for n, t in ASSETS.items()}}
    add_routes(app, assets)
    assert app[dashboard.ASSETS_KEY] is assets
