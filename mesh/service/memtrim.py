"""Giving freed heap memory back to the system after a burst of connections.

A burst of clients (a flood of half-sent bodies, or simply many uploads at
once) leaves their buffers freed but still held by the C allocator: glibc's
malloc keeps freed memory inside its heap and the process's resident size
stays at its peak. malloc_trim(0) returns the free pages. Elsewhere (musl,
macOS) only the collection runs. A request cut off mid-body leaves its buffers
in a reference cycle (the exception's traceback holds the frames that hold
them): a garbage collection frees them first.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc

_libc: ctypes.CDLL | None = None
_looked_up = False


def release_freed_memory() -> bool:
    """Collect cycles, then ask glibc to return freed heap pages to the system; False without glibc."""
    global _libc, _looked_up
    if not _looked_up:
        _looked_up = True
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name) if name else None
        except OSError:
            libc = None
        _libc = libc if libc is not None and hasattr(libc, "malloc_trim") else None
    gc.collect()
    if _libc is None:
        return False
    _libc.malloc_trim(0)
    return True
