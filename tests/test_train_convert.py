"""PEFT LoRA training on the dequantized GGUF, conversion to a GGUF adapter, hot-swap into llama.cpp."""

import gguf
import numpy as np
import pytest

from sealq.convert import convert_peft_to_gguf
from sealq.convert.lora_gguf import permute_rows
from sealq.cores import bf16_supported
from sealq.engine.config import Directive, TrainConfig
from sealq.engine.selfedit import training_texts
from sealq.engine.train import lr_at, make_batches, train_lora
from sealq.errors import SealqError


def test_lr_schedule():
    assert lr_at(0, 10, 1.0, 0.1) == 1.0  # one warm-up step reaches the peak
    assert lr_at(9, 10, 1.0, 0.1) == pytest.approx(1.0 - 0.9 * 8 / 9)
    assert lr_at(0, 10, 1.0, 0.0) == 1.0
    assert all(lr_at(s, 50, 2e-3, 0.1) <= 2e-3 for s in range(50))


def test_batches_respect_token_budget_and_keep_every_sequence():
    import random

    seqs = [[i] * n for i, n in enumerate([20, 22, 25, 160, 30, 18, 300])]
    batches = make_batches(seqs, 100, random.Random(0))
    assert sorted(map(tuple, (s for b in batches for s in b))) == sorted(map(tuple, seqs))
    for b in batches:
        assert len(b) == 1 or len(b) * max(map(len, b)) <= 100


