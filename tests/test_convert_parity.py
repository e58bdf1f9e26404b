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
from conftest import ALL, SHARED, random_peft_adapter, release

from sealq.convert import convert_peft_to_gguf
from sealq.convert.dequantize import dequantize_gguf
from sealq.errors import SealqError

SHARED_CASES = SHARED.parent.parent / "cases"

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
    _PARITY_SIZE[:] = [float(np.linalg.norm(d_ll) / np.linalg.norm(d_hf))]  # 1.0: the change is as strong
    return corr, agree


_PARITY_SIZE: list = []  # size of llama.cpp's logit change relative to PEFT's, of the last _parity call


def _convert(tmp_path, f32_runner, **kwargs):
    return convert_peft_to_gguf(tmp_path / "peft", tmp_path / "a.gguf", f32_runner.model.path, **kwargs).path


@pytest.mark.parametrize(
    "name, targets, kwargs",
    [
        ("all seven targets", ALL, dict(r=8, lora_alpha=16)),
        ("rsLoRA", ALL, dict(r=16, lora_alpha=8, use_rslora=True)),
        ("rank and alpha patterns", ALL, dict(r=8, lora_alpha=16, rank_pattern={"q_proj": 4, "down_proj": 16},
                                               alpha_pattern={"k_proj": 64, "up_proj": 3})),
        # field cases: configs PEFT accepts with unusual values
        ("pattern keys as regexes", ALL, dict(r=8, lora_alpha=16, rank_pattern={r"layers\.[0-9]\.self_attn\.q_proj": 4},
                                              alpha_pattern={r"layers\.(1|2)\d\..*_proj": 2})),
        ("target_modules as a regex string", r".*\.(q_proj|up_proj)", dict(r=8, lora_alpha=16)),
        ("layers_to_transform", ["q_proj", "v_proj"], dict(r=8, lora_alpha=16, layers_to_transform=[0, 5, 29])),
        ("fan_in_fan_out on nn.Linear (PEFT turns it off)", ["q_proj", "o_proj"], dict(r=8, lora_alpha=16,
                                                                                       fan_in_fan_out=True)),
        ("negative alpha", ["q_proj", "down_proj"], dict(r=8, lora_alpha=-16)),
    ],
)
def test_parity_with_peft(name, targets, kwargs, hf_model, f32_runner, base_logits, tmp_path):
    hf_adapted = _random_adapter(hf_model, tmp_path / "peft", targets, seed=1, **kwargs)
    corr, agree = _parity(f32_runner, base_logits, hf_adapted, _convert(tmp_path, f32_runner))
    print(f"{name}: correlation {corr:.5f}, argmax agreement {agree:.4f}, size {_PARITY_SIZE[0]:.4f}")
    assert corr >= 0.999 and agree >= 0.995, (name, corr, agree)
    assert abs(_PARITY_SIZE[0] - 1) < 0.05, (name, _PARITY_SIZE)


def test_parity_of_an_adapter_config_without_lora_alpha(hf_model, f32_runner, base_logits, tmp_path):
    """No ``lora_alpha`` in adapter_config.json: PEFT uses its default (8), so r 16 means scale 0.5 - the
    converted adapter must be that strong, not alpha = r (twice too strong)."""
    import shutil

    from peft import PeftModel

    case = SHARED_CASES / "adapter-no-alpha"
    if not case.is_dir():
        pytest.skip(f"{case} not found (../shared beside the clone)")
    assert "lora_alpha" not in json.loads((case / "adapter_config.json").read_text())
    shutil.copytree(case, tmp_path / "peft")
    peft_model = PeftModel.from_pretrained(hf_model, str(case))
    scale = peft_model.base_model.model.model.layers[0].self_attn.q_proj.scaling["default"]
    hf_adapted = _hf_logits(peft_model)
    release(peft_model, hf_model)
    result = convert_peft_to_gguf(tmp_path / "peft", tmp_path / "a.gguf", f32_runner.model.path)
    corr, agree = _parity(f32_runner, base_logits, hf_adapted, result.path)
    print(f"no lora_alpha: PEFT scale {scale}, written alpha {result.alpha}, correlation {corr:.5f}, agreement {agree:.4f}")
    assert scale == 0.5 and result.alpha == 8.0
    assert corr >= 0.999 and agree >= 0.995
    assert abs(_PARITY_SIZE[0] - 1) < 0.05, _PARITY_SIZE  # alpha = r would make it about 2


def test_alpha_zero_adapter_is_a_no_op_in_llama_cpp_too(f32_runner, base_logits, tmp_path):
    """``lora_alpha: 0``: PEFT's scale is 0; llama.cpp would read alpha 0 as "no alpha" (scale 1), so the
    converter writes alpha = r and lora_b = 0. llama.cpp's logits with it equal the base's."""
    import shutil

    import gguf

    case = SHARED_CASES / "adapter-alpha-zero"
    if not case.is_dir():
        pytest.skip(f"{case} not found (../shared beside the clone)")
    shutil.copytree(case, tmp_path / "peft")
    result = convert_peft_to_gguf(tmp_path / "peft", tmp_path / "a.gguf", f32_runner.model.path)
    reader = gguf.GGUFReader(str(result.path))
    assert reader.fields[gguf.Keys.Adapter.LORA_ALPHA].contents() == 16.0
    lora_b = [t for t in reader.tensors if t.name.endswith("lora_b")]
    assert lora_b and all(not np.any(t.data) for t in lora_b)
    _hf_base, ll_base = base_logits
    f32_runner.set_adapters([(result.path, 1.0)])
    ll_adapted = _llama_logits(f32_runner)
    f32_runner.set_adapters(None)
    f32_runner.free_adapter(result.path)
    assert np.abs(ll_adapted - ll_base).max() < 1e-4
    from click.testing import CliRunner

    from sealq.cli import cli

    r = CliRunner().invoke(cli, ["convert", str(case), str(tmp_path / "cli.gguf"), "--base", str(f32_runner.model.path)])
    assert r.exit_code == 0 and "Warning: " in r.stderr and "lora_alpha is 0" in r.stderr, r.output


