"""Shared set-up for the bench scripts: the default model on both sides, thread count, a sample passage.

Thread count: :func:`sealq.cores.default_threads` (``SEALQ_THREADS``, else one per core this process may use:
its CPU affinity, so ``taskset -c 0`` benches one core), recorded with every figure."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sealq.cores import default_threads, usable_cores

THREADS = default_threads()


def machine() -> str:
    """One line naming the machine the figures were measured on."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {THREADS} threads, Python {platform.python_version()}"


def default_model():
    from sealq.models.registry import resolve_model

    return resolve_model(None)


def cpu_flags() -> list[str]:
    """The CPU's instruction-set flags that matter for these figures (:func:`sealq.cores.cpu_flags`)."""
    from sealq.cores import cpu_flags as all_flags

    wanted = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni")
    have = all_flags()
    return [f for f in wanted if f in have]


def record(bench: str, figure: str, value, unit: str, **extra) -> None:
    """Append one figure as a JSON line to ``bench/results/<bench>.jsonl``, with the machine it was measured
    on (CPU model and flags, cores) and the package versions, so figures from different machines compare."""
    import json
    import time

    from sealq.engine.loop import package_versions

    cpu = machine().split(",")[0]
    row = {"bench": bench, "figure": figure, "value": value, "unit": unit, "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "cpu": cpu, "cpu_flags": cpu_flags(), "cores": usable_cores(), "threads": THREADS,
           "versions": package_versions(), **extra}
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    with open(out / f"{bench}.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
