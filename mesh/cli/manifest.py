"""Reading a deployment manifest for `murmur deploy`: `artifact.file` is hashed here, on the
operator's machine, so the signed record names the exact bytes the node will be sent."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from inference.manifest import (
    MANIFEST_TEXT_MAX_BYTES,
    Deployment,
    ManifestError,
    load_document,
    manifest_from_doc,
)
from mesh.cli.client import CliError
from mesh.files import FileRefused, read_bounded

HASH_CHUNK_BYTES = 1 << 20
_FILE_KEYS = ("file", "sha256", "size_bytes")  # the file, and optionally its pins


def _sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def read_manifest(path: Path) -> Deployment:
    """Parse a manifest file; `artifact.file` (relative to the manifest) is hashed here."""
    return read_manifest_and_artifact(path)[0]


def read_manifest_and_artifact(path: Path) -> tuple[Deployment, Path | None]:
    """The deployment, and the local artifact file it names (None if it gives sha256 and size)."""
    try:
        text = read_bounded(path, MANIFEST_TEXT_MAX_BYTES, "manifest").decode("utf-8")
    except FileRefused as exc:
        raise CliError(str(exc)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{path}: cannot read the manifest ({exc})") from None
    file: Path | None = None
    try:
        doc = load_document(text)
        artifact = doc.get("artifact") if isinstance(doc, dict) else None
        if isinstance(artifact, dict) and "file" in artifact:
            file, doc["artifact"] = _hash_artifact(path, artifact)
        return manifest_from_doc(doc), file
    except ManifestError as exc:
        raise CliError(f"{path}: {exc}") from None


def _hash_artifact(manifest_path: Path, artifact: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """Hash `artifact.file`; `sha256` and `size_bytes` beside it pin it (a file that differs is refused)."""
    extra = [str(k)[:64] for k in artifact if k not in _FILE_KEYS]  # keys may be of any type: no sorting
    if extra:
        raise ManifestError(
            f"artifact.{extra[0]}: give either artifact.file or sha256 and size_bytes (sha256 and "
            "size_bytes beside a file pin it)"
        )
    if not isinstance(artifact["file"], str):
        raise ManifestError("artifact.file: must be a path (a string)")
    file = (manifest_path.parent / artifact["file"]).resolve()
    try:
        sha256, size = _sha256_file(file)
    except OSError as exc:
        raise ManifestError(f"artifact.file: cannot read {file} ({exc.strerror or exc})") from None
    for key, actual in (("sha256", sha256), ("size_bytes", size)):
        if key in artifact and artifact[key] != actual:
            pinned = str(artifact[key])[:64]
            raise ManifestError(
                f"artifact.{key}: the manifest pins {pinned}, but {file} has {actual}; rebuild the "
                "file or update the pin"
            )
    return file, {"sha256": sha256, "size_bytes": size}
