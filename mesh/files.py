"""Small files, secrets included: crash-safe writes (write, fsync, link, fsync dir) and
bounded reads that refuse a secret other users could read (as ssh refuses a private key)."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

SECRET_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


class FileRefused(Exception):
    """A file murmur will not read (too large, or a secret others can read); the message names the fix."""


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(path: Path, data: bytes, mode: int) -> Path:
    """Write `data` to a fresh temporary file beside `path` with exactly `mode`, fsynced; its path."""
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
    return tmp


def write_new_file(path: Path, data: bytes, mode: int = SECRET_MODE) -> None:
    """Create `path` with `data` atomically; never overwrite (FileExistsError if it exists).

    The bytes go to a temporary file first, are fsynced, then hard-linked into
    place: a kill -9 at any moment leaves either no file or the whole file.
    """
    tmp = _write_temp(path, data, mode)
    try:
        os.link(tmp, path)
    finally:
        tmp.unlink()
    fsync_dir(path.parent)


def make_private_dir(path: Path) -> None:
    """Create `path` (and parents) if missing; a new directory gets mode 0700."""
    if not path.exists():
        path.mkdir(parents=True, mode=PRIVATE_DIR_MODE)
        os.chmod(path, PRIVATE_DIR_MODE)


def is_private(path: Path) -> bool:
    """True when neither group nor others may read or write `path`."""
    return path.stat().st_mode & 0o077 == 0


def _mode(st: os.stat_result) -> str:
    return f"{stat.S_IMODE(st.st_mode):04o}"


def read_bounded(path: Path, max_bytes: int, what: str, *, secret: bool = False) -> bytes:
    """The bytes of `path`, at most `max_bytes`; FileRefused beyond that (e.g. /dev/zero).

    secret: refuse a regular file that group or others may read or write (the
    chmod to run is in the message). Only regular files are checked: a pipe
    (`--token <(...)`) is not a stored secret. OSError (FileNotFoundError
    included) passes through for the caller to word.
    """
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        if secret and stat.S_ISREG(st.st_mode) and st.st_mode & 0o077:
            raise FileRefused(
                f"{what} {path} is readable by others (mode {_mode(st)}); it is a secret, so murmur "
                f"refuses to use it. Run: chmod 600 {path}"
            )
        # One byte over the limit tells "too large" from "exactly at the limit",
        # and never reads more than that from an endless device.
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileRefused(
            f"{what} {path} is too large (over {max_bytes} bytes), so it is not a {what}; check the path"
        )
    return data


def check_private_dir(path: Path, what: str) -> None:
    """FileRefused if group or others may write into directory `path` (they could swap its files)."""
    st = os.stat(path)
    if st.st_mode & 0o022:
        raise FileRefused(
            f"{what} {path} is writable by other users (mode {_mode(st)}): they could replace its "
            f"keys or database. Run: chmod 700 {path}"
        )


def replace_file(path: Path, data: bytes, mode: int = SECRET_MODE) -> None:
    """Write `path` with `data` atomically, replacing what was there (temporary file, fsync,
    rename, fsync of the directory): a kill -9 leaves the old file or the new one, whole."""
    tmp = _write_temp(path, data, mode)
    os.replace(tmp, path)
    fsync_dir(path.parent)
