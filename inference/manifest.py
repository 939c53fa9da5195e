"""The deployment manifest: what an operator asks the fleet to run.

A manifest is YAML (JSON is YAML too) with exactly these fields:

    name: vibration                 # deployment name, 1-63 of [a-z0-9-], starts alphanumeric
    model: {name: vibration-cnn, version: "1.4.0"}
    artifact: {sha256: <64 hex>, size_bytes: 1048576}
    replicas: 2                     # per region; or {store-1: 2, store-2: 1};
                                    # or {per_region: 2, regions: ["store-*"]} (a region selector)
    requirements: {min_memory_bytes: 512Mi, accelerator: cuda, labels: {camera: "yes"}}
    priority: 100                   # 0..1000000, higher displaces lower
    resources: {memory_bytes: 300Mi, cpu_millicores: 500}   # optional: what one replica reserves
    spread: {label: zone}           # optional: spread replicas over the values of a node label
    batching: {max_batch: 8, max_delay_ms: 2}  # optional: dynamic batching (inference/batching.py)

`resources`, `spread` and `batching` are optional and appear in the canonical form only when
set, so a manifest without them has the same canonical bytes as before they existed.
A replica's reservation when `resources` (or one of its fields) is absent is
estimated from the artifact size (inference/resources.py, docs/placement.md).

`parse_manifest` refuses unknown fields and names the exact path of the first
problem ("replicas.north: must be an integer >= 0, got 'two'"). Text is loaded by
inference/documents.py within limits (no anchors or aliases, shallow, short values,
integers bounded before `int()`), and an error never prints more than a few
characters of a value: a manifest is untrusted input. `canonical_bytes`
is the payload of the `desired` record: compact, key-sorted JSON of the fully
normalised manifest (defaults filled in, memory in bytes), so parsing it again
gives the same bytes and two nodes can compare a manifest with a signed payload.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from inference.batching import MAX_BATCH_LIMIT, MAX_DELAY_LIMIT_MS, BatchPolicy
from inference.documents import DocumentError, DocumentLimits, canonical_json, load_json, load_yaml

MANIFEST_TEXT_MAX_BYTES = 64 * 1024
# The payload must fit one state-store record (gossip/state.py payload_max_bytes).
PAYLOAD_MAX_BYTES = 16 * 1024
# Every pattern is used with fullmatch: `match` with `$` would let a trailing newline through.
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
REGION_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
REGION_GLOB_PATTERN = re.compile(r"[a-z0-9._*?-]{1,63}")
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
TEXT_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+@-]{0,127}")
LABEL_KEY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,62}")
LABEL_VALUE_MAX_CHARS = 63
LABELS_MAX = 32
REGIONS_MAX = 256
REPLICAS_MAX = 10_000
PRIORITY_MAX = 1_000_000
ARTIFACT_SIZE_MAX_BYTES = 1 << 40
MEMORY_MAX_BYTES = 1 << 50
CPU_MAX_MILLICORES = 1 << 20  # a million cores: far beyond any device, small enough to print
_MEMORY_UNITS = {
    "": 1,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 1 << 10,
    "Mi": 1 << 20,
    "Gi": 1 << 30,
    "Ti": 1 << 40,
}
_MEMORY_PATTERN = re.compile(r"([0-9]{1,20})(K|M|G|T|Ki|Mi|Gi|Ti)?")
DESIRED_KEY_PREFIX = "deployment/"


class ManifestError(ValueError):
    """An invalid manifest; the message starts with the field path, then the problem."""


@dataclass(frozen=True, slots=True)
class Replicas:
    """How many replicas, where: exactly one of the three forms is set.

    `per_region` alone: that many in every region. `per_region` with `regions`:
    that many in each region matching one of the glob patterns (a selector).
    `by_region`: an explicit count per named region (others get none).
    """

    per_region: int | None = None
    regions: tuple[str, ...] = ()
    by_region: tuple[tuple[str, int], ...] = ()

    def for_region(self, region: str) -> int:
        """The replica count this manifest asks of `region`."""
        if self.by_region:
            return dict(self.by_region).get(region, 0)
        if self.regions and not any(fnmatch.fnmatchcase(region, p) for p in self.regions):
            return 0
        return self.per_region or 0

    def to_doc(self) -> Any:
        if self.by_region:
            return dict(self.by_region)
        if self.regions:
            return {"per_region": self.per_region, "regions": list(self.regions)}
        return self.per_region


@dataclass(frozen=True, slots=True)
class Requirements:
    """What a node must offer to host a replica."""

    min_memory_bytes: int = 0
    accelerator: str | None = None
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Resources:
    """What one replica reserves on its node, as the manifest states it; None: estimated
    from the artifact size (inference/resources.py)."""

    memory_bytes: int | None = None
    cpu_millicores: int | None = None

    def to_doc(self) -> dict[str, int]:
        """Only the fields set: an unset one stays unset in the canonical form."""
        doc: dict[str, int] = {}
        if self.memory_bytes is not None:
            doc["memory_bytes"] = self.memory_bytes
        if self.cpu_millicores is not None:
            doc["cpu_millicores"] = self.cpu_millicores
        return doc


@dataclass(frozen=True, slots=True)
class Batching:
    """The manifest's dynamic batching: run up to `max_batch` queued requests as one, waiting
    at most `max_delay_ms` for them (whole milliseconds, so the canonical form has no float)."""

    max_batch: int
    max_delay_ms: int = 0

    def policy(self) -> BatchPolicy:
        """What the node's model lane runs by (inference/batching.py)."""
        return BatchPolicy(self.max_batch, self.max_delay_ms / 1000)

    def to_doc(self) -> dict[str, int]:
        return {"max_batch": self.max_batch, "max_delay_ms": self.max_delay_ms}


