"""The folder `murmur sim --report DIR` writes: the charts, their data, and one page showing them.

- NAME.png: one chart per picture (sim/pictures.py);
- series.json: the time series the charts are drawn from (sim/timeline.py);
- index.html: one self-contained page (the PNGs inlined, no script, no CDN) with
  the run's parameters, the command that reproduces it, each chart with one line
  saying what it shows, and the run's text summary.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from sim.pictures import Chart, draw
from sim.report import summary

PAGE = "index.html"
SERIES = "series.json"
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; }
body { color: #222; }
table { border-collapse: collapse; } td, th { text-align: left; padding: 0.15rem 1rem 0.15rem 0; }
code, pre { background: #f5f5f5; padding: 0.1rem 0.3rem; } pre { padding: 0.6rem; overflow-x: auto; }
figure { margin: 2rem 0; } img { max-width: 100%; } figcaption { color: #444; margin-top: 0.3rem; }
.bad { color: #b71c1c; font-weight: bold; } .good { color: #1b5e20; }
"""


def _parameters(report: dict[str, Any], command: str) -> list[tuple[str, str]]:
    violations = report["invariants"]["violation_count"]
    return [
        ("scenario", report["scenario"]),
        ("seed", str(report["seed"])),
        ("nodes", str(report["nodes"])),
        ("regions", str(report["regions"])),
        ("loss", f"{report['loss']:g}"),
        ("profile", report["profile"]),
        ("simulated", f"{report['sim_s']:g} s"),
        ("encrypted", "yes" if report["encrypt"] else "no"),
        ("invariants", f"{violations} violations" if violations else "all hold"),
        ("reproduce", command),
    ]


def page(report: dict[str, Any], charts: list[Chart], pngs: dict[str, bytes], command: str) -> str:
    """The HTML page: parameters, every chart inlined with its line, the summary."""
    e = html.escape
    title = f"murmur sim: {report['scenario']}, {report['nodes']} nodes, seed {report['seed']}"
    rows = []
    for key, value in _parameters(report, command):
        cell = f"<code>{e(value)}</code>" if key == "reproduce" else e(value)
        if key == "invariants":
            cell = f'<span class="{"good" if value == "all hold" else "bad"}">{cell}</span>'
        rows.append(f"<tr><th>{e(key)}</th><td>{cell}</td></tr>")
    figures = []
    for chart in charts:
        data = base64.b64encode(pngs[chart.name]).decode("ascii")
        figures.append(
            f'<figure id="{e(chart.name)}"><h2>{e(chart.title)}</h2>'
            f'<img src="data:image/png;base64,{data}" alt="{e(chart.title)}">'
            f'<figcaption>{e(chart.caption)} <a href="{e(chart.name)}.png">{e(chart.name)}.png</a>'
            "</figcaption></figure>"
        )
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{e(title)}</title><style>{STYLE}</style></head><body>",
            f"<h1>{e(title)}</h1>",
            f"<table>{''.join(rows)}</table>",
            *figures,
            f"<h2>Summary</h2><pre>{e(summary(report))}</pre>",
            f'<p>The data behind the charts: <a href="{SERIES}">{SERIES}</a>.</p>',
            "</body></html>",
            "",
        ]
    )


def write_report(directory: Path, series: dict[str, Any], report: dict[str, Any], command: str) -> Path:
    """Write the charts, series.json and index.html into directory (made if missing); returns the page."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / SERIES).write_text(json.dumps(series, separators=(",", ":"), allow_nan=False) + "\n")
    charts = draw(series, directory)
    pngs = {c.name: (directory / f"{c.name}.png").read_bytes() for c in charts}
    target = directory / PAGE
    target.write_text(page(report, charts, pngs, command), encoding="utf-8")
    return target
