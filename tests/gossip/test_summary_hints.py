"""A redirect's gateway hint and the summaries published after it (issue 8, finding 9, keyed).

In a keyed cold start a redirect in the first second named a region's lone node
as its gateway, and that hint hid every later summary of the region for good:
the fleet-join rule never saw the region's real gateways (a fleet_liveness
violation at 200 nodes, `--scenario cold-start`, 4 seeds of 5).
"""

from __future__ import annotations

from gossip import codec
from gossip.summaries import SummaryTable


def test_a_newer_summary_supersedes_a_redirects_gateway_hint() -> None:
    table = SummaryTable("r0", lambda _key: None)
    # A cold start: a redirect from r1's lone node, before r1 published anything.
    table.hint(codec.Summary("r1", 0, "x", 1, (("x", "x:1"),), ()))
    assert table.gateways_of("r1") == (("x", "x:1"),)
    table.store(codec.Summary("r1", 3, "g1", 40, (("g1", "g1:1"), ("g2", "g2:1")), ()))
    assert table.gateways_of("r1") == (("g1", "g1:1"), ("g2", "g2:1"))
    # A redirect fresh at the summary's own version still knows better.
    table.hint(codec.Summary("r1", 3, "g1", 40, (("g3", "g3:1"),), ()))
    assert table.gateways_of("r1") == (("g3", "g3:1"),)
