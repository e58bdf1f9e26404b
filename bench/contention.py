"""Benchmark 9: LoRA training on a busy machine. Training tokens/s alone and next to one competing
CPU-bound process (a Python busy loop, one core's worth), with each torch thread count from 1 to the
usable cores, and with the count sealq picks by default (``TrainConfig(threads=0)``: the usable cores minus
those other processes keep busy, sampled before each training, :func:`sealq.cores.training_threads`), at
the CLI's default precision (``auto``: bf16 where the CPU has it).

The figure is the slowdown next to the competitor with sealq's default threads against the best alone:
a fair share of 2 cores for 2 processes is 2x; the target is <= 2.5x (not the 5-20x that oversubscribed,
spinning OpenMP threads give).

Run: .venv/bin/python bench/contention.py   (a JSON line goes to bench/results/contention.jsonl)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, record
from inner_loop import self_edit_training_set


def train_rate(hf, seqs, threads: int, tmp: Path, tag: str) -> tuple[float, int]:
    """Trained tokens/s of one default-directive LoRA training (2 epochs) with ``threads`` torch threads
    (0: sealq's own choice), and the thread count used."""
    import torch

    from sealq.engine.config import Directive, TrainConfig, resolve_precision
    from sealq.engine.train import train_lora

    config = TrainConfig(threads=threads, precision=resolve_precision("auto"))  # the CLI's default precision
    r = train_lora(hf, seqs, Directive(epochs=2), config, tmp / tag, seed=0)
    return r.tokens_trained / r.seconds, torch.get_num_threads()


def main() -> None:
    from sealq.cores import usable_cores

    print(f"machine: {machine()}")
    _model, seqs, hf = self_edit_training_set()
    cores = usable_cores()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        train_rate(hf, seqs, cores, Path(tmp), "warm")
        for busy in (False, True):
            competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
            try:
                time.sleep(0.5)
                for threads in [*range(1, cores + 1), 0]:
                    rate, used = train_rate(hf, seqs, threads, Path(tmp), f"{busy}-{threads}")
                    label = "sealq default" if threads == 0 else f"{threads} threads"
                    rows[(busy, label)] = rate
                    print(f"{'next to a busy loop' if busy else 'alone':>20}, {label} ({used} used): {rate:.1f} tok/s")
            finally:
                if competitor is not None:
                    competitor.kill()
                    competitor.wait()
    alone = max(v for (busy, _), v in rows.items() if not busy)
    slowdown = alone / rows[(True, "sealq default")]
    print(f"slowdown next to one competitor, sealq default threads: {slowdown:.2f}x (target <= 2.5x; fair share "
          f"of {cores} cores: {cores / max(cores - 1, 1):.1f}x)")
    record("contention", "training slowdown next to one CPU-bound process (sealq default threads)", round(slowdown, 2),
           "x", **{f"{'busy' if b else 'alone'}_{label.replace(' ', '_')}_tok_s": round(v, 1) for (b, label), v in rows.items()})


if __name__ == "__main__":
    main()
