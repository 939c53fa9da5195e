"""The content-addressed artifact store: whole and verified, or nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mesh.service.artifacts import TMP_PREFIX, ArtifactError, ArtifactStore

DATA = b"onnx-model-bytes" * 1000
SHA = hashlib.sha256(DATA).hexdigest()


def store(tmp_path: Path, size_max_bytes: int = 1 << 20) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts", size_max_bytes=size_max_bytes)


def test_a_whole_verified_artifact_is_kept(tmp_path: Path) -> None:
    s = store(tmp_path)
    writer = s.begin(SHA, len(DATA))
    for i in range(0, len(DATA), 4096):
        writer.write(DATA[i : i + 4096])
    assert writer.commit().read_bytes() == DATA
    assert s.size(SHA) == len(DATA)
    assert [p.name for p in s.root.iterdir()] == [SHA]


@pytest.mark.parametrize(
    ("body", "reason"),
    [(DATA[:-1], "too_short"), (DATA[:-1] + b"X", "hash_mismatch")],
)
def test_short_or_wrong_bytes_leave_nothing(tmp_path: Path, body: bytes, reason: str) -> None:
    s = store(tmp_path)
    writer = s.begin(SHA, len(DATA))
    writer.write(body)
    with pytest.raises(ArtifactError) as info:
        writer.commit()
    assert info.value.reason == reason
    assert list(s.root.iterdir()) == [] and s.size(SHA) is None


def test_more_bytes_than_announced_are_refused_at_once(tmp_path: Path) -> None:
    s = store(tmp_path)
    writer = s.begin(SHA, 10)
    with pytest.raises(ArtifactError, match="more than the announced 10 bytes"):
        writer.write(DATA)
    assert list(s.root.iterdir()) == []


@pytest.mark.parametrize(
    ("sha", "size", "reason"),
    [
        ("ABC", 10, "bad_id"),
        ("../" + SHA[3:], 10, "bad_id"),
        (SHA, 0, "too_large"),
        (SHA, 2 << 20, "too_large"),
    ],
)
def test_bad_ids_and_sizes_are_refused_before_anything_is_written(
    tmp_path: Path, sha: str, size: int, reason: str
) -> None:
    s = store(tmp_path)
    with pytest.raises(ArtifactError) as info:
        s.begin(sha, size)
    assert info.value.reason == reason


def test_an_artifact_larger_than_the_free_disk_is_refused(tmp_path: Path) -> None:
    s = store(tmp_path, size_max_bytes=1 << 60)
    with pytest.raises(ArtifactError) as info:
        s.begin(SHA, 1 << 59)
    assert info.value.reason == "no_space"


def test_leftovers_of_an_interrupted_write_are_removed_at_open(tmp_path: Path) -> None:
    s = store(tmp_path)
    writer = s.begin(SHA, len(DATA))
    writer.write(DATA[:100])  # the process dies here
    assert any(p.name.startswith(TMP_PREFIX) for p in s.root.iterdir())
    reopened = store(tmp_path)
    assert list(reopened.root.iterdir()) == []


def test_an_id_with_a_trailing_newline_is_not_an_id(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError) as info:
        store(tmp_path).begin(SHA + "\n", len(DATA))
    assert info.value.reason == "bad_id"
