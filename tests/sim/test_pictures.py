"""`murmur sim --report DIR`: the run's time series (sim/timeline.py), its charts and its page."""

from __future__ import annotations

import functools
import html
import itertools
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.catalog import SCENARIOS
from sim.cli import main
from sim.picturepage import page
from sim.pictures import DRAWINGS, Chart, draw
from sim.report import stats
from sim.run import run_simulation

SMALL = {"nodes": 12, "regions": 2, "scenario": "crash", "seed": 3, "duration_s": 20.0}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PNG_MAX_BYTES = 200_000


def _run(**overrides: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    series: dict[str, Any] = {}
    report = run_simulation(**{**SMALL, **overrides}, series_out=series)
    return report, series


@pytest.fixture(scope="module")
def crash_run() -> tuple[dict[str, Any], dict[str, Any]]:
    return _run()


def test_the_series_exist_and_agree_with_the_report(crash_run: tuple[dict[str, Any], dict[str, Any]]) -> None:
    report, series = crash_run
    end_s = SMALL["duration_s"]
    assert series["end_s"] == end_s
    assert series["regions"] == ["r0", "r1"]
    # Spread: the injected broadcast, each node at most once, never before it was sent.
    (spread,) = series["spread"]
    assert spread["label"] == "broadcast"
    delays = spread["delays_s"]
    assert delays == sorted(delays) and all(0.0 <= d <= end_s for d in delays)
    missing = report["dissemination"]["missing"]
    assert len(delays) == spread["nodes"] - missing
    assert stats(delays + [math.inf] * missing) == report["dissemination"]["s_all"]
    # Detection: one entry per crash, the same figures as the report's.
    det = series["detection"]
    assert len(det["first_suspect_s"]) == len(det["all_dead_s"]) == report["detection"]["crashed"]
    assert max(det["all_dead_s"]) == report["detection"]["all_dead_s"]["max"]
    assert all(f <= d for f, d in zip(det["first_suspect_s"], det["all_dead_s"], strict=True))
    # Traffic: one sample per second, the band ordered.
    tr = series["traffic"]
    assert tr["t_s"] == [float(t) for t in range(1, int(end_s) + 1)]
    assert all(p50 <= p99 <= top for p50, p99, top in zip(tr["p50"], tr["p99"], tr["max"], strict=True))
    # Replicas: a row per region per sample, never more than desired; at the end, all that could
    # be placed (too few nodes meet some requirements once 3 of 12 crashed) are ready.
    rep = series["replicas"]
    assert len(rep["t_s"]) == len(rep["ready"]) == len(rep["on_the_way"])
    assert rep["desired"] == [6, 6]
    for ready, on_the_way in zip(rep["ready"], rep["on_the_way"], strict=True):
        assert len(ready) == 2 and all(r + w <= 6 for r, w in zip(ready, on_the_way, strict=True))
    assert max(sum(row) for row in rep["ready"]) == 12
    assert rep["on_the_way"][-1] == [0, 0]
    assert 12 - sum(rep["ready"][-1]) == report["placement"]["unplaced"]
    # Leaders: each region's segments cover the run without gaps; one leader per term.
    for segments in series["leaders"]["segments"]:
        assert segments[0][0] == 0.0 and segments[-1][1] == end_s
        assert all(a[1] == b[0] for a, b in itertools.pairwise(segments))
        assert any(leader for _, _, leader in segments)
    assert series["leaders"]["doubles"] == []
    assert [t for t, what in series["marks"] if what == "crash"] == [10.0]
    json.dumps(series, allow_nan=False)


def test_same_seed_same_series_and_the_report_is_unchanged(
    crash_run: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    report, series = crash_run
    again_report, again = _run()
    assert again == series
    plain = run_simulation(**SMALL)
    for r in (report, plain, again_report):
        del r["wall_s"], r["peak_rss_bytes"]
    # The timeline only reads: the run is the same with and without it, event count included.
    assert plain == report == again_report
    _, other = _run(seed=4)
    assert other != series


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_scenario_has_its_series(scenario: str) -> None:
    report, series = _run(nodes=8, regions=2, scenario=scenario, seed=1)
    json.dumps(series, allow_nan=False)
    assert len(series["detection"]["all_dead_s"]) == (report["detection"] or {"crashed": 0})["crashed"]
    assert len(series["traffic"]["t_s"]) == 20
    for segments in series["leaders"]["segments"]:
        assert segments[0][0] == 0.0 and segments[-1][1] == 20.0
        assert all(a[1] == b[0] and a[2] != b[2] for a, b in itertools.pairwise(segments))


def test_report_writes_every_chart_and_a_page_naming_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pictures" / "crash"
    status = main(
        [
            *("--nodes", "12", "--regions", "2", "--scenario", "crash", "--seed", "3", "--duration", "20"),
            *("--json", "--report", str(out)),
        ]
    )
    captured = capsys.readouterr()
    report = json.loads(captured.out)  # with --json, stdout stays one JSON object
    assert status == (1 if report["invariants"]["violations"] else 0)
    assert str(out / "index.html") in captured.err
    page = (out / "index.html").read_text()
    for name, title, _ in DRAWINGS:
        png = (out / f"{name}.png").read_bytes()
        assert png.startswith(PNG_MAGIC) and len(png) < PNG_MAX_BYTES
        assert f"<h2>{title}</h2>" in page and f'href="{name}.png"' in page
    assert page.count("data:image/png;base64,") == len(DRAWINGS)
    # Self-contained: nothing fetched from elsewhere.
    assert "http://" not in page and "https://" not in page and "<script" not in page
    for shown in ("crash", "seed", "--seed 3", "--report"):
        assert shown in page
    assert json.loads((out / "series.json").read_text())["end_s"] == 20.0


def test_charts_with_nothing_to_show_still_draw(tmp_path: Path) -> None:
    """A run too short or too quiet for a chart (no broadcast, no crash) says so in the picture."""
    series = {
        "end_s": 1.0,
        "regions": ["r0"],
        "spread": [],
        "detection": {"first_suspect_s": [], "all_dead_s": []},
        "traffic": {"t_s": [], "p50": [], "p99": [], "max": []},
        "replicas": {"t_s": [], "ready": [], "on_the_way": [], "desired": [0], "deployments": []},
        "leaders": {"segments": [[[0.0, 1.0, None]]], "doubles": [[0.5, 0, 3]]},
        "marks": [],
    }
    charts = draw(series, tmp_path)
    assert [c.name for c in charts] == [name for name, _, _ in DRAWINGS]
    assert charts[0].caption.startswith("No broadcast")
    assert charts[1].caption.startswith("No node crashed")
    assert "must never happen: 1" in charts[4].caption
    assert all((tmp_path / f"{c.name}.png").stat().st_size > 0 for c in charts)


def test_without_matplotlib_report_exits_2_with_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    out = tmp_path / "never"
    status = main(["--nodes", "12", "--duration", "20", "--report", str(out)])
    captured = capsys.readouterr()
    assert status == 2
    assert "pip install -e '.[report]'" in captured.err
    assert captured.out == ""  # refused before running, not after
    assert not out.exists()


def test_report_refuses_a_swarm_and_a_folder_it_cannot_make(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--swarm", "1-2", "--report", str(tmp_path)]) == 2
    assert "--scenario swarm --seed S --report DIR" in capsys.readouterr().err
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    assert main(["--nodes", "12", "--duration", "20", "--report", str(a_file / "sub")]) == 2
    captured = capsys.readouterr()
    assert "cannot make that folder" in captured.err and captured.out == ""


@functools.cache
def _steady_report() -> dict[str, Any]:
    return run_simulation(nodes=8, regions=2, scenario="steady", seed=1, duration_s=20.0)


@settings(deadline=None)  # the first example runs the simulation (cached after)
@given(command=st.text(max_size=200), scenario=st.text(max_size=40))
def test_the_page_escapes_whatever_it_shows(command: str, scenario: str) -> None:
    """The reproduce command carries the user's --report path: it must not become markup."""
    report = {**_steady_report(), "scenario": scenario}
    charts = [Chart("spread", "Broadcast spread", "<b>caption</b>")]
    text = page(report, charts, {"spread": PNG_MAGIC}, "<script>alert(1)</script>" + command)
    assert "<script" not in text and "<b>" not in text
    assert html.escape("<script>alert(1)</script>" + command) in text
