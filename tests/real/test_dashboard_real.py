"""The dashboard of a real mesh in headless Chromium: 6 `murmur agent` processes in 2 regions on
127.0.0.1, a deployment of 2 replicas per region, and the page of one node (GET /). The page lists
every node of both regions alive; after kill -9 of an agent of its region it shows that node
suspect or dead within seconds, and its event feed shows the death. The page's screenshot is
saved (docs/img/dashboard.png with MURMUR_DOCS_SCREENSHOT=1; docs/dashboard.md shows it). Skips
without Chromium (tests/chromium.py). The bounds are functional timeouts, not performance
assertions; the figures observed are printed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from mesh.dev.localmesh import LocalMesh, wait_until
from mesh.examples.build_models import MODELS_DIR
from tests.chromium import Chromium, chromium_or_skip
from tests.real.conftest import MeshFactory
from tests.real.test_agents import CONVERGE_S, _all_alive, _start_all
from tests.real.test_deploy import _murmur

pytestmark = pytest.mark.real

REGIONS = ("north", "south")
AGENTS_PER_REGION = 3
SHOWN_WITHIN_S = 30.0  # Chromium's start, the page's first polls, the other region's summary
PLACED_WITHIN_S = 30.0  # leaders elected, the deploy gossiped, placements published
DETECT_WITHIN_S = 15.0  # the local profile confirms a crashed process dead in about 2 s
SCREENSHOT_MAX_BYTES = 300 * 1024
DOCS_IMAGE = Path(__file__).resolve().parents[2] / "docs" / "img" / "dashboard.png"
READY_WITHIN_S = 30.0  # for the picture: the replacement fetched, loaded and warmed up
# The example anomaly model (mesh/examples/models), 2 replicas per region, as `vibration`.
MANIFEST = (
    (MODELS_DIR / "vibration-anomaly.yaml")
    .read_text()
    .replace("name: vibration-anomaly\n", "name: vibration\n")
    .replace("replicas: 1", "replicas: 2")
    .replace("file: vibration-anomaly.onnx", f"file: {MODELS_DIR}/vibration-anomaly.onnx")
)


def _state_js(node_id: str) -> str:
    """The state the page shows for `node_id` ('' if it has no row)."""
    return (
        f"(document.querySelector('tr[data-node=\"{node_id}\"] .state') || {{textContent: ''}}).textContent"
    )


def _start_mesh(mesh: LocalMesh) -> dict[str, str]:
    for region in REGIONS:
        for i in range(1, AGENTS_PER_REGION + 1):
            # Seeds: the agents of its region added before it; south's first joins through north.
            same = [a for a in mesh.agents if a.region == region]
            mesh.add(f"{region}-{i}", region, same or mesh.agents[:1])
    ids = _start_all(mesh)
    regions = [[a for a in mesh.agents if a.region == region] for region in REGIONS]

    def each_region_alive() -> bool:
        return all(_all_alive(mesh, agents, [ids[a.name] for a in agents]) for agents in regions)

    assert wait_until(each_region_alive, CONVERGE_S * 2)
    return ids


async def test_the_page_shows_every_node_and_a_death_within_seconds(
    local_mesh: MeshFactory, tmp_path: Path
) -> None:
    binary = chromium_or_skip()
    mesh = local_mesh("local")
    ids = _start_mesh(mesh)
    viewer, victim = mesh.agents[0], mesh.agents[AGENTS_PER_REGION - 1]
    (tmp_path / "vibration.yaml").write_text(MANIFEST)
    done = _murmur(mesh, viewer, "deploy", str(tmp_path / "vibration.yaml"))
    assert done.returncode == 0, done.stderr

    async with Chromium(binary, tmp_path / "chromium", width=1280, height=800) as browser:
        opened = time.monotonic()
        await browser.goto(f"{viewer.url}/")
        every_alive = " && ".join(f"{_state_js(node_id)} === 'alive'" for node_id in ids.values())
        assert await browser.wait_for(every_alive, SHOWN_WITHIN_S), (
            f"page: {await browser.evaluate('document.getElementById(`regions`).innerText')}\n"
            f"console: {browser.console}"
        )
        print(f"\nthe page lists all {len(ids)} nodes alive {time.monotonic() - opened:.2f} s after opening")
        assert await browser.evaluate("document.querySelectorAll('tr.node').length") == len(ids)
        placed = await browser.wait_for(
            "document.getElementById('deployments').textContent.includes('vibration') && "
            "document.querySelector('tr[data-deployment=\"vibration\"] td.ready')"
            ".textContent.endsWith('/ 4')",
            PLACED_WITHIN_S,
        )
        assert placed, await browser.evaluate("document.getElementById('deployments').innerText")

        mesh.kill(victim)
        killed = time.monotonic()
        victim_id = ids[victim.name]
        assert await browser.wait_for(
            f"['suspect', 'dead'].includes({_state_js(victim_id)})", DETECT_WITHIN_S, 0.1
        ), await browser.evaluate("document.getElementById('regions').innerText")
        print(
            f"the page shows {victim.name} {await browser.evaluate(_state_js(victim_id))} "
            f"{time.monotonic() - killed:.2f} s after kill -9"
        )
        assert await browser.wait_for(f"{_state_js(victim_id)} === 'dead'", DETECT_WITHIN_S)
        assert await browser.wait_for(
            "[...document.querySelectorAll('#events li')].some(li => "
            f"li.querySelector('.kind').textContent === 'member_dead' && li.title.includes('{victim_id}'))",
            DETECT_WITHIN_S,
        ), await browser.evaluate("document.getElementById('events').innerText")
        print(
            f"the page shows {victim.name} dead, and its event feed the death: "
            f"{time.monotonic() - killed:.2f} s after kill -9"
        )
        # The other nodes stay alive on the page.
        for name, node_id in ids.items():
            if name != victim.name:
                assert await browser.evaluate(_state_js(node_id)) == "alive", name
        assert browser.console == [], browser.console

        # Let the lost replica's replacement show, ready (not asserted: placement and the model
        # host have their own tests), then take the picture.
        chips = "document.querySelectorAll('tr[data-deployment=\"vibration\"] .chip')"
        await browser.wait_for(
            f"{chips}.length === 4 && ![...{chips}].some(c => c.title.includes('{victim_id}'))"
            " && document.querySelector('tr[data-deployment=\"vibration\"] td.ready').textContent"
            ".startsWith('4 /')",
            READY_WITHIN_S,
        )
        shot = await browser.screenshot()
    assert shot.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(shot) < SCREENSHOT_MAX_BYTES, f"screenshot of {len(shot)} bytes"
    (tmp_path / "dashboard.png").write_bytes(shot)
    print(f"screenshot: {tmp_path / 'dashboard.png'} ({len(shot)} bytes)")
    if os.environ.get("MURMUR_DOCS_SCREENSHOT") == "1":
        DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        DOCS_IMAGE.write_bytes(shot)
        print(f"written to {DOCS_IMAGE}")