@dataclass(frozen=True, slots=True)
class Deployment:
    """A validated, normalised manifest."""

    name: str
    model_name: str
    model_version: str
    artifact_sha256: str
    artifact_size_bytes: int
    replicas: Replicas
    requirements: Requirements = field(default_factory=Requirements)
    priority: int = 0
    resources: Resources = field(default_factory=Resources)
    spread_label: str | None = None  # spread replicas over this node label's values
    batching: Batching | None = None  # None: every request runs on its own

    @property
    def record_key(self) -> str:
        """The key of this deployment's `desired` record."""
        return desired_key(self.name)

    def to_doc(self) -> dict[str, Any]:
        """The normalised manifest as a JSON-ready dict (parse_manifest accepts it back unchanged)."""
        doc: dict[str, Any] = {
            "name": self.name,
            "model": {"name": self.model_name, "version": self.model_version},
            "artifact": {"sha256": self.artifact_sha256, "size_bytes": self.artifact_size_bytes},
            "replicas": self.replicas.to_doc(),
            "requirements": {
                "min_memory_bytes": self.requirements.min_memory_bytes,
                "accelerator": self.requirements.accelerator,
                "labels": dict(self.requirements.labels),
            },
            "priority": self.priority,
        }
        # Optional fields appear only when set: a manifest written before they existed
        # keeps its canonical bytes (and so its signed `desired` payload stays valid).
        resources = self.resources.to_doc()
        if resources:
            doc["resources"] = resources
        if self.spread_label is not None:
            doc["spread"] = {"label": self.spread_label}
        if self.batching is not None:
            doc["batching"] = self.batching.to_doc()
        return doc


def desired_key(name: str) -> str:
    """The `desired` record key of the deployment `name`."""
    return DESIRED_KEY_PREFIX + name


def canonical_bytes(deployment: Deployment) -> bytes:
    """The record payload: compact UTF-8 JSON of `to_doc()` with sorted keys."""
    return canonical_json(deployment.to_doc())


MANIFEST_LIMITS = DocumentLimits(text_max_bytes=MANIFEST_TEXT_MAX_BYTES)
"""What manifest text may hold (inference/documents.py): no aliases, shallow, small values."""


