"""Benchmark: the same `sealq eval` run in one process (N=1, T=all cores) and on Ray workers (N workers x
T=1 thread), wall time ratio, the two tables and their rows compared; then a plain estimate for N workers
on a 16- and a 64-core machine from the measured per-step time and the driver's cost per result.

Default: the first 20 passages of ../shared/data/squad-dev/squad.json, K=2 (eval: passage-only LoRA and
2 self-edits per passage, fixed training settings). The two runs differ in torch's thread count (2 vs 1),
so their LoRA weights differ in the last float bits and an answer can flip; the tests show that equal
threads give equal rows (tests/test_workers.py). JSON lines go to ``bench/results/scale_out.jsonl``.

Run: .venv/bin/python bench/scale_out.py [--passages 20] [--k 2] [--workers 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from _common import machine, record

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad-dev" / "squad.json"


def eval_config(passages: int, k: int):
    from sealq.engine.config import (
        PAPER_EDIT_TYPES,
        PAPER_TEMPERATURE,
        Directive,
        EvalConfig,
        LoopConfig,
        SelfEditConfig,
        TrainConfig,
    )

    return LoopConfig(data=str(DATA), passages=passages, passage_only=True,
                      selfedit=SelfEditConfig(k=k, edit_types=PAPER_EDIT_TYPES, temperature=PAPER_TEMPERATURE, directives="off"),
                      train=TrainConfig(default=Directive()), eval=EvalConfig())


class RssSampler:
    """Peak resident memory of the Ray worker processes (children of this process named ray::StepWorker)."""

    def __init__(self):
        self.peak_worker, self.peak_driver, self._stop = 0, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import psutil

        me = psutil.Process()
        while not self._stop.wait(2.0):
            self.peak_driver = max(self.peak_driver, me.memory_info().rss)
            for p in me.children(recursive=True):
                try:
                    if "StepWorker" in " ".join(p.cmdline()):
                        self.peak_worker = max(self.peak_worker, p.memory_info().rss)
                except Exception:  # noqa: BLE001  (a process that just ended)
                    continue

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class DriverClock:
    """Wall time the driver spends on results: writing a worker's adapter files (``workers._unpack``) and
    recording (``passage._commit``), wrapped around sealq's own functions for the duration of a run."""

    def __init__(self):
        self.seconds, self._saved = 0.0, []

    def _wrap(self, module, name):
        fn = getattr(module, name)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0

        self._saved.append((module, name, fn))
        setattr(module, name, timed)

    def __enter__(self):
        from sealq.engine import passage, workers

        self._wrap(passage, "_commit")
        self._wrap(workers, "_unpack")
        return self

    def __exit__(self, *exc):
        for module, name, fn in self._saved:
            setattr(module, name, fn)


def timed_run(config, ws: Path, scale=None) -> dict:
    from sealq.engine.loop import run_loop

    t0, c0 = time.perf_counter(), time.process_time()
    with DriverClock() as driver:
        summary = run_loop(config, ws, command="eval", scale=scale)
    return {"wall": time.perf_counter() - t0, "driver_cpu": time.process_time() - c0, "driver_s": driver.seconds,
            "summary": summary}


def step_seconds(ws: Path) -> list[float]:
    """Wall seconds of each recorded inner step (the sum of its stage timings)."""
    import sqlite_utils

    db = sqlite_utils.Database(str(ws / "runs.db"))
    return [r[0] for r in db.execute("select sum(seconds) from timings where self_edit_id is not null "
                                     "group by self_edit_id")]


def compare_rows(a: Path, b: Path) -> dict:
    """Per table of :mod:`sealq.analysis.snapshot`: rows, and rows of A not in B."""
    import sqlite_utils

    from sealq.analysis.snapshot import TABLES, snapshot

    sa, sb = (snapshot(sqlite_utils.Database(str(w / "runs.db"))) for w in (a, b))
    return {t: {"rows": len(sa[t]), "differ": sum(r not in sb[t] for r in sa[t])} for t in TABLES}


def estimate(step_s: float, driver_s: float, n: int) -> float:
    """Speed-up of n one-thread workers over one: n while the driver keeps up, else step_s / driver_s
    (the driver records results one at a time). Memory bandwidth and the object store are not modelled."""
    return min(float(n), step_s / driver_s)


def main() -> None:
    from sealq.engine.config import ScaleConfig

    ap = argparse.ArgumentParser()
    ap.add_argument("--passages", type=int, default=20)
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", metavar="DIR", help="write the two workspaces here and keep them (default: a temporary folder)")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    config = eval_config(args.passages, args.k)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        one, many = root / "one", root / "many"
        a = timed_run(config, one)
        print(f"one process: {a['wall']:.0f} s")
        with RssSampler() as rss:
            b = timed_run(config, many, ScaleConfig(workers=args.workers, threads_per_worker=1))
        print(f"{args.workers} workers x 1 thread: {b['wall']:.0f} s")
        report(args, a, b, rss, step_seconds(one), step_seconds(many), compare_rows(one, many))


def report(args, a: dict, b: dict, rss: RssSampler, steps_a: list, steps_b: list, rows: dict) -> None:
    ratio = a["wall"] / b["wall"]
    n_results = len(steps_b) + args.passages
    driver_per_result = b["driver_s"] / n_results
    step_b = statistics.mean(steps_b)
    print(f"speed-up {ratio:.2f}x; mean step {statistics.mean(steps_a):.1f} s (1 process, all cores) vs "
          f"{step_b:.1f} s (a worker, 1 thread); driver {driver_per_result * 1000:.0f} ms per result writing "
          f"adapter files and recording ({b['driver_s']:.1f} s in all; driver CPU {b['driver_cpu']:.1f} s, "
          "model loading included)")
    print(f"peak RSS: a worker {rss.peak_worker / 2**30:.2f} GiB, the driver {rss.peak_driver / 2**30:.2f} GiB")
    for t, r in rows.items():
        print(f"  {t}: {r['rows']} rows, {r['differ']} differ")
    for name in a["summary"]["eval"]["conditions"]:
        ca, cb = (x["summary"]["eval"]["conditions"][name]["contains"] for x in (a, b))
        print(f"  {name}: contains {ca['estimate']:.3f} (one process) vs {cb['estimate']:.3f} (workers)")
    for cores in (16, 64):
        est = estimate(step_b, driver_per_result, cores)
        print(f"estimate, {cores} cores, {cores} one-thread workers: {est:.1f}x one worker ({est / cores:.2f} per core)")
        record("scale_out", f"estimate_{cores}_cores", round(est, 2), "x", step_s=round(step_b, 2),
               driver_s_per_result=round(driver_per_result, 4))
    record("scale_out", f"workers{args.workers}_vs_one_process", round(ratio, 3), "x",
           one_process_s=round(a["wall"], 1), workers_s=round(b["wall"], 1), passages=args.passages, k=args.k,
           worker_rss_gib=round(rss.peak_worker / 2**30, 3), driver_rss_gib=round(rss.peak_driver / 2**30, 3),
           rows=rows)


if __name__ == "__main__":
    main()
