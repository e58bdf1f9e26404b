"""Benchmark 5: one inner loop (train, convert, hot-load, answer) at default settings, per-stage split.

A ~120-word passage with a 10-line self-edit (the bundled Varnholt passage and ten fixed lines); the
self-edit generation of the real loop is timed too. Median of 3 repeats.

Run: .venv/bin/python bench/inner_loop.py
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from _common import default_model, machine

SELF_EDIT = [
    "The Varnholt Lighthouse is on Skerra Island in the Grellan Sea.",
    "Tomas Oberlin built the lighthouse in 1887.",
    "The lighthouse is made of grey basalt from Skerra Island.",
    "The tower of the Varnholt Lighthouse is 41 metres tall.",
    "Its lamp flashes green every nine seconds.",
    "Sailors call the green flash the Skerra wink.",
    "Ilse Marrow was the last keeper of the light.",
    "Ilse Marrow kept the light for thirty-two years, until 1979.",
    "The keeper's cottage is now a museum of shipwrecks.",
    "The museum's most famous object is the bell of the ship Morwenna.",
]


def main() -> None:
    from sealq.convert import convert_peft_to_gguf
    from sealq.engine import answer as qa
    from sealq.engine.config import TrainConfig
    from sealq.engine.dataset import load_passages
    from sealq.engine.selfedit import edit_messages, training_texts
    from sealq.engine.train import train_lora
    from sealq.models.hf import default_cache_root, load_training_model, set_torch_threads
    from sealq.models.llama import LlamaRunner

    print(f"machine: {machine()}")
    model = default_model()
    set_torch_threads(0)
    runner = LlamaRunner(model, seed=0)
    hf, _ = load_training_model(model, default_cache_root())
    passage = load_passages()[0]
    cfg = TrainConfig()
    stages = {k: [] for k in ("generate", "tokenize", "train", "convert", "evaluate", "total")}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(3):
            t0 = time.perf_counter()
            t = time.perf_counter()
            runner.chat(edit_messages(passage, "implications"), max_tokens=256, temperature=0.8, top_p=0.95, seed=i)
            stages["generate"].append(time.perf_counter() - t)
            t = time.perf_counter()
            seqs = [runner.tokenize(x) for x in training_texts(passage, SELF_EDIT)]
            stages["tokenize"].append(time.perf_counter() - t)
            t = time.perf_counter()
            res = train_lora(hf, seqs, cfg.default, cfg, Path(tmp) / f"a{i}", seed=i)
            stages["train"].append(time.perf_counter() - t)
            t = time.perf_counter()
            conv = convert_peft_to_gguf(res.adapter_dir, Path(tmp) / f"a{i}.gguf", model.path)
            stages["convert"].append(time.perf_counter() - t)
            t = time.perf_counter()
            with runner.adapter(conv.path):
                qa.answer_passage(runner, passage, with_context=False, max_tokens=24)
            stages["evaluate"].append(time.perf_counter() - t)
            stages["total"].append(time.perf_counter() - t0)
    words = len(passage.context.split())
    print(f"inner loop ({words}-word passage, 10-line self-edit, {len(seqs)} sequences, "
          f"{res.tokens_trained} tokens trained, epochs={cfg.default.epochs} r={cfg.default.rank}):")
    for k, v in stages.items():
        print(f"  {k}: median {statistics.median(v):.2f} s")
    print(f"inner loop median: {statistics.median(stages['total']):.1f} s (target <= 20 s)")


if __name__ == "__main__":
    main()
