"""The process's open-files limit: raised at start as far as the hard limit allows.

Many systems start services with a soft limit of 1,024 descriptors and a much
higher hard limit. The node needs descriptors for its gossip streams, its API
connections, its database and artifacts; a soft limit reached means failed
accepts on every listener. Raising the soft limit needs no privilege.
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger("murmur.agent")

OPEN_FILES_TARGET = 8192  # enough for every cap the node sets, far below a typical hard limit


def raise_open_files_limit(target: int = OPEN_FILES_TARGET) -> int | None:
    """Raise the soft RLIMIT_NOFILE to min(hard, `target`) if below; the soft limit now (None: unlimited)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    want = target if hard == resource.RLIM_INFINITY else min(hard, target)
    if soft >= want:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError) as exc:
        log.warning(
            "cannot raise the open-files limit from %d to %d (%s); connection caps follow %d",
            soft,
            want,
            exc,
            soft,
        )
        return soft
    log.info(
        "open-files limit raised from %d to %d (hard limit %s)",
        soft,
        want,
        "unlimited" if hard == resource.RLIM_INFINITY else hard,
    )
    return want
