"""How many CPU cores this process may use, and how many of them other processes keep busy: the one
source of every default thread count."""

from __future__ import annotations

import os
import time

__all__ = ["THREADS_ENV", "usable_cores", "busy_cores", "training_threads", "requested_threads", "default_threads",
           "cpu_flags",
           "bf16_supported"]

#: Environment variable that pins every thread count of a run (as ``--threads N`` does).
THREADS_ENV = "SEALQ_THREADS"


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity (``taskset``, cgroup cpusets, a scheduler's
    allocation), not the machine's core count, so torch and llama.cpp never start more threads than
    they may use (oversubscribed OpenMP threads spin against each other). Falls back to
    ``os.cpu_count()`` where affinity is not available (macOS, Windows)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cpu_times() -> dict[int, tuple[int, int]]:
    """Per CPU: (all jiffies, jiffies not used by processes: idle, iowait and steal, the time another
    virtual machine had the physical core, which fewer threads would not get back) from ``/proc/stat``."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *fields = line.split()
            if name.startswith("cpu") and name != "cpu":
                ticks = [int(x) for x in fields]
                out[int(name[3:])] = (sum(ticks[:8]), ticks[3] + ticks[4] + ticks[7])  # user..steal; idle, iowait, steal
    return out


def busy_cores(sample_s: float = 0.1) -> float:
    """How many of this process's cores other processes keep busy, in cores, over a short sample (this
    process's own CPU time in the window is subtracted): the busy share of each CPU in its affinity
    from ``/proc/stat``, summed. 0.0 where ``/proc/stat`` or affinity is not available (not Linux).

    Args:
        sample_s: the sampling window in seconds.
    """
    try:
        mine = os.sched_getaffinity(0)
        before, own0, t0 = _cpu_times(), time.process_time(), time.monotonic()
        time.sleep(sample_s)
        after, own1, t1 = _cpu_times(), time.process_time(), time.monotonic()
    except (AttributeError, OSError, ValueError):
        return 0.0
    busy = 0.0
    for cpu in mine & before.keys() & after.keys():
        total = after[cpu][0] - before[cpu][0]
        if total > 0:
            busy += 1.0 - (after[cpu][1] - before[cpu][1]) / total
    own = (own1 - own0) / max(t1 - t0, 1e-6)  # this process's own threads (a spinning thread pool) are not others'
    return max(0.0, busy - own)


def training_threads(cap: int = 0) -> int:
    """Threads that fit beside the other processes right now: the usable cores minus those other processes
    keep busy (rounded), at least 1 and at most ``cap`` (0: no cap but the usable cores). OpenMP threads that
    share a core with another busy process wait for each other at every operator: on 2 cores next to one
    busy loop, 2 threads trained at 12-20 tokens/s and 1 thread at 114 (``bench/contention.py``).

    Args:
        cap: the most threads to return (a run's recorded count); 0: :func:`usable_cores`.
    """
    free = max(1, usable_cores() - int(busy_cores() + 0.5))
    return min(cap, free) if cap > 0 else free


def requested_threads(option: int | None = None) -> int | None:
    """The thread count the user asked for: ``option`` (``--threads N``) if given, else the environment
    variable :data:`THREADS_ENV` (``SEALQ_THREADS``), else None (choose automatically).

    Raises:
        SealqError: ``option`` below 1, or ``SEALQ_THREADS`` not a whole number >= 1.
    """
    from sealq.errors import SealqError

    if option is not None:
        if option < 1:
            raise SealqError(f"--threads must be at least 1, got {option}")
        return option
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return None
    if not (raw.isascii() and raw.isdecimal()) or int(raw) < 1:
        raise SealqError(f"{THREADS_ENV} must be a whole number of threads, at least 1; got {raw!r}")
    return int(raw)


def default_threads() -> int:
    """Threads of a model loaded outside a run (``sealq ask``, tests): ``SEALQ_THREADS`` if set, else one per
    usable core (:func:`requested_threads`, :func:`usable_cores`).

    Raises:
        SealqError: ``SEALQ_THREADS`` is set to something else than a whole number >= 1.
    """
    return requested_threads() or usable_cores()


def cpu_flags() -> frozenset[str]:
    """The CPU's instruction-set flags (the ``flags`` line of ``/proc/cpuinfo``; empty where it is not
    available, i.e. not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def bf16_supported() -> bool:
    """Whether this CPU computes bfloat16 matmuls natively (the ``avx512_bf16`` or ``amx_bf16`` flag,
    :func:`cpu_flags`). Without it torch emulates bf16, slower than fp32."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})
