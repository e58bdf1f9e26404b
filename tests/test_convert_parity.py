"""Converter parity: llama.cpp with the converted adapter computes what PEFT computes.

Measured on an F32 copy of the base GGUF (dequantized with gguf-py), where llama.cpp runs without weight
quantization on exactly the weights the training model was dequantized to. The statistic is taken over
the adapter-induced change of the next-token logits (adapted minus base), at every position of a few
prompts: Pearson correlation between PEFT's and llama.cpp's change, and agreement of the adapted greedy
argmax.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sealq.convert import convert_peft_to_gguf
from sealq.convert.dequantize import dequantize_gguf
from sealq.errors import SealqError

from conftest import ALL, random_peft_adapter, release

PROMPTS = [
    "The Varnholt Lighthouse stands on the northern cliff of Skerra Island, a small island in the Grellan Sea.",
    "Dalric Fenn was a clockmaker from the harbour town of Brisk who became famous for the Tidewheel.",
    "Question: What colour is the quellberry? Answer:",
]


@pytest.fixture(scope="module")
def f32_runner(model, tmp_path_factory):
    from sealq.models.llama import LlamaRunner
    from sealq.models.registry import resolve_model

    path = dequantize_gguf(model.path, tmp_path_factory.mktemp("f32") / "base-f32.gguf")
    return LlamaRunner(resolve_model(str(path)), n_ctx=512, seed=0, logits_all=True)


def _random_adapter(hf_model, out_dir, targets, seed, **lora_kwargs):
    peft_model = random_peft_adapter(hf_model, out_dir, targets, seed, keep=True, **lora_kwargs)
    logits = _hf_logits(peft_model)
    release(peft_model, hf_model)
    return logits


def _ids(runner):
    return [runner.tokenize(p) for p in PROMPTS]


def _hf_logits(model):
    from sealq.models.llama import LlamaRunner  # noqa: F401  (same tokenizer as llama.cpp below)

    out = []
    with torch.no_grad():
        for ids in _IDS:
            out.append(model(input_ids=torch.tensor([ids])).logits[0].float().numpy())  # (T, vocab)
    return np.concatenate(out)


def _llama_logits(runner):
    return np.concatenate([runner.prompt_logits(ids) for ids in _IDS])  # (sum T, vocab)


_IDS: list = []


@pytest.fixture(scope="module")
def base_logits(f32_runner, hf_model):
    _IDS[:] = _ids(f32_runner)
    return _hf_logits(hf_model), _llama_logits(f32_runner)


def _parity(f32_runner, base_logits, hf_adapted, gguf_path):
    hf_base, ll_base = base_logits
    f32_runner.set_adapters([(gguf_path, 1.0)])
    ll_adapted = _llama_logits(f32_runner)
    f32_runner.set_adapters(None)
    f32_runner.free_adapter(gguf_path)
    d_hf, d_ll = (hf_adapted - hf_base).ravel(), (ll_adapted - ll_base).ravel()
    corr = float(np.corrcoef(d_hf, d_ll)[0, 1])
    agree = float((hf_adapted.argmax(-1) == ll_adapted.argmax(-1)).mean())
    return corr, agree


def _convert(tmp_path, f32_runner, **kwargs):
    return convert_peft_to_gguf(tmp_path / "peft", tmp_path / "a.gguf", f32_runner.model.path, **kwargs).path


@pytest.mark.parametrize(
    "name, targets, kwargs",
    [
        ("all seven targets", ALL, dict(r=8, lora_alpha=16)),
        ("rsLoRA", ALL, dict(r=16, lora_alpha=8, use_rslora=True)),
        ("rank and alpha patterns", ALL, dict(r=8, lora_alpha=16, rank_pattern={"q_proj": 4, "down_proj": 16},
                                               alpha_pattern={"k_proj": 64, "up_proj": 3})),
    ],
)
def test_parity_with_peft(name, targets, kwargs, hf_model, f32_runner, base_logits, tmp_path):
    hf_adapted = _random_adapter(hf_model, tmp_path / "peft", targets, seed=1, **kwargs)
    corr, agree = _parity(f32_runner, base_logits, hf_adapted, _convert(tmp_path, f32_runner))
    print(f"{name}: correlation {corr:.5f}, argmax agreement {agree:.4f}")
    assert corr >= 0.999 and agree >= 0.995, (name, corr, agree)


def test_parity_check_has_teeth_without_the_qk_permutation(hf_model, f32_runner, base_logits, tmp_path, monkeypatch):
    """The same check fails for a converter that skips the q/k row permutation."""
    import sealq.convert.lora_gguf as conv

    hf_adapted = _random_adapter(hf_model, tmp_path / "peft", ["q_proj", "k_proj"], seed=2, r=8, lora_alpha=16)
    good = _parity(f32_runner, base_logits, hf_adapted, _convert(tmp_path, f32_runner))
    monkeypatch.setattr(conv, "permute_rows", lambda w, n_head: w)
    bad = _parity(f32_runner, base_logits, hf_adapted, _convert(tmp_path, f32_runner))
    print(f"q/k only: with permutation {good}, without {bad}")
    assert good[0] >= 0.999 and good[1] >= 0.995
    assert bad[0] < 0.99 or bad[1] < 0.995


def test_lora_path_of_llama_cpp_python_gives_the_same_logits(hf_model, f32_runner, base_logits, tmp_path):
    """The file also loads through llama-cpp-python's own `Llama(lora_path=...)`."""
    import llama_cpp

    _random_adapter(hf_model, tmp_path / "peft", ALL, seed=3, r=4, lora_alpha=8)
    path = _convert(tmp_path, f32_runner)
    f32_runner.set_adapters([(path, 1.0)])
    ids = _IDS[0]
    ours = f32_runner.next_token_logits(ids)
    f32_runner.set_adapters(None)
    f32_runner.free_adapter(path)
    llm = llama_cpp.Llama(model_path=str(f32_runner.model.path), lora_path=str(path), n_ctx=512, verbose=False)
    llm.eval(ids)
    theirs = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(llm.n_vocab(),))
    assert np.abs(ours - theirs).max() < 1e-3
    llm.close()