def load_document(text: str | bytes) -> Any:
    """YAML (or JSON) text to a Python value; ManifestError if it does not parse or is beyond the
    limits (aliases, depth, size; inference/documents.py)."""
    try:
        return load_yaml(text, MANIFEST_LIMITS)
    except DocumentError as exc:
        raise ManifestError(f"{_document_path(exc)}: {exc.detail}") from None


def _document_path(exc: DocumentError) -> str:
    """The field a loader error names, or `manifest` for the text as a whole."""
    return exc.path if exc.path and exc.path[0] not in "[(" else "manifest"


def parse_manifest(text: str | bytes) -> Deployment:
    """Parse and validate a YAML or JSON manifest; ManifestError names the field and the problem."""
    return manifest_from_doc(load_document(text))


def manifest_from_doc(doc: Any) -> Deployment:
    """Validate an already-parsed manifest document."""
    top = _mapping(
        doc,
        "manifest",
        required=("name", "model", "artifact", "replicas"),
        optional=("requirements", "priority", "resources", "spread", "batching"),
    )
    name = _string(top["name"], "name", NAME_PATTERN, "1-63 lowercase letters, digits or '-', e.g. vibration")
    model = _mapping(top["model"], "model", required=("name", "version"))
    artifact_doc = top["artifact"]
    if isinstance(artifact_doc, Mapping) and "file" in artifact_doc:
        raise ManifestError(
            "artifact.file: a local file is hashed by the CLI (murmur deploy), not by the node; "
            "send artifact.sha256 and artifact.size_bytes"
        )
    artifact = _mapping(artifact_doc, "artifact", required=("sha256", "size_bytes"))
    requirements = _requirements(top.get("requirements", {}))
    deployment = Deployment(
        name=name,
        model_name=_string(model["name"], "model.name", TEXT_PATTERN, _TEXT_HINT),
        model_version=_string(model["version"], "model.version", TEXT_PATTERN, _TEXT_HINT),
        artifact_sha256=_string(
            artifact["sha256"], "artifact.sha256", SHA256_PATTERN, "64 lowercase hex characters"
        ),
        artifact_size_bytes=_integer(
            artifact["size_bytes"], "artifact.size_bytes", 1, ARTIFACT_SIZE_MAX_BYTES
        ),
        replicas=_replicas(top["replicas"]),
        requirements=requirements,
        priority=_integer(top.get("priority", 0), "priority", 0, PRIORITY_MAX),
        resources=_resources(top.get("resources", {})),
        spread_label=_spread(top["spread"]) if "spread" in top else None,
        batching=_batching(top["batching"]) if "batching" in top else None,
    )
    size = len(canonical_bytes(deployment))
    if size > PAYLOAD_MAX_BYTES:
        raise ManifestError(
            f"manifest: its canonical form is {size} bytes, over the limit of {PAYLOAD_MAX_BYTES}; "
            "use fewer labels or regions"
        )
    return deployment


_TEXT_HINT = "1-128 characters of letters, digits and ._:/+@- starting with a letter or digit"


def _show(value: Any) -> str:
    """A short description of an untrusted value: a repr only of small scalars, never of a
    collection (one may share itself a million times) nor of a huge integer."""
    if isinstance(value, str):
        text = repr(value[:60])
    elif isinstance(value, bool | float) or value is None:
        text = repr(value)
    elif isinstance(value, int):
        # str() of an int over 4,300 digits raises; a long one is described, not printed.
        text = repr(value) if value.bit_length() <= 64 else f"an integer of {value.bit_length()} bits"
    elif isinstance(value, list | dict):
        return f"{_type_name(value)} of {len(value)} items"
    else:
        return _type_name(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _key(key: Any) -> str:
    """A mapping key as it appears in an error's path, cut short."""
    text = key if isinstance(key, str) else _show(key)
    return text if len(text) <= 64 else text[:61] + "..."


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)


