"""The Open Inference Protocol (KServe v2 REST) on every node: health, metadata, inference.

- `GET /v2/health/live`, `GET /v2/health/ready`: 200 while the node's API serves.
- `GET /v2`: server metadata (name, version, extensions).
- `GET /v2/models/{name}[/versions/{v}]`: the model's inputs and outputs, here if this
  node serves it, else from a replica that does.
- `GET /v2/models/{name}[/versions/{v}]/ready`: 200 when a ready replica is reachable
  through this node, 503 otherwise.
- `POST /v2/models/{name}[/versions/{v}]/infer`: JSON tensors or the binary tensor data
  extension (inference/v2codec.py). Served here when this node holds a ready replica
  (through the model's priority queue, mesh/service/modellanes.py), else forwarded with
  the body unchanged to the best ready replica (inference/routing.py), marked with the
  `Murmur-Forwarded` header so it is never forwarded again; a failed forward is retried
  once on another replica. A full queue answers 429 with Retry-After.

Every error is the protocol's `{"error": "..."}`. With an inference token configured
(`murmur agent --inference-token-file`), every /v2 request but the two health checks needs
`Authorization: Bearer <token>`. docs/inference.md is the user's guide.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from inference.assignments import ReplicaState
from inference.placing import ReplicaView
from inference.requestqueue import PRIORITY_HEADER, Priority, parse_priority
from inference.routing import ATTEMPTS_MAX, Candidate, Forward, PeerLoad, Refuse, choose
from inference.v2types import DEFAULT_LIMITS, HEADER_LENGTH_HEADER, CodecLimits, ModelMetadata, error_body
from mesh.service.criticalfirst import CriticalFirst
from mesh.service.inferencemetrics import InferenceStats
from mesh.service.modellanes import InferFailed, ModelHost, ModelLanes, QueueFull
from mesh.service.relay import PeerRelay, RelayError
from mesh.service.remotereplicas import RemoteReplicas

HOP_HEADER = "Murmur-Forwarded"  # the id of the node that forwarded the request
FORWARD_TIMEOUT_S = 30.0  # one forwarded request, the model's run included
SERVER_NAME = "murmuration"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ("binary_tensor_data", "murmur_priority")
CLIENT_GONE_STATUS = 499  # counted for a request whose client left before its answer (as nginx logs it)
FORWARDED_HEADERS = ("Content-Type", HEADER_LENGTH_HEADER, PRIORITY_HEADER, "Authorization")  # of a request
_RELAYED_HEADERS = (HEADER_LENGTH_HEADER, "Retry-After")  # of a peer's answer, besides its type
_RETRYABLE = (429, 500, 502, 503, 504)  # a forward that failed this way is tried on another replica


class MemberInfo(Protocol):
    """A member as the router needs it (gossip.node.MemberView)."""

    @property
    def region(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def api_addr(self) -> str: ...


@dataclass
class InferenceFront:
    """What the /v2 handlers work with: this node, its model host and its view of replicas."""

    node_id: str
    region: str
    host: ModelHost
    replicas: Callable[[], Sequence[ReplicaView]]  # the region's placement (PlacementCore.replicas)
    member: Callable[[str], MemberInfo | None]
    lanes: ModelLanes
    token: str | None = None
    limits: CodecLimits = DEFAULT_LIMITS
    load: PeerLoad = field(default_factory=PeerLoad)
    stats: InferenceStats = field(default_factory=InferenceStats)  # GET /metrics (launch.py)
    remote: RemoteReplicas | None = None  # other regions' replicas, when this region has none
    critical: CriticalFirst = field(default_factory=CriticalFirst)  # the others give way to these
    # Set while the API runs (add_routes' cleanup context): forwarded requests go through the
    # relay (mesh/service/relay.py); the client asks other regions for their placements.
    relay: PeerRelay | None = None
    client: aiohttp.ClientSession | None = None

    def candidates(self, name: str) -> tuple[list[Candidate], bool]:
        """The replicas of `name` the router may pick, and whether the model is known at all."""
        out: list[Candidate] = []
        known = False
        if self.host.metadata(name) is not None:
            out.append(Candidate(self.node_id, self.region, ReplicaState.READY, "local"))
            known = True
        for view in self.replicas():
            if view.deployment != name or view.node_id == self.node_id:
                continue
            known = True
            member = self.member(view.node_id)
            if member is None or str(member.state) != "alive":
                continue
            load = self.load.of(view.node_id)
            out.append(
                Candidate(
                    view.node_id, member.region, view.state, member.api_addr, load.in_flight, load.rtt_s
                )
            )
        return out, known

    def count(self, name: str, route: str, status: int, started_s: float) -> None:
        """One answered inference request (murmur_inference_*: inferencemetrics.py); `started_s`
        from time.monotonic()."""
        known = route != "refused" or self.candidates(name)[1]
        self.stats.record(self.stats.model_label(name, known), route, status, time.monotonic() - started_s)


@dataclass(frozen=True, slots=True)
class Answer:
    """An inference answer before it is written: by aiohttp (`response`) or by the lean
    connection (mesh/service/v2wire.py)."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def error(cls, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Answer:
        """The protocol's error answer."""
        return cls(status, error_body(message), headers=headers)

    def response(self) -> web.Response:
        return web.Response(
            status=self.status, body=self.body, content_type=self.content_type, headers=dict(self.headers)
        )


