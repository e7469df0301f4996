"""Facts about processes that executors and the episode timer read: memory, parent death."""

from __future__ import annotations

import os
import resource
import signal
import sys

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def process_rss_mb(pid: int | str = "self") -> float | None:
    """Resident set of a process from Linux /proc; None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * _PAGE / 2**20
    except (OSError, ValueError, IndexError):
        return None


def rss_mb() -> float:
    """This process's resident set (the lifetime peak where /proc is missing)."""
    current = process_rss_mb()
    if current is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return current


def die_with_parent(parent: int) -> None:
    """A worker whose parent was killed (kill -9) would otherwise go on computing an episode
    nobody will record, holding its memory; on Linux the kernel now kills it too."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the call above took effect
        os._exit(1)
