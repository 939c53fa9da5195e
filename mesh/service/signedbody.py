"""Reading an operator's signed request and answering it: what every API module that takes a
command shares (mesh/service/api.py, mesh/service/placementapi.py).

A signed request is read whole (at most REQUEST_BODY_MAX_BYTES), its signature checked
(mesh/trust/opsign.py), its body parsed as a JSON object within BODY_LIMITS, and the record
it carries decoded. A refusal is raised as SubmitRefused (or SignatureRefused, ManifestError)
and turned into its JSON error answer by the `refusals` wrapper; an acceptable record is
persisted and published by the node service and answered 202 (`accepted`).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from aiohttp import web

from gossip.records import Record
from inference.documents import DocumentError, DocumentLimits, load_json
from inference.manifest import ManifestError
from mesh.trust.deploy import record_from_b64
from mesh.trust.opsign import RequestVerifier, SignatureRefused

REQUEST_BODY_MAX_BYTES = 64 * 1024
# A request body is parsed with a manifest's limits (inference/documents.py) but for its
# strings: the YAML text of a manifest and the base64 of a record are strings of the body
# (the text is then loaded with the manifest's own limits).
BODY_LIMITS = DocumentLimits(text_max_bytes=REQUEST_BODY_MAX_BYTES, scalar_max_chars=REQUEST_BODY_MAX_BYTES)

VERIFIER = web.AppKey("verifier", RequestVerifier)


class SubmitRefused(Exception):
    """The node refuses an operator's record; `status` is the HTTP status, the message the fix."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class RecordSink(Protocol):
    """What `accepted` asks of the node service: persist and publish a checked record."""

    def submit_record(self, record: Record) -> bool: ...


def error_response(status: int, message: str) -> web.Response:
    """The API's error answer: `{"error": message}` with `status`."""
    return web.json_response({"error": message}, status=status)


def manifest_refused(message: str) -> web.Response:
    """400 for a manifest that is not valid, naming the field (`manifest_error`)."""
    return web.json_response({"error": f"invalid manifest: {message}", "manifest_error": message}, status=400)


async def read_signed(request: web.Request) -> tuple[bytes, str]:
    """The body of a signed request and its operator key id; SignatureRefused or SubmitRefused."""
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise SubmitRefused(
            413,
            f"request body is over {REQUEST_BODY_MAX_BYTES} bytes; a manifest must be smaller "
            "(its record payload is limited to 16 KiB)",
        ) from None
    signer = request.app[VERIFIER].verify(
        request.method, request.raw_path, request.headers, body, time.time()
    )
    return body, signer


def json_object(body: bytes, shape: str) -> dict[str, Any]:
    """The body as a JSON object, within BODY_LIMITS; SubmitRefused(400) if it is not one.

    A problem inside the manifest it carries (`manifest.priority: an integer of 5000
    characters ...`) is a ManifestError naming the field."""
    try:
        doc = load_json(body, BODY_LIMITS)
    except DocumentError as exc:
        if exc.path.startswith("manifest."):
            raise ManifestError(f"{exc.path.removeprefix('manifest.')}: {exc.detail}") from None
        raise SubmitRefused(400, f"body must be a JSON object: {shape} ({exc})") from None
    if not isinstance(doc, dict):
        raise SubmitRefused(400, f"body must be a JSON object: {shape}")
    return doc


def record_json(record: Record) -> dict[str, Any]:
    """A record as an answer names it: kind, key, version, author."""
    return {"kind": record.kind, "key": record.key, "version": record.version, "author": record.author}


def record_of(doc: dict[str, Any]) -> Record:
    """The operator-signed record a request carries; 400 if it is not one."""
    try:
        return record_from_b64(doc.get("record"))
    except ValueError as exc:
        raise SubmitRefused(400, f"{exc}; the murmur CLI signs and sends it") from None


def accepted(
    service: RecordSink, record: Record, problem: str | None, extra: dict[str, Any] | None = None
) -> web.Response:
    """400 with the problem, else persist and publish the record: 202 (with `extra` in the body)."""
    if problem is not None:
        raise SubmitRefused(400, problem)
    new = service.submit_record(record)
    return web.json_response({"record": record_json(record), "new": new, **(extra or {})}, status=202)


def refusals(handler: Any) -> Any:
    """Wrap a handler so that a refusal it raises is answered as JSON with its status."""

    async def wrapped(request: web.Request) -> web.Response:
        try:
            response: web.Response = await handler(request)
        except (SignatureRefused, SubmitRefused) as exc:
            return error_response(exc.status, str(exc))
        except ManifestError as exc:  # a manifest, or a value in a body beyond the limits
            return manifest_refused(str(exc))
        return response

    return wrapped
