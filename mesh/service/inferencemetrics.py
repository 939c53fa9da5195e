"""Inference requests as Prometheus sees them: counts, latency histograms, queue depths.

`InferenceStats.record` is called once per `POST /v2/models/{name}/infer` answered by
this node (mesh/service/v2api.py's middleware), with the route the request took:

- `local`: served by this node's own replica (through the model's queue);
- `forwarded`: sent to a peer's replica and its answer relayed (a retry on another
  replica is still one request);
- `refused`: answered here without running the model anywhere (unknown model, a body
  over the limit, a wrong token, no ready replica).

Label values never come from a client: `model` is the model's name only when this node
knows the model (it serves it or its region's placement lists it), at most
MODELS_TRACKED_MAX names, the rest `other`; a name the node does not know is `unknown`.
`code` is the HTTP status from a fixed list (anything else, e.g. a peer's odd status,
is `other`); 499 counts a request whose client closed its connection before the answer.
The hot path adds to plain dicts; the families are built at scrape time.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

ROUTES = ("local", "forwarded", "refused")
CODES = ("200", "400", "401", "404", "413", "429", "499", "500", "502", "503", "504")  # 499: the client left
# Upper bounds of the latency buckets, seconds: from a fast local model (~0.2 ms) to a
# forwarded request that waited for a queue (FORWARD_TIMEOUT_S is 30 s).
LATENCY_BUCKETS_S = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
MODELS_TRACKED_MAX = 64  # distinct model label values; a fleet serving more folds the rest into "other"


@dataclass
class _Latency:
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    sum_s: float = 0.0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.sum_s += seconds


class InferenceStats:
    """This node's inference requests by (model, route, code), and their latency by (model, route)."""

    def __init__(self, models_max: int = MODELS_TRACKED_MAX) -> None:
        self._models_max = models_max
        self._requests: dict[tuple[str, str, str], int] = {}
        self._latency: dict[tuple[str, str], _Latency] = {}
        self._models: set[str] = set()

    def model_label(self, name: str, known: bool) -> str:
        """The `model` label for a request naming `name` (known: this node knows the model)."""
        if not known:
            return "unknown"
        if name in self._models:
            return name
        if len(self._models) >= self._models_max:
            return "other"
        self._models.add(name)
        return name

    def record(self, model: str, route: str, status: int, seconds: float) -> None:
        """One answered request; `model` is a label from `model_label`."""
        code = str(status) if str(status) in CODES else "other"
        route = route if route in ROUTES else "refused"
        key = (model, route, code)
        self._requests[key] = self._requests.get(key, 0) + 1
        latency = self._latency.get((model, route))
        if latency is None:
            latency = self._latency[(model, route)] = _Latency()
        latency.observe(max(0.0, seconds))

    def families(self, queue_depths: Mapping[str, int]) -> list[Metric]:
        """The metric families now (`queue_depths`: model -> requests waiting in its queue)."""
        requests = CounterMetricFamily(
            "murmur_inference_requests",
            "Inference requests this node answered, by model, route (local, forwarded, refused) and "
            "HTTP status",
            labels=["model", "route", "code"],
        )
        for (model, route, code), count in sorted(self._requests.items()):
            requests.add_metric([model, route, code], count)
        latency = HistogramMetricFamily(
            "murmur_inference_request_duration_seconds",
            "Time from a request's arrival to its answer, by model and route",
            labels=["model", "route"],
        )
        for (model, route), seen in sorted(self._latency.items()):
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip((*LATENCY_BUCKETS_S, float("inf")), seen.buckets, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            latency.add_metric([model, route], buckets, seen.sum_s)
        depth = GaugeMetricFamily(
            "murmur_inference_queue_depth",
            "Requests waiting in the queue of each model this node serves",
            labels=["model"],
        )
        for model, waiting in sorted(queue_depths.items()):
            depth.add_metric([self.model_label(model, known=True)], waiting)
        return [requests, latency, depth]


def inference_source(
    stats: InferenceStats, queue_depths: Callable[[], Mapping[str, int]]
) -> Callable[[], list[Metric]]:
    """A NodeCollector source (mesh/service/metrics.py) of the inference families."""
    return lambda: stats.families(queue_depths())
