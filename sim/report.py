"""The report: nearest-rank percentiles, the JSON object, and a short human summary."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

# Times in the report are rounded to 0.1 ms; rates to 0.01.
TIME_DIGITS = 4
RATE_DIGITS = 2


def percentile(sorted_samples: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty sequence (p in (0, 100])."""
    rank = max(1, math.ceil(p / 100.0 * len(sorted_samples)))
    return sorted_samples[rank - 1]


def _finite(x: float, digits: int) -> float | None:
    return round(x, digits) if math.isfinite(x) else None


def stats(samples: Sequence[float], digits: int = TIME_DIGITS) -> dict[str, float | None]:
    """{p50, p99, max} by nearest rank; null when there are no samples or the rank is infinite.

    An infinite sample stands for "never happened" (a node the broadcast never
    reached, a crash never detected by all): it sorts last, so the percentiles
    it reaches are null rather than a flattering finite number.
    """
    if not samples:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(samples)
    return {
        "p50": _finite(percentile(ordered, 50), digits),
        "p99": _finite(percentile(ordered, 99), digits),
        "max": _finite(ordered[-1], digits),
    }


def to_json(report: dict[str, Any]) -> str:
    """The report as one line of JSON (keys in report order)."""
    return json.dumps(report, separators=(", ", ": "), allow_nan=False)


def _fmt(s: dict[str, Any] | None, unit: str = "s") -> str:
    if s is None:
        return "n/a"

    def one(v: Any) -> str:
        return "-" if v is None else f"{v:g}{unit}"

    return f"p50 {one(s['p50'])}  p99 {one(s['p99'])}  max {one(s['max'])}"


def _spread(label: str, spread: dict[str, Any]) -> list[str]:
    """Two lines for a broadcast's or a record's spread: all nodes (seconds and rounds), origin region."""
    return [
        f"  {label}: all nodes {_fmt(spread['s_all'])}  ({_fmt(spread['rounds_all'], ' rounds')})",
        f"    origin region {_fmt(spread['region_s_all'])}  (missing: {spread['missing']})",
    ]


def summary(report: dict[str, Any]) -> str:
    """A few lines for a human: what ran, what it showed, whether invariants held."""
    lines = [
        f"sim: {report['scenario']}  {report['nodes']} nodes in {report['regions']} regions, "
        f"profile {report['profile']}, seed {report['seed']}",
        f"  {report['sim_s']:g} simulated s in {report['wall_s']:.1f} wall s "
        f"({report['sim_s'] / max(report['wall_s'], 1e-9):.1f}x real time), "
        f"peak RSS {report['peak_rss_bytes'] / 2**20:.0f} MiB",
    ]
    warm = report.get("warmup")
    if warm is not None:
        at = "never" if warm["converged_s"] is None else f"{warm['converged_s']}s"
        lines.append(f"  warm-up: converged at {at}, bytes/node/s {_fmt(warm['bytes_per_node_s'], '')}")
    det = report["detection"]
    if det is not None:
        lines.append(f"  detection of {det['crashed']} crashed: first suspect {_fmt(det['first_suspect_s'])}")
        lines.append(f"    all dead {_fmt(det['all_dead_s'])}  (undetected: {det['undetected']})")
    lines.append(f"  false dead: {report['false_dead']}")
    dis = report["dissemination"]
    if dis is not None:
        lines.extend(_spread("broadcast", dis))
    des = report.get("desired")
    if des is not None:
        lines.extend(_spread(f"desired v{des['version']}", des))
        for up in des["updates"]:
            lines.append(f"    v{up['version']}: all nodes {_fmt(up['s_all'])}  (missing: {up['missing']})")
        lines.append(f"    final version everywhere: {des['final_version_everywhere']}")
    tr = report["traffic"]
    if tr is not None:
        lines.append(f"  traffic bytes/node/s {_fmt(tr['bytes_per_node_s'], '')}")
        lines.append(f"    msgs/node/s {_fmt(tr['msgs_per_node_s'], '')}")
    stock = report.get("inventory")
    if stock is not None:
        lines.append(
            f"  inventory: {stock['published']} published, held fraction {stock['held_fraction']} "
            f"(missing: {stock['missing']})"
        )
        fresh = stock.get("freshness")
        if fresh is not None:
            lines.append(f"    every region peer holds a version: {_fmt(fresh['all_peers_s'])}")
            lines.append(
                f"    changes only: {_fmt(fresh['changes_all_peers_s'])}  "
                f"(incomplete: {fresh['incomplete']}, late past {fresh['bound_s']:g}s: {fresh['late']})"
            )
    adm = report.get("admission")
    if adm is not None:
        lines.append(
            f"  admission: {adm['joiners']} invited joined, every region member lists them "
            f"{_fmt(adm['joined_all_s'])} (not joined: {adm['not_joined']})"
        )
        lines.append(
            f"    {adm['intruders']} intruders {adm['intruder_kinds']}: listed {adm['sightings']} times; "
            f"refusals {adm['refusals']}"
        )
        lines.append(
            f"    {adm['revoked']} revoked: expelled everywhere {_fmt(adm['expelled_all_s'])} "
            f"(not expelled: {adm['not_expelled']}, stopped: {adm['revoked_stopped']})"
        )
    cold = report.get("cold_start")
    if cold is not None:
        lines.append(
            f"  cold start: every region one pool {_fmt(cold['region_merged_s'])} "
            f"(unmerged: {cold['unmerged_regions']}, islands at the end: {cold['islands_at_end']})"
        )
    rot = report.get("key_rotation")
    if rot is not None and rot.get("rotated_at_s") is not None:
        lines.append(
            f"  key rotation at {rot['rotated_at_s']:g}s: {rot['members']} reachable members hold it "
            f"{_fmt(rot['hold_s'])} (last at {rot['last_member_at_s']}s; missing at the end: "
            f"{rot['missing_at_end']}); {rot['messages']} messages, {rot['bytes']} bytes"
        )
        away = rot.get("offline_region")
        if away is not None:
            lines.append(
                f"    offline region {away['region']} ({away['members']} members): after the heal "
                f"{_fmt(away['hold_after_heal_s'])}"
            )
    lead = report.get("leaders")
    if lead is not None:
        lines.append(
            f"  leaders: at most {lead['max_per_region_term']} per region term; after "
            f"{lead['crashed_leaders']} leader crashes a new one in {_fmt(lead['election_s'])} "
            f"(unfinished: {lead['elections_unfinished']}); longest without one "
            f"{lead['regions_without_leader_s_max']}s"
        )
    part = report["partition"]
    if part is not None:
        healed = "never" if part["heal_s"] is None else f"{part['heal_s']}s"
        regions = "never" if part["region_heal_s"] is None else f"{part['region_heal_s']}s"
        lines.append(f"  partition healed in {healed} (regions: {regions})")
        lines.append(
            f"    dead across the split: {part['dead_pairs']}, echoed after it: {part['echo_dead_pairs']}"
        )
    inv = report["invariants"]
    if inv["violations"]:
        lines.append(f"  INVARIANTS VIOLATED ({len(inv['violations'])}):")
        lines.extend(f"    {v}" for v in inv["violations"][:10])
    else:
        lines.append(f"  invariants hold: {', '.join(inv['checked'])}")
    return "\n".join(lines)
