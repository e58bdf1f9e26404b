"""Benchmark 5: one inner loop (train, convert, hot-load, answer) at default settings, per-stage split.

A ~120-word passage with a 10-line self-edit (the bundled Varnholt passage and ten fixed lines); the
self-edit generation of the real loop is timed too, then the rest runs through the public inner step
(:func:`sealq.engine.step.inner_step`, the loop's own code). Median of 3 repeats; a JSON line goes to
``bench/results/inner_loop.jsonl``.

Run: .venv/bin/python bench/inner_loop.py
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from _common import machine, record

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


def self_edit_training_set():
    """The default model, the training sequences of the 10-line self-edit on the bundled passage 0 (token
    ids from llama.cpp, as the loop trains) and the training model: what the training benches share."""
    from sealq.engine.dataset import load_passages
    from sealq.engine.selfedit import training_texts
    from sealq.models.hf import default_cache_root, load_training_model
    from sealq.models.llama import LlamaRunner
    from sealq.models.registry import resolve_model

    model = resolve_model(None)
    runner = LlamaRunner(model, seed=0)
    seqs = [runner.tokenize(t) for t in training_texts(load_passages()[0], SELF_EDIT)]
    del runner
    hf, _ = load_training_model(model, default_cache_root())
    return model, seqs, hf


def one_step(models, config, passage, tmp: Path, i: int) -> tuple[float, dict, object]:
    """Generate one self-edit (timed, then discarded), then the public inner step on the fixed 10-line one."""
    from sealq.engine.selfedit import edit_messages
    from sealq.engine.step import StepInput, inner_step
    from sealq.metrics import Score
    from sealq.vocab import Source

    t0 = time.perf_counter()
    models.runner.chat(edit_messages(passage, "implications"), max_tokens=256, temperature=0.8, top_p=0.95, seed=i)
    stages = {"generate": time.perf_counter() - t0}
    result = inner_step(StepInput(passage, Source.TEACHER, seed=i, baseline=Score(0.0, 0.0, 0.0), out_dir=tmp,
                                  name=f"a{i}{config.train.precision}", text="\n".join(SELF_EDIT), prompt="bench"),
                        models, config)
    stages.update({row["stage"]: row["seconds"] for row in result.timings})
    return time.perf_counter() - t0, stages, result.adapter


def main() -> None:
    import dataclasses

    from sealq.engine.config import LoopConfig, resolve_precision
    from sealq.engine.dataset import load_passages
    from sealq.engine.step import load_models

    print(f"machine: {machine()}")
    base = LoopConfig()
    models = load_models(base)
    passage = load_passages()[0]
    precisions = sorted({"fp32", resolve_precision("auto")})  # both where the CPU has native bf16
    stages: dict = {p: {} for p in precisions}
    totals: dict = {p: [] for p in precisions}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(3):
            for p in precisions:  # in turn, so a slow spell of the machine hits both alike
                config = dataclasses.replace(base, train=dataclasses.replace(base.train, precision=p))
                total, split, a = one_step(models, config, passage, Path(tmp), i)
                totals[p].append(total)
                for k, v in split.items():
                    stages[p].setdefault(k, []).append(v)
    print(f"inner loop ({len(passage.context.split())}-word passage, 10-line self-edit, {a.n_sequences} sequences, "
          f"{a.train.tokens_trained} tokens trained, epochs={a.directive.epochs} r={a.directive.rank}):")
    for p in precisions:
        median = statistics.median(totals[p])
        print(f"  --precision {p}: median {median:.1f} s (target <= 15 s); "
              + ", ".join(f"{k} {statistics.median(v):.2f} s" for k, v in stages[p].items()))
        record("inner_loop", f"inner step median (generate + sealq.engine.step.inner_step), {p}", round(median, 2), "s",
               precision=p, auto=p == resolve_precision("auto"),
               stages={k: round(statistics.median(v), 3) for k, v in stages[p].items()})


if __name__ == "__main__":
    main()
