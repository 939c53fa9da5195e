"""Crash-safe writes of small files, secrets included (write, fsync, link, fsync dir)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

SECRET_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_new_file(path: Path, data: bytes, mode: int = SECRET_MODE) -> None:
    """Create `path` with `data` atomically; never overwrite (FileExistsError if it exists).

    The bytes go to a temporary file first, are fsynced, then hard-linked into
    place: a kill -9 at any moment leaves either no file or the whole file.
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask may only narrow the mode; make it exact
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    finally:
        tmp.unlink()
    _fsync_dir(path.parent)


def make_private_dir(path: Path) -> None:
    """Create `path` (and parents) if missing; a new directory gets mode 0700."""
    if not path.exists():
        path.mkdir(parents=True, mode=PRIVATE_DIR_MODE)
        os.chmod(path, PRIVATE_DIR_MODE)


def is_private(path: Path) -> bool:
    """True when neither group nor others may read or write `path`."""
    return path.stat().st_mode & 0o077 == 0
