"""Benchmark 8: sealq's LoRA training loop against what a user would otherwise write: transformers'
``Trainer`` + PEFT with the settings its docs suggest for CPU (``use_cpu=True``, padding to the longest
sequence of each batch with ``DataCollatorForSeq2Seq``), measured in one run on the same sequences.

Both train the same LoRA (the default directive: r 16, alpha 32, lr 2e-3, 8 epochs, 7 targets) on the
same training sequences of one self-edit (title + each of ten lines, title + passage; token ids from
llama.cpp, as the loop trains), with a linear warm-up over 10% of the steps, AdamW without weight decay
and the same number of steps per epoch (the Trainer's batch size is chosen so). Each side runs twice,
alternating; the figures are the faster run of each: trained tokens/s (padding excluded), the ratio, and
the final loss (mean over the last epoch's steps), which must agree if both learned the same.

Both precisions, where the CPU has native bfloat16 (AVX512-BF16/AMX): sealq ``fp32`` and ``bf16`` (its
``--precision auto`` on such a CPU), the Trainer in fp32 and with ``bf16=True`` (the Trainer docs' mixed
precision on CPU: autocast). Ratios: same precision against same precision, and each side's choice on this
CPU (sealq ``auto`` against the Trainer in fp32, its default). Elsewhere fp32 only.

Run: .venv/bin/python bench/train_vs_trainer.py   (a JSON line goes to bench/results/train_vs_trainer.jsonl)
"""

from __future__ import annotations

import math
import random
import tempfile
import warnings
from pathlib import Path

from _common import machine, record
from inner_loop import self_edit_training_set


def sealq_side(hf, seqs, tmp: Path, seed: int, precision: str) -> dict:
    from sealq.engine.config import TrainConfig
    from sealq.engine.train import train_lora

    cfg = TrainConfig(precision=precision)
    r = train_lora(hf, seqs, cfg.default, cfg, tmp / f"sealq{seed}{precision}", seed=seed)
    return {"tokens": r.tokens_trained, "seconds": r.seconds, "final_loss": r.final_loss, "steps": r.steps}


def trainer_side(hf, tokenizer, seqs, steps_per_epoch: int, tmp: Path, seed: int, precision: str) -> dict:
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from sealq.engine.config import TrainConfig

    cfg = TrainConfig()
    d = cfg.default
    lora = LoraConfig(r=d.rank, lora_alpha=2 * d.rank, lora_dropout=0.0, bias="none",
                      target_modules=list(cfg.targets), task_type="CAUSAL_LM")
    model = get_peft_model(hf, lora)
    batch = math.ceil(len(seqs) / steps_per_epoch)
    args = TrainingArguments(
        output_dir=str(tmp / f"trainer{seed}{precision}"), use_cpu=True, bf16=precision == "bf16", per_device_train_batch_size=batch,
        num_train_epochs=d.epochs, learning_rate=d.lr, lr_scheduler_type="linear",
        warmup_steps=math.ceil(d.epochs * math.ceil(len(seqs) / batch) * cfg.warmup_fraction),
        weight_decay=0.0, logging_steps=1, save_strategy="no", report_to=[], seed=seed, dataloader_num_workers=0,
        disable_tqdm=True)
    data = [{"input_ids": list(s), "attention_mask": [1] * len(s), "labels": list(s)} for s in seqs]
    trainer = Trainer(model=model, args=args, train_dataset=data,
                      data_collator=DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100))
    try:
        metrics = trainer.train().metrics
    finally:
        model.unload()
        if hasattr(hf, "peft_config"):
            del hf.peft_config
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    epoch_steps = math.ceil(len(seqs) / batch)
    tokens = sum(len(s) for s in seqs) * d.epochs
    return {"tokens": tokens, "seconds": metrics["train_runtime"], "final_loss": sum(losses[-epoch_steps:]) / epoch_steps,
            "steps": trainer.state.global_step}


def main() -> None:
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from sealq.engine.config import resolve_precision
    from sealq.engine.train import make_batches
    from sealq.models.hf import set_torch_threads

    hf_logging.set_verbosity_error()
    warnings.simplefilter("ignore", FutureWarning)
    print(f"machine: {machine()}; torch threads: {set_torch_threads(0)}")
    model, seqs, hf = self_edit_training_set()
    tokenizer = AutoTokenizer.from_pretrained(str(model.path.parent), gguf_file=model.path.name)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    steps_per_epoch = len(make_batches(seqs, 192, random.Random(0)))
    auto = resolve_precision("auto")  # what sealq picks on this CPU, as the inner-step bench does
    precisions = ("fp32", auto) if auto != "fp32" else ("fp32",)
    sides = [(side, p) for p in precisions for side in ("sealq", "trainer")]
    runs: dict = {key: [] for key in sides}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (0, 1):  # alternating, so a slow spell of the machine hits every side alike
            for side, p in sides:
                runs[side, p].append(sealq_side(hf, seqs, Path(tmp), seed, p) if side == "sealq" else
                                     trainer_side(hf, tokenizer, seqs, steps_per_epoch, Path(tmp), seed, p))
    best = {k: max(v, key=lambda r: r["tokens"] / r["seconds"]) for k, v in runs.items()}
    rate = {k: b["tokens"] / b["seconds"] for k, b in best.items()}
    print(f"{len(seqs)} sequences, {sum(map(len, seqs))} tokens per epoch, {steps_per_epoch} steps per epoch")
    for (side, p), b in best.items():
        print(f"  {side} {p}: {rate[side, p]:.1f} tok/s ({b['tokens']} tokens in {b['seconds']:.1f} s, {b['steps']} steps), "
              f"final loss {b['final_loss']:.3f}; every run: "
              + ", ".join(f"{r['tokens'] / r['seconds']:.1f} tok/s loss {r['final_loss']:.3f}" for r in runs[side, p]))
    extra = {f"{side}_{p}_tok_s": round(rate[side, p], 1) for side, p in sides}
    extra.update({f"{side}_{p}_final_loss": round(best[side, p]["final_loss"], 4) for side, p in sides})
    for p in precisions:
        ratio = rate["sealq", p] / rate["trainer", p]
        print(f"sealq / Trainer, both {p}: {ratio:.2f}x")
        record("train_vs_trainer", f"training tokens/s, sealq over transformers.Trainer + PEFT, both {p}",
               round(ratio, 3), "x", steps_per_epoch=steps_per_epoch, **extra)
    ratio = rate["sealq", auto] / rate["trainer", "fp32"]
    print(f"sealq --precision auto ({auto}) / Trainer (fp32, its default): {ratio:.2f}x (target >= 2x)")
    record("train_vs_trainer", "training tokens/s, sealq --precision auto over transformers.Trainer + PEFT (fp32)",
           round(ratio, 3), "x", sealq_precision=auto, steps_per_epoch=steps_per_epoch, **extra)


if __name__ == "__main__":
    main()