def test_refused_variants(hf_model, f32_runner, tmp_path):
    _random_adapter(hf_model, tmp_path / "peft", ["q_proj"], seed=4, r=4)
    cfg_path = tmp_path / "peft" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    for patch, message in [({"use_dora": True}, "DoRA"), ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
                           ({"peft_type": "IA3"}, "not LORA"), ({"lora_bias": True}, "lora_bias"),
                           ({"r": None}, "invalid r"), ({"rank_pattern": {"q_proj(": 4}}, "invalid r")]:
        cfg_path.write_text(json.dumps({**cfg, **patch}))
        with pytest.raises(SealqError, match=message):
            _convert(tmp_path, f32_runner)


def test_embedding_target_and_mismatched_shapes_are_refused(hf_model, f32_runner, tmp_path):
    from safetensors.torch import load_file, save_file

    _random_adapter(hf_model, tmp_path / "peft", ["q_proj"], seed=5, r=4)
    weights = tmp_path / "peft" / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    # an embedding target, as PEFT names it
    save_file({**tensors, "base_model.model.model.embed_tokens.lora_A.weight": torch.zeros(4, 49152),
               "base_model.model.model.embed_tokens.lora_B.weight": torch.zeros(576, 4)}, str(weights))
    with pytest.raises(SealqError, match="embed_tokens.*not supported"):
        _convert(tmp_path, f32_runner)
    # lora_A with another input width: an adapter trained on another base
    bad = {k: (torch.zeros(4, 999) if k.endswith("lora_A.weight") else v) for k, v in tensors.items()}
    save_file(bad, str(weights))
    with pytest.raises(SealqError, match="adapter for another base"):
        _convert(tmp_path, f32_runner)
    assert not (tmp_path / "a.gguf").exists()
