"""Benchmark 6: peak RSS (and wall time) of a whole default `sealq loop`, measured by the OS.

Runs the loop as a child process in a temporary workspace; ``--passages N`` shortens it.
Run: .venv/bin/python bench/peak_rss.py [--passages N]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, record


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--passages", type=int, default=None)
    args = ap.parse_args()
    print(f"machine: {machine()}")
    cmd = [str(Path(sys.executable).parent / "sealq"), "loop", "--json"]
    if args.passages:
        cmd += ["--passages", str(args.passages)]
    with tempfile.TemporaryDirectory() as ws:
        t = time.perf_counter()
        subprocess.run(cmd + ["--workspace", ws], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - t
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"sealq loop ({args.passages or 8} passages, K=3): wall {wall / 60:.1f} min")
    print(f"peak RSS: {peak_mb / 1024:.2f} GB (target <= 2.5 GB)")
    record("peak_rss", "peak RSS of sealq loop", round(peak_mb / 1024, 3), "GB", passages=args.passages or 8,
           wall_min=round(wall / 60, 2))


if __name__ == "__main__":
    main()
