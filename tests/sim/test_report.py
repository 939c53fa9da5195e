"""Nearest-rank percentiles and the report's shape."""

from __future__ import annotations

import math

from sim.report import percentile, stats, summary, to_json


def test_nearest_rank_percentiles() -> None:
    samples = [float(x) for x in range(1, 101)]  # 1..100
    assert percentile(samples, 50) == 50.0
    assert percentile(samples, 99) == 99.0
    assert percentile(samples, 100) == 100.0
    assert percentile([7.0], 50) == 7.0
    # Nearest rank never interpolates: rank ceil(p/100 * n).
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 51) == 3.0


def test_stats_are_null_without_samples_and_for_never() -> None:
    assert stats([]) == {"p50": None, "p99": None, "max": None}
    assert stats([3.0, 1.0, 2.0]) == {"p50": 2.0, "p99": 3.0, "max": 3.0}
    # An infinite sample (never happened) makes the ranks it reaches null.
    assert stats([1.0] * 99 + [math.inf]) == {"p50": 1.0, "p99": 1.0, "max": None}
    assert stats([1.0, math.inf]) == {"p50": 1.0, "p99": None, "max": None}


def test_json_and_summary_of_a_minimal_report() -> None:
    report = {
        "seed": 1,
        "nodes": 3,
        "regions": 1,
        "scenario": "steady",
        "profile": "lan",
        "sim_s": 20.0,
        "wall_s": 0.5,
        "peak_rss_bytes": 1 << 20,
        "detection": None,
        "false_dead": 0,
        "dissemination": None,
        "traffic": None,
        "partition": None,
        "invariants": {"checked": ["a"], "violations": []},
    }
    assert to_json(report).startswith('{"seed": 1, "nodes": 3')
    text = summary(report)
    assert "steady" in text and "invariants hold: a" in text
