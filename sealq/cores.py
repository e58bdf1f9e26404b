"""How many CPU cores this process may use: the one source of every default thread count."""

from __future__ import annotations

import os

__all__ = ["usable_cores"]


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity (``taskset``, cgroup cpusets, a scheduler's
    allocation), not the machine's core count, so torch and llama.cpp never start more threads than
    they may use (oversubscribed OpenMP threads spin against each other). Falls back to
    ``os.cpu_count()`` where affinity is not available (macOS, Windows)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
