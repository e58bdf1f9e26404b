"""Benchmark: PEFT->GGUF conversion time, adapter hot-swap vs full model reload (default model).

Run: .venv/bin/python bench/convert_swap.py [f32|f16]   (prints one line per figure; f32 is what the loop writes)
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


OUTTYPE = sys.argv[1] if len(sys.argv) > 1 else "f32"  # the loop writes f32 adapters


def main() -> None:
    from _common import record
    from conftest import random_peft_adapter

    from sealq.convert import convert_peft_to_gguf
    from sealq.models.gguf_meta import read_base_info, validate_adapter
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
        convert_peft_to_gguf(tmp / "peft", tmp / f"a{i}.gguf", model.path, outtype=OUTTYPE)
        conv.append(time.perf_counter() - t)
    size = (tmp / "a0.gguf").stat().st_size / 2**20
    print(f"conversion (r=16, 7 targets x 30 blocks, {OUTTYPE}, {size:.1f} MiB): median {statistics.median(conv) * 1000:.1f} ms")

    runner = LlamaRunner(model, seed=0)
    ids = runner.tokenize("The Varnholt Lighthouse stands on")
    runner.next_token_logits(ids)
    # hot-swap as the loop does it: load a new adapter file, attach (KV cache cleared),
    # later detach and free it. The forward pass that follows is the same either way and not timed.
    swap_in, swap_out = [], []
    for i in range(20):
        path = tmp / f"a{i % 5}.gguf"
        t = time.perf_counter()
        runner.set_adapters([(path, 1.0)], validate=False)  # as the loop does after converting
        swap_in.append(time.perf_counter() - t)
        runner.next_token_logits(ids)
        t = time.perf_counter()
        runner.set_adapters(None)
        runner.free_adapter(path)
        swap_out.append(time.perf_counter() - t)
    # full reload: a new llama.cpp model (file already in the page cache) with the adapter attached
    reloads = []
    for i in range(5):
        t = time.perf_counter()
        r = LlamaRunner(model, seed=0)
        r.set_adapters([(tmp / f"a{i}.gguf", 1.0)], validate=False)
        reloads.append(time.perf_counter() - t)
        r.llm.close()
    s_in, s_out, r = statistics.median(swap_in), statistics.median(swap_out), statistics.median(reloads)
    print(f"hot-swap in (load adapter file + attach + clear KV): median {s_in * 1000:.1f} ms")
    print(f"hot-swap out (detach + free): median {s_out * 1000:.2f} ms")
    print(f"full reload (new llama.cpp model + adapter, warm page cache): median {r * 1000:.1f} ms")
    runner.set_adapters([(tmp / "a0.gguf", 1.0)])
    t = time.perf_counter()
    runner.set_adapters([(tmp / "a0.gguf", 1.0)])  # already loaded: attach only
    print(f"attach an already-loaded adapter: {(time.perf_counter() - t) * 1000:.2f} ms")
    runner.set_adapters(None)
    runner.free_adapter(tmp / "a0.gguf")
    validate_adapter(tmp / "a1.gguf", model.path)
    t = time.perf_counter()
    validate_adapter(tmp / "a1.gguf", model.path)
    print(f"validate an adapter file against the base (external adapters only): {(time.perf_counter() - t) * 1000:.1f} ms")
    print(f"reload / swap ratio: {r / (s_in + s_out):.1f}x (target >= 20x)")
    record("convert_swap", f"adapter hot-swap ({OUTTYPE}), reload over swap", round(r / (s_in + s_out), 2), "x",
           swap_in_ms=round(s_in * 1000, 2), swap_out_ms=round(s_out * 1000, 3), reload_ms=round(r * 1000, 1),
           convert_ms=round(statistics.median(conv) * 1000, 1))


if __name__ == "__main__":
    main()
