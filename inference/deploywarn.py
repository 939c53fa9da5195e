"""What a deployment asks for that no live node offers: the warnings `murmur deploy` prints.

A manifest may name a region no node has joined yet, or an accelerator or label no
node of its regions offers: that is accepted (the device may be on its way), but
the operator should hear it at once, not discover later that nothing runs.
Pure: the node's API gathers what it knows (regions with live nodes, and the
inventories it holds, which are those of its own region) and asks `deploy_warnings`.
Regions whose inventories are not given are not judged on accelerator or labels.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from inference.manifest import Deployment
from inference.resources import provides_accelerator

# onnxruntime names its execution providers `CUDAExecutionProvider`; a manifest says `cuda`.
PROVIDER_SUFFIX = "ExecutionProvider"
SHOWN_MAX = 8  # regions or accelerators listed in one warning, so it stays one line


@dataclass(frozen=True, slots=True)
class Offer:
    """What one live node offers, from its inventory record."""

    accelerators: tuple[str, ...]
    labels: tuple[tuple[str, str], ...]


def accelerator_name(provider: str) -> str:
    """`CUDAExecutionProvider` -> `cuda`: the name a manifest's `requirements.accelerator` uses."""
    return provider.removesuffix(PROVIDER_SUFFIX).lower()


def offers(offer: Offer, accelerator: str | None, labels: Sequence[tuple[str, str]]) -> bool:
    """True if the node offers `accelerator` (None: any; placement's rule) and every label."""
    if accelerator is not None and not provides_accelerator(offer.accelerators, accelerator):
        return False
    held = dict(offer.labels)
    return all(held.get(key) == value for key, value in labels)


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(names[:SHOWN_MAX])
    more = len(names) - SHOWN_MAX
    return (shown + (f" and {more} more" if more > 0 else "")) or "none"


def target_regions(deployment: Deployment, live_regions: Sequence[str]) -> list[str]:
    """The regions the manifest asks replicas of: named ones (live or not), else the live ones it selects."""
    replicas = deployment.replicas
    if replicas.by_region:
        return [region for region, count in replicas.by_region if count > 0]
    return [r for r in live_regions if replicas.for_region(r) > 0]


def deploy_warnings(
    deployment: Deployment, live_regions: Sequence[str], offers_by_region: Mapping[str, Sequence[Offer]]
) -> list[str]:
    """Warnings, in words, about what `deployment` asks that no live node offers.

    `live_regions`: the regions with at least one live node, as the asking node knows them.
    `offers_by_region`: the live nodes' offers of the regions whose inventories are known.
    """
    live = sorted(set(live_regions))
    warnings: list[str] = []
    replicas = deployment.replicas
    if replicas.by_region:
        for region, count in replicas.by_region:
            if count > 0 and region not in live:
                warnings.append(
                    f"replicas.{region}: no live node is in region {region!r} (regions with live nodes: "
                    f"{_listed(live)}); its {count} replica(s) stay unplaced until a node of that region "
                    "joins"
                )
    elif replicas.regions:
        for pattern in replicas.regions:
            if not any(fnmatch.fnmatchcase(region, pattern) for region in live):
                warnings.append(
                    f"replicas.regions: {pattern!r} matches no region with live nodes "
                    f"({_listed(live)}); nothing runs there until a node of a matching region joins"
                )
    requirements = deployment.requirements
    if requirements.accelerator is None and not requirements.labels:
        return warnings
    for region in target_regions(deployment, live):
        nodes = offers_by_region.get(region)
        if not nodes:
            continue  # not known here (another region's inventory), or no node: said above
        before = len(warnings)
        if requirements.accelerator is not None and not any(
            offers(n, requirements.accelerator, ()) for n in nodes
        ):
            held = sorted({accelerator_name(a) for n in nodes for a in n.accelerators})
            warnings.append(
                f"requirements.accelerator: no live node of region {region!r} offers "
                f"{requirements.accelerator!r} (its {len(nodes)} node(s) offer: {_listed(held)})"
            )
        for key, value in requirements.labels:
            if not any(dict(n.labels).get(key) == value for n in nodes):
                warnings.append(
                    f"requirements.labels.{key}: no live node of region {region!r} has the label "
                    f"{key}={value} (murmur agent --label {key}={value} sets it)"
                )
        if len(warnings) == before and not any(
            offers(n, requirements.accelerator, requirements.labels) for n in nodes
        ):
            warnings.append(
                f"requirements: each is offered in region {region!r}, but no single live node there "
                "offers the accelerator and every label together"
            )
    return warnings