FRONT = web.AppKey("inference_front", InferenceFront)
ROUTE = web.RequestKey("inference_route", str)  # local or forwarded, once the request takes one


def v2_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """The protocol's error response."""
    return Answer.error(status, message, tuple((headers or {}).items())).response()


def token_refusal(front: InferenceFront, path: str, authorization: str | None) -> Answer | None:
    """The 401 for a /v2 request without this cluster's inference token, when one is set."""
    if front.token is None or not path.startswith("/v2") or path in ("/v2/health/live", "/v2/health/ready"):
        return None
    if hmac.compare_digest((authorization or "").encode(), f"Bearer {front.token}".encode()):
        return None
    return Answer.error(
        401,
        "this cluster's inference API needs Authorization: Bearer <inference token>; ask the operator for it",
        (("WWW-Authenticate", "Bearer"),),
    )


@web.middleware
async def _token_check(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
    refusal = token_refusal(request.app[FRONT], request.path, request.headers.get("Authorization"))
    if refusal is not None:
        return refusal.response()
    response: web.StreamResponse = await handler(request)
    return response


@web.middleware
async def _measure(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
    """Count every inference request and time it (murmur_inference_*: inferencemetrics.py)."""
    if request.method != "POST" or not request.path.startswith("/v2/models/"):
        response: web.StreamResponse = await handler(request)
        return response
    started_s = time.monotonic()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:  # its client went away (httpguard.py cancel_when_gone)
        status = CLIENT_GONE_STATUS
        raise
    finally:
        request.app[FRONT].count(
            request.match_info.get("name", ""), request.get(ROUTE, "refused"), status, started_s
        )


async def health_live(_request: web.Request) -> web.Response:
    return web.json_response({"live": True})


async def health_ready(_request: web.Request) -> web.Response:
    return web.json_response({"ready": True})


async def server_metadata(_request: web.Request) -> web.Response:
    return web.json_response({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": list(EXTENSIONS)})


def local_metadata(
    front: InferenceFront, name: str, version: str | None
) -> tuple[ModelMetadata | None, Answer | None]:
    """The model's metadata when it is served here (and the version asked for is it)."""
    meta = front.host.metadata(name)
    if meta is not None and version is not None and version not in meta.versions:
        return None, Answer.error(
            404, f"model {name!r} version {version!r} is not served; versions: {', '.join(meta.versions)}"
        )
    return meta, None


def _local_metadata(
    front: InferenceFront, request: web.Request
) -> tuple[ModelMetadata | None, web.Response | None]:
    meta, refusal = local_metadata(front, request.match_info["name"], request.match_info.get("version"))
    return meta, refusal.response() if refusal is not None else None


async def model_metadata(request: web.Request) -> web.StreamResponse:
    front = request.app[FRONT]
    meta, refusal = _local_metadata(front, request)
    if refusal is not None:
        return refusal
    if meta is not None:
        return web.json_response(meta.to_json())
    return await _forward(request, b"")


async def model_ready(request: web.Request) -> web.Response:
    front = request.app[FRONT]
    name = request.match_info["name"]
    candidates, known = front.candidates(name)
    if not any(c.state is ReplicaState.READY for c in candidates) and front.remote is not None:
        # as a request would be served: by another region's ready replica
        assert front.client is not None, "the /v2 routes' cleanup context sets the client"
        candidates = await front.remote.candidates(name, front.client, front.load)
        known = known or bool(candidates)
    if not known:
        return v2_error(404, _unknown(name, front.remote is not None))
    if any(c.state is ReplicaState.READY for c in candidates):
        return web.json_response({"name": name, "ready": True})
    return web.json_response({"name": name, "ready": False}, status=503)


async def model_infer(request: web.Request) -> web.StreamResponse:
    front = request.app[FRONT]
    name = request.match_info["name"]
    body = await _read_body(request, front.limits.body_max_bytes)
    if isinstance(body, web.Response):
        return body
    meta, refusal = _local_metadata(front, request)
    if refusal is not None:
        return refusal
    if meta is None:
        return await _forward(request, body)
    request[ROUTE] = "local"
    answer = await serve_here(
        front,
        name,
        meta,
        body,
        json_length=request.headers.get(HEADER_LENGTH_HEADER),
        priority=request.headers.get(PRIORITY_HEADER),
    )
    return answer.response()


async def serve_here(
    front: InferenceFront,
    name: str,
    meta: ModelMetadata,
    body: bytes,
    *,
    json_length: str | None,
    priority: str | None,
) -> Answer:
    """Decode, queue, run and answer a request for this node's replica (`json_length`, `priority`:
    the request's Inference-Header-Content-Length and Murmur-Priority headers, if any). A
    request that is not critical by its header gives way to critical ones before decoding and
    before answering (mesh/service/criticalfirst.py)."""
    critical = _priority_or_none(priority) is Priority.CRITICAL
    with front.critical.serving() if critical else contextlib.nullcontext():
        if not critical:
            await front.critical.give_way()
        # The tensor codec, and numpy with it, is imported by the first request served here, when
        # the model's session has loaded numpy already: an agent that serves no model, or only
        # forwards, never loads it (docs/benchmarks.md, footprint).
        from inference.v2codec import check_request, encode_response, header_length, parse_request

        try:
            parsed = parse_request(body, header_length(json_length, len(body)), front.limits)
            check_request(parsed, meta)
            queued_as = parse_priority(
                priority if priority is not None else parsed.parameters.get("priority")
            )
        except ValueError as exc:  # the codec's V2Error and TensorError, and a bad priority
            return Answer.error(400, str(exc))
        try:
            outputs = await front.lanes.lane(name).submit(dict(parsed.inputs), queued_as)
        except QueueFull as exc:
            retry = (("Retry-After", str(math.ceil(exc.retry_after_s))),)
            return Answer.error(429, f"{exc}; retry later", retry)
        except InferFailed as exc:
            return Answer.error(500, str(exc))
        if not critical:
            await front.critical.give_way()
        try:
            out_body, json_bytes = encode_response(
                name, meta.versions[0] if meta.versions else None, outputs, parsed
            )
        except ValueError as exc:  # TensorError: an output that cannot be JSON
            return Answer.error(400, str(exc))
    if json_bytes is None:
        return Answer(200, out_body)
    return Answer(200, out_body, "application/octet-stream", ((HEADER_LENGTH_HEADER, str(json_bytes)),))


def _priority_or_none(header: str | None) -> Priority | None:
    """The priority a header gives, if a valid one (a bad one is refused later)."""
    try:
        return parse_priority(header) if header is not None else None
    except ValueError:
        return None


async def _read_body(request: web.Request, limit_bytes: int) -> bytes | web.Response:
    """The request body within `limit_bytes` (the app's smaller client_max_size is for /v1)."""
    if request.content_length is not None and request.content_length > limit_bytes:
        return v2_error(413, f"the body is {request.content_length} bytes, over the limit of {limit_bytes}")
    if request.content_length is not None:  # the usual case: one read of a known size
        # A client that stops sending early closes the connection: aiohttp cancels this
        # handler (tests/mesh/test_v2api.py, a body shorter than its Content-Length).
        return await request.content.readexactly(request.content_length)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit_bytes:
            return v2_error(413, f"the body is over the limit of {limit_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _unknown(name: str, asked_other_regions: bool = False) -> str:
    where = (
        "in this node's region nor in any region that answered"
        if asked_other_regions
        else ("in this node's region")
    )
    return f"model {name!r} is not deployed {where} (no ready replica in its placement); see murmur status"


@dataclass(frozen=True, slots=True)
class Ask:
    """A request to forward, as it came: by aiohttp's route or the lean connection (v2wire.py)."""

    name: str  # the model
    method: str
    raw_path: str
    headers: Mapping[str, str]  # those of FORWARDED_HEADERS it has, by those names
    body: bytes
    forwarded: bool  # another node sent it (HOP_HEADER): it is never forwarded again


async def _forward(request: web.Request, body: bytes) -> web.StreamResponse:
    headers = {k: request.headers[k] for k in FORWARDED_HEADERS if k in request.headers}
    ask = Ask(
        request.match_info["name"],
        request.method,
        request.rel_url.raw_path,
        headers,
        body,
        HOP_HEADER in request.headers,
    )
    answer, sent = await forward(request.app[FRONT], ask)
    if sent:
        request[ROUTE] = "forwarded"
    return answer.response()


async def forward(front: InferenceFront, ask: Ask) -> tuple[Answer, bool]:
    """Send the request, unchanged, to the best ready replica; once more elsewhere if that fails.
    The answer, and whether it was sent to a replica at all (route "forwarded" in the metrics)."""
    name = ask.name
    tried: list[str] = []
    last: Answer | None = None
    for _ in range(ATTEMPTS_MAX):
        candidates, known = front.candidates(name)
        route = choose(
            name,
            node_id=front.node_id,
            region=front.region,
            candidates=candidates,
            tried=tried,
            forwarded=ask.forwarded,
        )
        if isinstance(route, Refuse) and not ask.forwarded and front.remote is not None:
            # Nothing left to try in this region: another region's ready replica, if one has it.
            assert front.client is not None, "the /v2 routes' cleanup context sets the client"
            remote = await front.remote.candidates(name, front.client, front.load)
            if remote:
                known = True
                route = choose(
                    name,
                    node_id=front.node_id,
                    region=front.region,
                    candidates=[*candidates, *remote],
                    tried=tried,
                    forwarded=False,
                )
        if not known and not ask.forwarded:
            return Answer.error(404, _unknown(name, front.remote is not None)), bool(tried)
        if isinstance(route, Refuse):
            return (last if last is not None else Answer.error(route.status, route.reason)), bool(tried)
        if not isinstance(route, Forward):  # ServeHere: the model became ready here meanwhile
            loading = f"model {name!r} is loading on this node; retry in a moment"
            return Answer.error(503, loading), bool(tried)
        tried.append(route.node_id)
        last = await _send(front, route, ask)
        if last.status not in _RETRYABLE:
            return last, True
    assert last is not None
    return last, True


async def _send(front: InferenceFront, route: Forward, ask: Ask) -> Answer:
    """One forward: the peer's answer relayed as it is, or a 502 that says why there was none."""
    assert front.relay is not None, "the /v2 routes' cleanup context sets the relay"
    headers = {HOP_HEADER: front.node_id, **ask.headers}
    started_s = time.monotonic()
    front.load.started(route.node_id)
    rtt_s: float | None = None
    try:
        answer = await front.relay.request(
            route.api_addr,
            ask.method,
            ask.raw_path,
            headers,
            ask.body if ask.method == "POST" else b"",
            FORWARD_TIMEOUT_S,
        )
        rtt_s = time.monotonic() - started_s
    except RelayError as exc:
        return Answer.error(502, f"replica on node {route.node_id} at {route.api_addr} did not answer: {exc}")
    finally:
        front.load.finished(route.node_id, rtt_s)
    relayed = tuple((k, answer.headers[k.lower()]) for k in _RELAYED_HEADERS if k.lower() in answer.headers)
    content_type = answer.headers.get("content-type", "application/json").split(";")[0].strip()
    return Answer(answer.status, answer.body, content_type, relayed)


def add_routes(app: web.Application, front: InferenceFront) -> None:
    """Add the /v2 endpoints (and their token check) to the API application (launch.py)."""
    app[FRONT] = front

    async def forwarder(app: web.Application) -> AsyncIterator[None]:
        # For other regions' placements; it keeps no cookies (what one answer sets must not go out
        # with the next). Forwarded requests go through the relay (mesh/service/relay.py).
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client:
            front.client = client
            front.relay = relay = PeerRelay(front.limits.body_max_bytes)
            yield
            await relay.close()
        await front.lanes.close()

    app.cleanup_ctx.append(forwarder)
    app.middlewares.append(_measure)  # outside the token check: a refused token is counted too
    app.middlewares.append(_token_check)
    app.router.add_get("/v2/health/live", health_live)
    app.router.add_get("/v2/health/ready", health_ready)
    app.router.add_get("/v2", server_metadata)
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        app.router.add_get(prefix, model_metadata)
        app.router.add_get(prefix + "/ready", model_ready)
        app.router.add_post(prefix + "/infer", model_infer)


def read_token_file(path: Path) -> str:
    """An inference token file's content (one line); ValueError if unreadable, empty or not printable."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    if not token or len(token) > 512 or not token.isprintable() or " " in token:
        raise ValueError("the inference token must be one line of 1..512 printable characters without spaces")
    return token
