"""Benchmark 3: LoRA training tokens/s, and as a fraction of this machine's measured fp32 matmul peak.

FLOPs per trained token are counted analytically for a frozen base with LoRA: forward 2*P (P = weights
of every linear layer, lm_head included), backward 2*P for the activation gradients (frozen weights
need no weight gradient), plus attention (4*T*d per layer forward, twice that backward) and the LoRA
matmuls (2*r*(in+out) per target forward, three times that backward).

Run: .venv/bin/python bench/train_throughput.py [--bf16]

``--bf16`` also trains the same sequences with ``TrainConfig(precision="bf16")`` (the frozen base's
matmuls in bf16 where the CPU has AVX512-BF16/AMX; LoRA weights, optimizer state and everything else fp32;
see ``sealq.engine.train.frozen_linears_in_bf16``) and prints both throughputs, their ratio, both final
losses and the bf16 share of the measured bf16 matmul peak, measured in one run.
"""

from __future__ import annotations

import random
import sys
import time

from _common import THREADS, default_model, machine, record


def matmul_peak(n: int = 2048, repeats: int = 5, dtype=None) -> float:
    """Best GFLOP/s of an n x n matmul with torch on this machine (fp32 unless ``dtype`` says otherwise)."""
    import torch

    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def flops_per_token(hf, rank: int, targets, seq_len: int) -> float:
    import torch

    linear = sum(m.weight.numel() for m in hf.modules() if isinstance(m, torch.nn.Linear))
    cfg = hf.config
    attn = 4 * seq_len * cfg.hidden_size * cfg.num_hidden_layers
    lora = 0
    for name, m in hf.named_modules():
        if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets:
            lora += 2 * rank * (m.in_features + m.out_features)
    return 4 * linear + 3 * attn + 4 * lora


def main() -> None:
    import tempfile
    from pathlib import Path

    from sealq.engine.config import Directive, TrainConfig
    from sealq.engine.train import train_lora
    from sealq.models.hf import default_cache_root, load_training_model, set_torch_threads

    print(f"machine: {machine()}")
    set_torch_threads(THREADS)
    peak = matmul_peak()
    print(f"fp32 matmul peak (2048^3, torch): {peak:.1f} GFLOP/s")
    model = default_model()
    hf, _ = load_training_model(model, default_cache_root())
    rng = random.Random(0)
    # a realistic self-edit: ten ~25-token items and one ~160-token passage
    seqs = [[rng.randrange(1000, 40000) for _ in range(rng.randint(18, 32))] for _ in range(10)]
    seqs.append([rng.randrange(1000, 40000) for _ in range(160)])
    cfg = TrainConfig()
    d = Directive(epochs=4, lr=2e-3, rank=16)
    with tempfile.TemporaryDirectory() as tmp:
        train_lora(hf, seqs, Directive(epochs=1, lr=2e-3, rank=16), cfg, Path(tmp) / "w", seed=0)  # warm-up
        res = train_lora(hf, seqs, d, cfg, Path(tmp) / "a", seed=0)
    tps = res.tokens_trained / res.seconds
    mean_len = sum(map(len, seqs)) / len(seqs)
    gflop = flops_per_token(hf, d.rank, cfg.targets, int(mean_len)) / 1e9
    achieved = tps * gflop
    print(f"LoRA training (r=16, 7 targets, fp32, batch_tokens={cfg.batch_tokens}): {tps:.1f} tok/s")
    print(f"FLOPs per trained token: {gflop:.3f} GFLOP; achieved {achieved:.1f} GFLOP/s")
    print(f"fraction of measured peak: {achieved / peak:.0%} (target >= 60%)")
    record("train_throughput", "LoRA training fp32", round(tps, 1), "tok/s", final_loss=round(res.final_loss, 4),
           peak_gflops=round(peak, 1), share_of_peak=round(achieved / peak, 3))
    if "--bf16" in sys.argv:
        import torch

        bf_cfg = TrainConfig(precision="bf16")
        with tempfile.TemporaryDirectory() as tmp:
            train_lora(hf, seqs, Directive(epochs=1, lr=2e-3, rank=16), bf_cfg, Path(tmp) / "w", seed=0)  # warm-up
            bf = train_lora(hf, seqs, d, bf_cfg, Path(tmp) / "a", seed=0)
        bf_tps = bf.tokens_trained / bf.seconds
        bf_peak = matmul_peak(dtype=torch.bfloat16)
        print(f"LoRA training, frozen base in bf16: {bf_tps:.1f} tok/s = {bf_tps / tps:.2f}x fp32; final loss "
              f"{bf.final_loss:.4f} (fp32 {res.final_loss:.4f}); bf16 matmul peak {bf_peak:.1f} GFLOP/s, "
              f"share {bf_tps * gflop / bf_peak:.0%}")
        record("train_throughput", "LoRA training bf16 (frozen linears)", round(bf_tps, 1), "tok/s",
               final_loss=round(bf.final_loss, 4), vs_fp32=round(bf_tps / tps, 3), fp32_final_loss=round(res.final_loss, 4),
               bf16_peak_gflops=round(bf_peak, 1), share_of_bf16_peak=round(bf_tps * gflop / bf_peak, 3))


if __name__ == "__main__":
    main()