def _mapping(
    value: Any, path: str, *, required: tuple[str, ...] = (), optional: tuple[str, ...] = ()
) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ManifestError(f"{path}: must be a mapping, got {_type_name(value)}")
    allowed = (*required, *optional)
    for key in value:
        if key not in allowed:
            raise ManifestError(f"{_join(path, key)}: unknown field; allowed here: {', '.join(allowed)}")
    for key in required:
        if key not in value:
            raise ManifestError(f"{_join(path, key)}: required field is missing")
    return value


def _join(path: str, key: Any) -> str:
    return _key(key) if path == "manifest" else f"{path}.{_key(key)}"


def _string(value: Any, path: str, pattern: re.Pattern[str], hint: str) -> str:
    if not isinstance(value, str):
        extra = (
            f' (quote it: "{value}")'
            if isinstance(value, int | float) and not isinstance(value, bool)
            else ""
        )
        raise ManifestError(f"{path}: must be a string, got {_show(value)}{extra}")
    if not pattern.fullmatch(value):
        raise ManifestError(f"{path}: {_show(value)} is not valid; use {hint}")
    return value


def _integer(value: Any, path: str, low: int, high: int) -> int:
    if type(value) is not int or value < low:
        raise ManifestError(f"{path}: must be an integer >= {low}, got {_show(value)}")
    if value > high:
        raise ManifestError(f"{path}: must be at most {high}, got {_show(value)}")
    return value


def _replicas(value: Any) -> Replicas:
    if not isinstance(value, dict):
        if type(value) is not int:
            raise ManifestError(
                f"replicas: must be an integer >= 0, a {{region: count}} mapping, or "
                f"{{per_region: n, regions: [patterns]}}, got {_show(value)}"
            )
        return Replicas(per_region=_integer(value, "replicas", 0, REPLICAS_MAX))
    if "per_region" in value or "regions" in value:
        sel = _mapping(value, "replicas", required=("per_region", "regions"))
        patterns = sel["regions"]
        if not isinstance(patterns, list) or not 1 <= len(patterns) <= REGIONS_MAX:
            raise ManifestError(
                f"replicas.regions: must be a list of 1 to {REGIONS_MAX} region names or glob patterns, "
                f"got {_show(patterns)}"
            )
        regions = tuple(
            _string(p, f"replicas.regions[{i}]", REGION_GLOB_PATTERN, "a region name or glob, e.g. store-*")
            for i, p in enumerate(patterns)
        )
        return Replicas(
            per_region=_integer(sel["per_region"], "replicas.per_region", 0, REPLICAS_MAX), regions=regions
        )
    if not 1 <= len(value) <= REGIONS_MAX:
        raise ManifestError(f"replicas: a region mapping must name 1 to {REGIONS_MAX} regions")
    counts: list[tuple[str, int]] = []
    for region, count in value.items():
        if not isinstance(region, str) or not REGION_PATTERN.fullmatch(region):
            raise ManifestError(
                f"replicas.{_key(region)}: not a region name; use 1-63 lowercase letters, digits, '.', '_' "
                "or '-'"
            )
        counts.append((region, _integer(count, f"replicas.{region}", 0, REPLICAS_MAX)))
    return Replicas(by_region=tuple(sorted(counts)))


