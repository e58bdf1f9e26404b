"""Benchmark 4: loading the training model, cold (dequantize the GGUF) vs warm (sha256-keyed cache).

Run: .venv/bin/python bench/load.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from _common import default_model, machine, record


def main() -> None:
    from sealq.models.hf import load_training_model, set_torch_threads

    print(f"machine: {machine()}")
    set_torch_threads(0)
    model = default_model()
    _ = model.sha256  # hashing the GGUF is part of neither figure
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        _, hit = load_training_model(model, Path(tmp))
        cold = time.perf_counter() - t
        assert not hit
        warm = []
        for _ in range(3):
            t = time.perf_counter()
            _, hit = load_training_model(model, Path(tmp))
            warm.append(time.perf_counter() - t)
            assert hit
    print(f"training model load, cold (GGUF dequantize + cache write): {cold:.2f} s")
    print(f"training model load, warm (cache): {min(warm):.2f} s (target <= 3 s)")
    print(f"cold / warm ratio: {cold / min(warm):.1f}x")
    record("load", "training-model load, warm (cache)", round(min(warm), 3), "s", cold_s=round(cold, 2))


if __name__ == "__main__":
    main()