def test_parity_check_has_teeth_without_the_qk_permutation(hf_model, f32_runner, base_logits, tmp_path, monkeypatch):
    """The same check fails for a converter that skips the q/k row permutation."""
    import sealq.models.arch as arch

    hf_adapted = _random_adapter(hf_model, tmp_path / "peft", ["q_proj", "k_proj"], seed=2, r=8, lora_alpha=16)
    good = _parity(f32_runner, base_logits, hf_adapted, _convert(tmp_path, f32_runner))
    monkeypatch.setattr(arch, "permute_rows", lambda w, n_head: w)
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
    random_peft_adapter(hf_model, tmp_path / "peft", ["q_proj"], seed=4, r=4)  # no logits needed
    cfg_path = tmp_path / "peft" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    for patch, message in [({"use_dora": True}, "DoRA"), ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
                           ({"peft_type": "IA3"}, "not LORA"), ({"lora_bias": True}, "lora_bias"),
                           ({"r": None}, "r"), ({"rank_pattern": {"q_proj(": 4}}, "rank_pattern key .q_proj\\(. is not a regular expression"),
                           ({"r": 0}, "PEFT rejects"), ({"layer_replication": [[0, 4], [2, 6]]}, "layer_replication"),
                           ({"trainable_token_indices": [1, 2]}, "trainable_token_indices"),
                           ({"target_modules": "q_proj", "layers_to_transform": [0]}, "PEFT rejects"),
                           ({"alora_invocation_tokens": [5, 6]}, "activated LoRA"),
                           ({"target_parameters": ["mlp.experts.down_proj"]}, "target_parameters"),
                           # values PEFT's config accepts but its layers (or float32) cannot take
                           ({"r": float("inf")}, "r must be a positive integer, got inf"),
                           ({"r": "4"}, "r must be a positive integer, got '4'"),
                           ({"r": 4.5}, "r must be a positive integer"),
                           ({"rank_pattern": ["q_proj"]}, "rank_pattern must be an object"),
                           ({"lora_alpha": "16"}, "lora_alpha must be a finite number"),
                           ({"lora_alpha": True}, "lora_alpha must be a finite number"),
                           ({"lora_alpha": 1e39}, "float32 can hold"),
                           ({"lora_alpha": 1e-50}, "float32 can hold"),  # would round to 0 = "no alpha"
                           ({"alpha_pattern": {"q_proj": float("nan")}}, "alpha_pattern\\['q_proj'\\] must be"),
                           # a config that contradicts the weights: PEFT would drop the LoRA
                           ({"target_modules": ["v_proj"]}, "does not target"),
                           ({"layers_to_transform": [0]}, "model.layers.1.self_attn.q_proj, which adapter_config.json does not target")]:
        cfg_path.write_text(json.dumps({**cfg, **patch}))
        with pytest.raises(SealqError, match=message):
            _convert(tmp_path, f32_runner)
    cfg_path.write_text('{"x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(SealqError, match=r"unreadable .RecursionError"):
        _convert(tmp_path, f32_runner)
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(SealqError, match="is one of the input files"):  # would overwrite the base model
        convert_peft_to_gguf(tmp_path / "peft", f32_runner.model.path, f32_runner.model.path)
    with pytest.raises(SealqError, match="cannot write adapter"):  # a file where a folder is needed
        convert_peft_to_gguf(tmp_path / "peft", tmp_path / "peft" / "adapter_config.json" / "a.gguf",
                             f32_runner.model.path)


def test_two_adapters_in_one_weights_file_are_refused(hf_model, f32_runner, tmp_path):
    from safetensors.torch import load_file, save_file

    random_peft_adapter(hf_model, tmp_path / "peft", ["q_proj"], seed=6, r=4)  # no logits needed
    weights = tmp_path / "peft" / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    extra = {k.replace(".lora_A.weight", ".lora_A.other.weight"): v.clone() for k, v in tensors.items() if ".lora_A." in k}
    save_file({**tensors, **extra}, str(weights))
    with pytest.raises(SealqError, match=r"two lora_A tensors for model\.layers\.0\.self_attn\.q_proj"):
        _convert(tmp_path, f32_runner)


def test_embedding_target_and_mismatched_shapes_are_refused(hf_model, f32_runner, tmp_path):
    from safetensors.torch import load_file, save_file

    random_peft_adapter(hf_model, tmp_path / "peft", ["q_proj"], seed=5, r=4)  # no logits needed
    weights = tmp_path / "peft" / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    # an embedding target, as PEFT names it
    save_file({**tensors, "base_model.model.model.embed_tokens.lora_A.weight": torch.zeros(4, 49152),
               "base_model.model.model.embed_tokens.lora_B.weight": torch.zeros(576, 4)}, str(weights))
    with pytest.raises(SealqError, match=r"embed_tokens.*not supported"):
        _convert(tmp_path, f32_runner)
    # lora_A with another input width: an adapter trained on another base
    bad = {k: (torch.zeros(4, 999) if k.endswith("lora_A.weight") else v) for k, v in tensors.items()}
    save_file(bad, str(weights))
    with pytest.raises(SealqError, match="adapter for another base"):
        _convert(tmp_path, f32_runner)
    assert not (tmp_path / "a.gguf").exists()
