"""What bounds LoRA training: torch.profiler's top operators of one default-directive training (the
10-line self-edit of bench/inner_loop.py, 8 epochs, r 16, 7 targets), by self CPU time.

Run: .venv/bin/python bench/train_profile.py [--bf16]   (prints the table; docs/notes/2026-12-01-what-bounds-lora-training.md keeps one)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from _common import machine
from inner_loop import self_edit_training_set


def main() -> None:
    from torch.profiler import ProfilerActivity, profile

    from sealq.engine.config import TrainConfig
    from sealq.engine.train import train_lora

    print(f"machine: {machine()}")
    _model, seqs, hf = self_edit_training_set()
    cfg = TrainConfig(precision="bf16" if "--bf16" in sys.argv else "fp32")
    with tempfile.TemporaryDirectory() as tmp:
        train_lora(hf, seqs, cfg.default, cfg, Path(tmp) / "warm", seed=0)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            r = train_lora(hf, seqs, cfg.default, cfg, Path(tmp) / "a", seed=0)
    print(f"{cfg.precision}: {r.tokens_trained} tokens in {r.seconds:.1f} s = {r.tokens_trained / r.seconds:.1f} tok/s "
          f"({r.steps} steps)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=40))


if __name__ == "__main__":
    main()
