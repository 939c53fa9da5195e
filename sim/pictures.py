"""The charts of `murmur sim --report`: one PNG per picture of a run, drawn with matplotlib.

Each chart is a function of the series sim/timeline.py collects (and nothing
else), so the same seed draws the same charts. matplotlib is an optional extra
(`pip install -e '.[report]'`): it is imported only here, only when a chart is
drawn, through its object API (no pyplot: no global figure state, no GUI backend).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes

INSTALL_HINT = "pip install -e '.[report]'  (or: pip install matplotlib)"
WIDTH_IN = 8.0
HEIGHT_IN = 3.6
DPI = 100
# The leaders chart grows a row per region, up to this height.
LEADER_ROW_IN = 0.28
LEADERS_HEIGHT_MAX_IN = 24.0
SPREAD_LINES_MAX = 8
LEADER_SHADES = ("#2e7d32", "#66bb6a")
NO_LEADER = "#d32f2f"
NO_NODES = "#bdbdbd"
MARK_COLOR = "#757575"


@dataclass(frozen=True, slots=True)
class Chart:
    """One picture: its file name, its title and the one line under it."""

    name: str
    title: str
    caption: str


def matplotlib_missing() -> str | None:
    """None when matplotlib can be imported; else what to tell the user."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return f"--report draws its charts with matplotlib, which is not installed: {INSTALL_HINT}"
    return None


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color=MARK_COLOR)
    ax.set_xticks([])
    ax.set_yticks([])


def _marks(ax: Axes, series: dict[str, Any]) -> None:
    """Faint vertical lines at the run's faults, named once each in the legend."""
    named: set[str] = set()
    for t_s, what in series["marks"]:
        ax.axvline(t_s, color=MARK_COLOR, linestyle=":", linewidth=1, label=None if what in named else what)
        named.add(what)


def _spread(ax: Axes, series: dict[str, Any]) -> str:
    spreads = series["spread"][:SPREAD_LINES_MAX]
    if not spreads:
        _empty(ax, "no broadcast or record was sent in this scenario")
        return "No broadcast or signed record was sent in this scenario."
    never: list[str] = []
    for s in spreads:
        nodes = max(s["nodes"], 1)
        delays = s["delays_s"]
        xs = [0.0, *delays]
        ys = [0.0, *((k + 1) / nodes for k in range(len(delays)))]
        missing = s["nodes"] - len(delays)
        label = f"{s['label']} sent at {s['at_s']:g} s" + (f" ({missing} never had it)" if missing else "")
        ax.step(xs, ys, where="post", label=label)
        if missing:
            never.append(f"{s['label']}: {missing}")
    ax.set_ylim(0.0, 1.02)
    ax.set_xlim(left=0.0)
    ax.set_xlabel("seconds since it was sent")
    ax.set_ylabel("fraction of nodes that have it")
    ax.legend(loc="lower right", fontsize="small")
    gaps = f"never had it: {', '.join(never)}" if never else "every node had each one"
    return (
        "Fraction of the nodes up throughout that have each broadcast, "
        f"by seconds since it was sent ({gaps})."
    )


def _detection(ax: Axes, series: dict[str, Any]) -> str:
    det = series["detection"]
    crashed = len(det["first_suspect_s"])
    if not crashed:
        _empty(ax, "no node crashed in this scenario")
        return "No node crashed in this scenario."
    undetected = 0
    for key, label in (("first_suspect_s", "first suspicion"), ("all_dead_s", "dead at every observer")):
        done = sorted(t for t in det[key] if t is not None)
        if key == "all_dead_s":
            undetected = crashed - len(done)
        xs = [0.0, *done]
        ys = [0.0, *((k + 1) / crashed for k in range(len(done)))]
        ax.step(xs, ys, where="post", label=label, marker="." if crashed <= 50 else None)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlim(left=0.0)
    ax.set_xlabel("seconds since the crash")
    ax.set_ylabel("fraction of crashed nodes")
    ax.legend(loc="lower right", fontsize="small")
    return (
        f"For the {_count(crashed, 'crashed node')}: how soon someone suspected it, and how soon every "
        f"live member of its pools held it dead (never: {undetected})."
    )


