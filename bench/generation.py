"""Benchmark 1: decode tokens/s, sealq's llama.cpp path vs transformers `generate`, same model and threads.

Run: .venv/bin/python bench/generation.py
"""

from __future__ import annotations

import time

from _common import THREADS, default_model, machine, record

PROMPT = [{"role": "user", "content": "Write a short story about a lighthouse keeper on a small island."}]
N_TOKENS = 128


def main() -> None:
    import torch

    from sealq.models.hf import default_cache_root, load_training_model, set_torch_threads
    from sealq.models.llama import LlamaRunner

    print(f"machine: {machine()}")
    model = default_model()
    runner = LlamaRunner(model, threads=THREADS, seed=0)
    runner.chat(PROMPT, max_tokens=8)  # warm-up
    best = 0.0
    for _ in range(3):
        g = runner.chat(PROMPT, max_tokens=N_TOKENS, temperature=0.0)
        best = max(best, g.tokens / g.seconds)
    print(f"llama.cpp ({model.path.name}) decode: {best:.1f} tok/s (prompt included, greedy, {N_TOKENS} tokens)")

    set_torch_threads(THREADS)
    hf, _ = load_training_model(model, default_cache_root())
    # the same chat-formatted prompt, tokenized by llama.cpp
    text = f"<|im_start|>user\n{PROMPT[0]['content']}<|im_end|>\n<|im_start|>assistant\n"
    ids = torch.tensor([runner.llm.tokenize(text.encode(), add_bos=True, special=True)])
    with torch.no_grad():
        hf.generate(ids, max_new_tokens=4, do_sample=False)
        t = time.perf_counter()
        out = hf.generate(ids, max_new_tokens=N_TOKENS, min_new_tokens=N_TOKENS, do_sample=False)
        dt = time.perf_counter() - t
    n = out.shape[1] - ids.shape[1]
    hf_tps = n / dt
    print(f"transformers generate (fp32, dequantized, {THREADS} threads): {hf_tps:.1f} tok/s")
    print(f"llama.cpp / transformers ratio: {best / hf_tps:.1f}x (target >= 5x)")
    record("generation", "decode tokens/s, llama.cpp over transformers generate", round(best / hf_tps, 2), "x",
           llama_tok_s=round(best, 1), transformers_tok_s=round(hf_tps, 1))


if __name__ == "__main__":
    main()
