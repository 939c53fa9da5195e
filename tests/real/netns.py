"""Network namespaces for the real-process tests: move one thread into a namespace.

setns(2) and unshare(2) with CLONE_NEWNET act on the calling thread only, and a
process started from that thread (an agent, `nft`, `ip`) is born in its
namespace. A test can so give its agents, and the firewall rules it adds, a
namespace of their own, whatever namespace pytest itself runs in, and never
touch the host's interfaces or tables.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000
_OWN_NETNS = "/proc/thread-self/ns/net"


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL("libc.so.6", use_errno=True)


def _setns(fd: int, what: str) -> None:
    if _libc().setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), f"setns into {what} failed")


def enter_netns(ns: str) -> None:
    """Move the calling thread (only it) into the named namespace `ns` (`ip netns add`)."""
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        _setns(fd, ns)
    finally:
        os.close(fd)


def netns_id() -> int:
    """An identity of the calling thread's network namespace (its inode)."""
    return os.stat(_OWN_NETNS).st_ino


@contextlib.contextmanager
def private_netns() -> Iterator[int]:
    """Run the block with the calling thread in a fresh namespace holding only `lo` (up).

    Yields the new namespace's id. Afterwards the thread is back where it was; the
    namespace goes away by itself once no process started inside it is left (no
    name to delete, nothing left behind if the test dies). Raises OSError when the
    kernel refuses (no CAP_SYS_ADMIN), so a caller can skip.
    """
    home = os.open(_OWN_NETNS, os.O_RDONLY)
    try:
        if _libc().unshare(CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")
        try:
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True, capture_output=True, timeout=10)
            yield netns_id()
        finally:
            _setns(home, "the test's own namespace")
    finally:
        os.close(home)