def _traffic(ax: Axes, series: dict[str, Any]) -> str:
    tr = series["traffic"]
    if not tr["t_s"]:
        _empty(ax, "the run was too short to sample traffic")
        return "The run was too short to sample traffic."
    ax.fill_between(tr["t_s"], tr["p50"], tr["p99"], step="pre", alpha=0.3, label="median to p99")
    ax.step(tr["t_s"], tr["p50"], where="pre", label="median node")
    ax.step(tr["t_s"], tr["max"], where="pre", linestyle="--", linewidth=0.8, label="busiest node")
    _marks(ax, series)
    ax.set_ylim(bottom=0.0)
    ax.set_xlim(0.0, series["end_s"])
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("bytes/s sent per node")
    ax.legend(loc="upper right", fontsize="small")
    return (
        "Bytes per second each node sent (envelope included), per second of the run: the median node, "
        "the band up to the 99th percentile, and the busiest node."
    )


def _replicas(ax: Axes, series: dict[str, Any]) -> str:
    rep = series["replicas"]
    t_s = rep["t_s"]
    desired = sum(rep["desired"])
    if not t_s or not desired:
        _empty(ax, "no replicas were desired in this run")
        return "No replicas were desired in this run."
    ready = [sum(row) for row in rep["ready"]]
    placed = [r + sum(row) for r, row in zip(ready, rep["on_the_way"], strict=True)]
    ax.fill_between(t_s, ready, placed, step="post", alpha=0.3, color="#ffa726", label="assigned or loading")
    ax.step(t_s, ready, where="post", color="#2e7d32", label="ready")
    ax.axhline(desired, color="black", linestyle="--", linewidth=1, label="desired")
    _marks(ax, series)
    ax.set_ylim(0, max(desired, *placed) * 1.1)
    ax.set_xlim(0.0, series["end_s"])
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("replicas on live nodes")
    ax.legend(loc="lower right", fontsize="small")
    return (
        f"Replicas of the deployment set ({', '.join(rep['deployments'])}) ready on live nodes, and those "
        f"on their way, in all {_count(len(rep['desired']), 'region')}, against the {desired} desired."
    )


def _leaders(ax: Axes, series: dict[str, Any]) -> str:
    lead = series["leaders"]
    regions = series["regions"]
    without = 0.0
    for row, segments in enumerate(lead["segments"]):
        shade = 0
        for start_s, end_s, leader in segments:
            if leader is None:
                color = NO_NODES
            elif leader == "":
                color = NO_LEADER
                without = max(without, end_s - start_s)
            else:
                # A new leader switches the shade, so a change of leader shows as a change of colour.
                shade = 1 - shade
                color = LEADER_SHADES[shade]
            ax.broken_barh([(start_s, max(end_s - start_s, 1e-3))], (row - 0.4, 0.8), color=color)
    for t_s, row, _term in lead["doubles"]:
        ax.plot([t_s], [row], marker="X", color="black", markersize=9, linestyle="none")
    _marks(ax, series)
    ax.set_yticks(range(len(regions)), regions)
    ax.set_ylim(len(regions) - 0.5, -0.5)
    ax.set_xlim(0.0, series["end_s"])
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("region")
    from matplotlib.artist import Artist
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Artist] = [
        Patch(color=LEADER_SHADES[0], label="a leader (new leader:\nnew shade)"),
        Patch(color=NO_LEADER, label="no leader"),
        Patch(color=NO_NODES, label="no live node"),
    ]
    if lead["doubles"]:
        handles.append(Line2D([], [], marker="X", color="black", linestyle="none", label="two in one term"))
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    return (
        "Which regions have a leader holding a lease, over the run (red: none; an X: a second leader in "
        f"one region-term, which must never happen: {len(lead['doubles'])}); the longest time without "
        f"a leader was {without:.1f} s (founding included)."
    )


DRAWINGS: tuple[tuple[str, str, Callable[[Axes, dict[str, Any]], str]], ...] = (
    ("spread", "Broadcast spread", _spread),
    ("detection", "Detection times (CDF)", _detection),
    ("traffic", "Traffic per node", _traffic),
    ("replicas", "Replicas ready", _replicas),
    ("leaders", "Leaders per region", _leaders),
)


def draw(series: dict[str, Any], directory: Path) -> list[Chart]:
    """Draw every chart of the series as directory/NAME.png; returns them in order."""
    from matplotlib.figure import Figure

    charts: list[Chart] = []
    for name, title, drawing in DRAWINGS:
        height = HEIGHT_IN
        if name == "leaders":
            height = min(LEADERS_HEIGHT_MAX_IN, 1.6 + LEADER_ROW_IN * len(series["regions"]))
        fig = Figure(figsize=(WIDTH_IN, height), dpi=DPI, layout="constrained")
        ax = fig.add_subplot()
        caption = drawing(ax, series)
        ax.set_title(title)
        fig.savefig(directory / f"{name}.png", metadata={"Software": None})
        charts.append(Chart(name, title, caption))
    return charts
