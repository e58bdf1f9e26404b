"""Adapter hot-swap: every state equals a fresh load of that state; swaps do not leak memory."""

from pathlib import Path

import numpy as np
import pytest
from conftest import random_peft_adapter

from sealq.convert import convert_peft_to_gguf
from sealq.errors import SealqError
from sealq.models.llama import LlamaRunner


@pytest.fixture(scope="module")
def two_adapters(hf_model, model, tmp_path_factory):
    d = tmp_path_factory.mktemp("swap")
    paths = []
    for i, targets in enumerate([["q_proj", "v_proj", "down_proj"], ["k_proj", "o_proj", "up_proj", "gate_proj"]]):
        random_peft_adapter(hf_model, d / f"peft{i}", targets, seed=10 + i, r=4, lora_alpha=8)
        paths.append(convert_peft_to_gguf(d / f"peft{i}", d / f"{'AB'[i]}.gguf", model.path).path)
    return paths


def _logits(runner, ids):
    return runner.next_token_logits(ids)


def test_swap_sequence_matches_fresh_loads(runner, model, two_adapters):
    a, b = two_adapters
    ids = runner.tokenize("The Kestavar Railway climbs from the port of Lindqvar to")
    states = [None, [(a, 1.0)], [(b, 1.0)], [(a, 1.0)], None, [(a, 0.5), (b, 0.7)], None]
    fresh = {}
    for state in states:
        key = repr(state)
        if key not in fresh:
            r = LlamaRunner(model, n_ctx=256, seed=0)
            r.set_adapters(state)
            fresh[key] = _logits(r, ids)
            r.llm.close()
    seen = []
    for state in states:
        runner.set_adapters(state)
        got = _logits(runner, ids)
        seen.append(got)
        assert np.abs(got - fresh[repr(state)]).max() < 1e-4, state
    runner.set_adapters(None)
    assert np.abs(seen[1] - seen[0]).max() > 1e-2 and np.abs(seen[2] - seen[1]).max() > 1e-2


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc for RSS")
def test_two_hundred_swaps_do_not_leak(runner, two_adapters):
    a, b = two_adapters
    for _ in range(10):  # warm up allocator pools
        for p in (a, b):
            with runner.adapter(p):
                pass
    before = _rss_mb()
    for i in range(200):
        with runner.adapter((a, b)[i % 2]):
            pass
    growth = _rss_mb() - before
    print(f"RSS growth over 200 swaps: {growth:.1f} MB")
    assert growth < 20


def test_mismatched_adapter_is_refused_before_llama_cpp(runner, two_adapters, tmp_path):
    """A wrong or truncated adapter is refused with a SealqError before llama.cpp sees it, and leaves the
    runner exactly as it was: the attached adapter stays attached (same logits), nothing new is loaded."""
    import gguf

    a = two_adapters[0]
    # an adapter whose lora_b has the wrong output size, as one trained for another base would
    w = gguf.GGUFWriter(str(tmp_path / "bad.gguf"), "llama")
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 8.0)
    w.add_tensor("blk.0.attn_q.weight.lora_a", np.zeros((4, 576), np.float32))
    w.add_tensor("blk.0.attn_q.weight.lora_b", np.zeros((999, 4), np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()  # noqa: E702
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(a.read_bytes()[:5000])
    ids = runner.tokenize("The Kestavar Railway climbs from the port of Lindqvar to")
    runner.set_adapters([(a, 1.0)])
    try:
        active, loaded = runner.active, set(runner._loaded)
        assert active == ((str(a.resolve()), 1.0),)
        want = _logits(runner, ids)
        with pytest.raises(SealqError, match="adapter for another base"):
            runner.set_adapters([(tmp_path / "bad.gguf", 1.0)])
        with pytest.raises(SealqError, match="not a readable GGUF adapter"):
            runner.set_adapters([(a, 1.0), (truncated, 1.0)])  # one bad file refuses the whole set
        # nothing half-attached or leaked: the state before the refusals, and the model answers as before
        assert runner.active == active and set(runner._loaded) == loaded
        assert np.abs(_logits(runner, ids) - want).max() < 1e-4
    finally:
        runner.free_adapter(a)
    assert runner.active == () and str(a.resolve()) not in runner._loaded
