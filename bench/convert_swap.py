"""Benchmark: PEFT->GGUF conversion time, adapter hot-swap vs full model reload (default model).

Run: .venv/bin/python bench/convert_swap.py   (prints one line per figure)
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    from conftest import random_peft_adapter

    from sealq.convert import convert_peft_to_gguf
    from sealq.convert.lora_gguf import read_base_info
    from sealq.models.hf import default_cache_root, load_training_model, set_torch_threads
    from sealq.models.llama import LlamaRunner
    from sealq.models.registry import resolve_model

    model = resolve_model(None)
    set_torch_threads(0)
    hf, _ = load_training_model(model, default_cache_root())
    tmp = Path(tempfile.mkdtemp(prefix="sealq-bench-"))
    random_peft_adapter(hf, tmp / "peft", seed=0, r=16, lora_alpha=32)
    read_base_info(model.path)  # metadata parse is cached per base; measure conversions after it
    conv = []
    for i in range(5):
        t = time.perf_counter()
        convert_peft_to_gguf(tmp / "peft", tmp / f"a{i}.gguf", model.path)
        conv.append(time.perf_counter() - t)
    print(f"conversion (r=16, 7 targets x 30 blocks, f32): median {statistics.median(conv) * 1000:.1f} ms")

    runner = LlamaRunner(model, seed=0)
    ids = runner.tokenize("The Varnholt Lighthouse stands on")
    swaps = []
    for i in range(20):
        t = time.perf_counter()
        runner.set_adapters([(tmp / f"a{i % 5}.gguf", 1.0)])
        runner.next_token_logits(ids)
        runner.set_adapters(None)
        runner.free_adapter(tmp / f"a{i % 5}.gguf")
        swaps.append(time.perf_counter() - t)
    reloads = []
    for i in range(5):
        t = time.perf_counter()
        r = LlamaRunner(model, seed=0)
        r.set_adapters([(tmp / f"a{i}.gguf", 1.0)])
        r.next_token_logits(ids)
        r.llm.close()
        reloads.append(time.perf_counter() - t)
    s, r = statistics.median(swaps), statistics.median(reloads)
    print(f"hot-swap (load adapter, attach, one forward, detach, free): median {s * 1000:.1f} ms")
    print(f"full reload (base + adapter, one forward): median {r * 1000:.1f} ms")
    print(f"reload / swap ratio: {r / s:.1f}x")


if __name__ == "__main__":
    main()