def _requirements(value: Any) -> Requirements:
    req = _mapping(value, "requirements", optional=("min_memory_bytes", "accelerator", "labels"))
    accelerator = req.get("accelerator")
    if accelerator is not None:
        accelerator = _string(accelerator, "requirements.accelerator", TEXT_PATTERN, _TEXT_HINT)
    labels_doc = req.get("labels", {})
    if not isinstance(labels_doc, dict):
        raise ManifestError(
            f"requirements.labels: must be a mapping of strings, got {_type_name(labels_doc)}"
        )
    if len(labels_doc) > LABELS_MAX:
        raise ManifestError(f"requirements.labels: at most {LABELS_MAX} labels, got {len(labels_doc)}")
    labels: list[tuple[str, str]] = []
    for key, label in labels_doc.items():
        path = f"requirements.labels.{_key(key)}"
        if not isinstance(key, str) or not LABEL_KEY_PATTERN.fullmatch(key):
            raise ManifestError(f"{path}: not a label name; use letters, digits and ._/- (1-63)")
        if not isinstance(label, str) or len(label) > LABEL_VALUE_MAX_CHARS:
            raise ManifestError(
                f"{path}: must be a string of at most {LABEL_VALUE_MAX_CHARS} characters, got {_show(label)}"
                + (' (quote it, e.g. "yes")' if isinstance(label, bool | int | float) else "")
            )
        labels.append((key, label))
    return Requirements(
        min_memory_bytes=_memory(req.get("min_memory_bytes", 0)),
        accelerator=accelerator,
        labels=tuple(sorted(labels)),
    )


def _resources(value: Any) -> Resources:
    res = _mapping(value, "resources", optional=("memory_bytes", "cpu_millicores"))
    # A replica that reserves nothing could be moved back and forth by a rebalance for ever
    # (docs/placement.md): both are at least 1.
    memory = res.get("memory_bytes")
    cpu = res.get("cpu_millicores")
    return Resources(
        memory_bytes=None if memory is None else _memory(memory, "resources.memory_bytes", low=1),
        cpu_millicores=None
        if cpu is None
        else _integer(cpu, "resources.cpu_millicores", 1, CPU_MAX_MILLICORES),
    )


def _spread(value: Any) -> str:
    spread = _mapping(value, "spread", required=("label",))
    return _string(
        spread["label"],
        "spread.label",
        LABEL_KEY_PATTERN,
        "a node label name, e.g. zone (letters, digits, ._/-)",
    )


def _batching(value: Any) -> Batching:
    batching = _mapping(value, "batching", required=("max_batch",), optional=("max_delay_ms",))
    return Batching(
        max_batch=_integer(batching["max_batch"], "batching.max_batch", 1, MAX_BATCH_LIMIT),
        max_delay_ms=_integer(
            batching.get("max_delay_ms", 0), "batching.max_delay_ms", 0, MAX_DELAY_LIMIT_MS
        ),
    )


def _memory(value: Any, path: str = "requirements.min_memory_bytes", *, low: int = 0) -> int:
    if type(value) is int:
        return _integer(value, path, low, MEMORY_MAX_BYTES)
    match = _MEMORY_PATTERN.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ManifestError(
            f"{path}: must be an integer number of bytes or a size like 512Mi, 2Gi, 500M, got {_show(value)}"
        )
    size = int(match.group(1)) * _MEMORY_UNITS[match.group(2) or ""]
    if size < low:
        raise ManifestError(f"{path}: must be at least {low} byte, got {_show(value)}")
    if size > MEMORY_MAX_BYTES:
        raise ManifestError(f"{path}: {_show(value)} is over the limit of {MEMORY_MAX_BYTES} bytes")
    return size


PAYLOAD_LIMITS = DocumentLimits(text_max_bytes=PAYLOAD_MAX_BYTES)


def decode_payload(payload: bytes) -> Deployment:
    """A `desired` record's payload back to a Deployment (ManifestError if it is not one)."""
    try:
        doc = load_json(payload, PAYLOAD_LIMITS)
    except DocumentError as exc:
        raise ManifestError(f"{_document_path(exc)}: {exc.detail} (in the record's JSON payload)") from None
    return manifest_from_doc(doc)


def payload_problem(payload: bytes) -> str | None:
    """Why `payload` is not a valid `desired` payload (None if it is): a manifest in its canonical
    form, so every node holds exactly the bytes `canonical_bytes` gives for it."""
    try:
        deployment = decode_payload(payload)
    except ManifestError as exc:
        return str(exc)
    if canonical_bytes(deployment) != payload:
        return "manifest: payload is not the canonical form of its manifest"
    return None