def test_permute_rows_is_llama_cpp_layout():
    # 2 heads of dim 4: rows (h0: 0 1 2 3, h1: 4 5 6 7) -> interleave the two halves of each head
    w = np.arange(8)[:, None].astype(np.float32)
    assert permute_rows(w, 2)[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


@pytest.fixture(scope="module")
def trained(hf_model, runner, passages, tmp_path_factory):
    """A small real adapter trained on passage 0 and converted."""
    out = tmp_path_factory.mktemp("adapter")
    p = passages[0]
    seqs = [runner.tokenize(t) for t in training_texts(p, ["The Varnholt lamp flashes green every nine seconds."])]
    res = train_lora(hf_model, seqs, Directive(epochs=2, lr=1e-3, rank=4), TrainConfig(), out / "peft", seed=0)
    conv = convert_peft_to_gguf(res.adapter_dir, out / "a.gguf", runner.model.path)
    return res, conv


def test_training_lowers_loss_and_leaves_base_unwrapped(trained, hf_model):
    res, _ = trained
    assert res.steps >= 2 and res.tokens_trained > 0
    assert res.losses[-1] < res.losses[0]
    assert not hasattr(hf_model, "peft_config")
    assert not any("lora" in n for n, _ in hf_model.named_parameters())


def test_converted_file_is_a_llama_cpp_lora_adapter(trained):
    res, conv = trained
    r = gguf.GGUFReader(str(conv.path))
    assert r.fields[gguf.Keys.General.TYPE].contents() == gguf.GGUFType.ADAPTER
    assert r.fields[gguf.Keys.Adapter.TYPE].contents() == "lora"
    assert r.fields[gguf.Keys.Adapter.LORA_ALPHA].contents() == pytest.approx(res.alpha)
    assert r.fields[gguf.Keys.General.ARCHITECTURE].contents() == "llama"
    names = {t.name for t in r.tensors}
    assert len(names) == 2 * 7 * 30  # 7 targets x 30 blocks, lora_a + lora_b
    assert "blk.0.attn_q.weight.lora_a" in names and "blk.29.ffn_down.weight.lora_b" in names


def test_hot_swap_changes_logits_and_detach_restores_them(trained, runner):
    _, conv = trained
    ids = runner.tokenize("The Varnholt lamp flashes")
    base = runner.next_token_logits(ids)
    runner.set_adapters([(conv.path, 1.0)])
    adapted = runner.next_token_logits(ids)
    runner.set_adapters(None)
    again = runner.next_token_logits(ids)
    runner.free_adapter(conv.path)
    assert np.abs(adapted - base).max() > 1e-2
    assert np.abs(again - base).max() < 1e-4


def test_adapter_for_another_base_is_refused(trained, tmp_path):
    import json

    res, _ = trained
    cfg = json.loads((res.adapter_dir / "adapter_config.json").read_text())
    (tmp_path / "adapter_config.json").write_text(json.dumps({**cfg, "use_dora": True}))
    (tmp_path / "adapter_model.safetensors").write_bytes((res.adapter_dir / "adapter_model.safetensors").read_bytes())
    with pytest.raises(SealqError, match="DoRA"):
        convert_peft_to_gguf(tmp_path, tmp_path / "x.gguf", trained[1].path.parent / "none.gguf")
    (tmp_path / "adapter_model.safetensors").write_bytes(b"garbage")
    (tmp_path / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(SealqError, match="corrupted adapter weights"):
        convert_peft_to_gguf(tmp_path, tmp_path / "x.gguf", trained[1].path.parent / "none.gguf")


def test_convert_cli_and_gguf_dump(trained, tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    from click.testing import CliRunner

    from sealq.cli import cli

    res, _ = trained
    out = tmp_path / "cli.gguf"
    r = CliRunner().invoke(cli, ["convert", str(res.adapter_dir), str(out), "--outtype", "f16"], catch_exceptions=False)
    assert r.exit_code == 0 and "210 LoRA tensor pairs" in r.stdout
    dump = subprocess.run([str(Path(sys.executable).parent / "gguf-dump"), str(out)], capture_output=True, text=True)
    assert dump.returncode == 0
    for expected in ("general.type", "adapter.type", "adapter.lora.alpha", "blk.0.attn_q.weight.lora_a", "F16"):
        assert expected in dump.stdout, expected
    bad = tmp_path / "dora"
    bad.mkdir()
    cfg = json.loads((res.adapter_dir / "adapter_config.json").read_text())
    (bad / "adapter_config.json").write_text(json.dumps({**cfg, "use_dora": True}))
    (bad / "adapter_model.safetensors").write_bytes((res.adapter_dir / "adapter_model.safetensors").read_bytes())
    r = CliRunner().invoke(cli, ["convert", str(bad), str(tmp_path / "x.gguf")])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "DoRA" in r.stderr
    assert not (tmp_path / "x.gguf").exists()


@pytest.mark.skipif(not bf16_supported(), reason="this CPU has no native bfloat16 (avx512_bf16 / amx_bf16)")
def test_bf16_training_learns_what_fp32_learns(trained, hf_model, runner, passages, tmp_path):
    """--precision bf16: the same sequences, seed and steps as the fp32 fixture; the loss curve follows
    fp32's (bf16 rounds the frozen base's matmuls, so close, not equal), the LoRA stays fp32, and the shared
    base model comes back exactly as it was (fp32 weights, its class's forwards)."""
    import torch

    fp32, _ = trained
    seqs = [runner.tokenize(t) for t in training_texts(passages[0], ["The Varnholt lamp flashes green every nine seconds."])]
    linears = [m for m in hf_model.modules() if isinstance(m, torch.nn.Linear)]
    before = [m.weight.detach().clone() for m in linears[:3]] + [linears[-1].weight.detach().clone()]
    res = train_lora(hf_model, seqs, Directive(epochs=2, lr=1e-3, rank=4), TrainConfig(precision="bf16"),
                     tmp_path / "bf16", seed=0)
    assert res.steps == fp32.steps and res.losses != fp32.losses  # bf16 really ran
    assert res.losses[0] == pytest.approx(fp32.losses[0], rel=0.02)  # before any update: rounding only
    assert res.losses == pytest.approx(fp32.losses, rel=0.10)  # measured: at most 5.3% apart over 4 steps
    assert res.losses[-1] < res.losses[0]
    from safetensors.torch import load_file

    assert {t.dtype for t in load_file(res.adapter_dir / "adapter_model.safetensors").values()} == {torch.float32}
    assert all("forward" not in vars(m) and m.weight.dtype == torch.float32 for m in linears)
    assert all(torch.equal(a, m.weight) for a, m in zip(before, linears[:3] + linears[-1:]))


def test_frozen_linears_in_bf16_multiply_in_bf16_and_come_back():
    """Inside the block a frozen linear's output is its bf16 product (cast back to the input's dtype); a
    trainable one (a LoRA A/B) is untouched; on exit the class's forward is back, also after an error."""
    import torch

    from sealq.engine.train import frozen_linears_in_bf16

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Linear(32, 8, bias=False))
    model[0].requires_grad_(False)
    x = torch.randn(5, 64)
    fp32 = model[0](x)
    bf16 = torch.nn.functional.linear(x.bfloat16(), model[0].weight.bfloat16(), model[0].bias.bfloat16()).float()
    with frozen_linears_in_bf16(model) as n:
        assert n == 1
        y = model[0](x)
        assert y.dtype == torch.float32 and torch.equal(y, bf16) and not torch.equal(y, fp32)
        assert "forward" not in vars(model[1])
    assert "forward" not in vars(model[0]) and torch.equal(model[0](x), fp32)
    with pytest.raises(RuntimeError), frozen_linears_in_bf16(model):
        raise RuntimeError("boom")
    assert "forward" not in vars(model[0])
