"""Every supported architecture, proven like the llama path: llama, qwen2, qwen3, gemma3.

Each gets a tiny random model of its real transformers class (and Mistral, written as a llama GGUF),
written to an F32 GGUF by llama.cpp's own ``convert_hf_to_gguf.py`` (see ``tiny_models.py``). Per family:

* the training side: the weights transformers loads from the GGUF equal the GGUF's tensors after the
  converter's transforms (``sealq.models.arch``), and the untransformed comparison fails where a rule exists;
* converter parity: a random PEFT adapter converted by ``sealq convert`` changes llama.cpp's logits as PEFT
  changes the training model's (correlation of the change >= 0.999, greedy argmax agreement >= 99%, near-ties
  within float noise counted as agreeing), and fails with a wrong rule;
* the same adapter converted by llama.cpp's ``convert_lora_to_gguf.py`` is tensor for tensor sealq's,
  except rsLoRA, where upstream ignores ``use_rslora`` (every lora_b off by sqrt(r)) and sealq is right;
* the inference side: the chat template and end-of-turn token come from the GGUF;
* a one-passage ``sealq loop --model tiny.gguf --k 1 --epochs 1`` completes and records rows.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ALL, random_peft_adapter, release
from tiny_models import ARCHITECTURES, FAMILIES, GGUF_ARCH, TEMPLATES, build_hf, save_smollm_tokenizer, to_gguf, upstream_lora

PROMPTS = [  # 177 positions with SmolLM2's tokenizer
    "The Varnholt Lighthouse stands on the northern cliff of Skerra Island, a small island in the Grellan Sea.",
    "Question: What colour is the quellberry? Answer:",
    "Dalric Fenn was a clockmaker from the harbour town of Brisk who became famous for the Tidewheel, a tide "
    "clock that kept time by the rise and fall of the sea. He built the first one in 1742 for the harbour "
    "master, who used it to schedule the fishing fleet, and later sold copies to three coastal cities.",
    "The quellberry grows only on the eastern slopes of the Marrow Hills, where fog settles every morning. "
    "Its fruit is pale violet, tastes of pepper and honey, and is dried to make a winter tea that the "
    "villagers of Oskel drink at the festival of lanterns in the last week of November each year.",
]
# a single near-tie of a random tiny model moves argmax agreement by 0.5%, not 2.6%


@pytest.fixture(scope="session")
def smollm_tokenizer(model, tmp_path_factory):
    return save_smollm_tokenizer(model.path, tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="session")
def tiny_ggufs(smollm_tokenizer, tmp_path_factory) -> dict:
    """family -> (HF folder, F32 GGUF), all converted in one run of ``convert_hf_to_gguf.py``'s process."""
    root = tmp_path_factory.mktemp("tiny")
    made = {f: (build_hf(f, smollm_tokenizer, root / f, seed=FAMILIES.index(f)), root / f"tiny-{f}.gguf")
            for f in FAMILIES}
    to_gguf(list(made.values()))
    return made


class Family:
    """One architecture's tiny model on both sides: HF folder, F32 GGUF, llama.cpp runner, training model."""

    def __init__(self, name, hf_dir, gguf_path, cache_root):
        from sealq.models.hf import load_training_model
        from sealq.models.llama import LlamaRunner
        from sealq.models.registry import resolve_model

        self.name, self.arch = name, GGUF_ARCH[name]
        self.hf_dir, self.gguf = hf_dir, gguf_path
        self.model = resolve_model(str(self.gguf))
        self.runner = LlamaRunner(self.model, n_ctx=512, seed=0, logits_all=True)
        self.hf, _ = load_training_model(self.model, cache_root)
        self.ids = [self.runner.tokenize(p) for p in PROMPTS]
        self.hf_base, self.ll_base = self.hf_logits(self.hf), self.ll_logits()

    def hf_logits(self, model):
        with torch.no_grad():
            return np.concatenate([model(input_ids=torch.tensor([ids])).logits[0].float().numpy() for ids in self.ids])

    def ll_logits(self, adapter=None):
        if adapter is not None:
            self.runner.set_adapters([(adapter, 1.0)])
        try:
            return np.concatenate([self.runner.prompt_logits(ids) for ids in self.ids])
        finally:
            if adapter is not None:
                self.runner.set_adapters(None)
                self.runner.free_adapter(adapter)


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tiny_ggufs, cache_root):
    return Family(request.param, *tiny_ggufs[request.param], cache_root)


def _gguf_tensors(path):
    import gguf

    reader = gguf.GGUFReader(str(path))
    return {t.name: gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
            .reshape(tuple(int(x) for x in reversed(t.shape.tolist()))) for t in reader.tensors}


def test_training_weights_are_the_gguf_after_the_converter_transforms(family):
    """transformers undid exactly the converter's transforms: HF weight -> (q/k rule, norm offset) == GGUF tensor.
    Where the architecture has a rule, leaving it out makes the comparison fail (the check has teeth)."""
    from transformers import AutoModelForCausalLM

    from sealq.models.arch import architecture
    from sealq.models.gguf_meta import read_base_info

    rules, base = architecture(family.arch), read_base_info(family.gguf)
    names = rules.tensor_name_map(base.n_blocks)
    tensors = _gguf_tensors(family.gguf)
    checked, untransformed_equal = 0, []
    for hf_name, w in family.hf.state_dict().items():
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name not in tensors:
            assert hf_name == "lm_head.weight" and family.hf.config.tie_word_embeddings, \
                f"{hf_name} -> {gguf_name} not in the GGUF"  # tied to the embedding
            continue
        w = w.numpy()
        expected = rules.to_gguf_weight(hf_name, w, base.n_head, base.n_head_kv)
        assert np.array_equal(expected, tensors[gguf_name]), (family.arch, hf_name, gguf_name)
        untransformed_equal.append(np.array_equal(w, tensors[gguf_name]))
        checked += 1
    original = AutoModelForCausalLM.from_pretrained(str(family.hf_dir), dtype=torch.float32).state_dict()
    loaded = family.hf.state_dict()
    worst = max(float((original[k] - loaded[k]).abs().max()) for k in original)
    print(f"{family.name}: {checked} tensors equal after the transforms; loaded vs original HF weights max |diff| {worst:.2e}")
    assert checked >= 2 * 9 + 2 and worst < 1e-6
    assert all(untransformed_equal) == (not rules.permute_qk and not rules.norm_offset), family.arch


def _argmax_agreement(hf, ll, noise: float) -> tuple[float, int]:
    """Share of positions where both sides pick the same greedy token, counting as agreement a position
    where HF's own logits for the two picks differ by at most ``noise``, the sides' largest logit difference
    on the base model (a random tiny model over a 49k vocabulary has near-ties; float noise decides those;
    a wrong adapter moves logits far more). Returns (share, ties counted)."""
    differ = np.flatnonzero(hf.argmax(-1) != ll.argmax(-1))
    ties = sum(1 for i in differ if hf[i].max() - hf[i, ll[i].argmax()] <= noise)
    return 1 - (len(differ) - ties) / len(hf), ties


def test_base_logits_of_both_sides_agree(family):
    """The training model and llama.cpp compute the same function before any adapter (the config values
    transformers does not read from the GGUF are passed by sealq: qwen3's head_dim, gemma3's query scale)."""
    hf, ll = family.hf_base, family.ll_base
    corr = float(np.corrcoef(hf.ravel(), ll.ravel())[0, 1])
    noise = float(np.abs(hf - ll).max())
    raw = float((hf.argmax(-1) == ll.argmax(-1)).mean())
    # a random tiny model has near-ties: every position where the sides pick different tokens must be one
    agree, ties = _argmax_agreement(hf, ll, 2 * noise)
    print(f"{family.name}: base logits correlation {corr:.7f}, max |diff| {noise:.2e}, argmax agreement "
          f"{raw:.4f} raw ({ties} ties within 2x that difference)")
    assert corr >= 0.99999 and noise < 0.01 and agree == 1.0


@pytest.mark.parametrize("kwargs", [dict(r=8, lora_alpha=16), dict(r=16, lora_alpha=8, use_rslora=True)],
                         ids=["plain", "rsLoRA"])
def test_converted_adapter_changes_llama_cpp_as_peft_changes_the_model(family, kwargs, tmp_path):
    from sealq.convert import convert_peft_to_gguf

    peft_model = random_peft_adapter(family.hf, tmp_path / "peft", ALL, seed=1, keep=True, **kwargs)
    hf_adapted = family.hf_logits(peft_model)
    release(peft_model, family.hf)
    out = convert_peft_to_gguf(tmp_path / "peft", tmp_path / "a.gguf", family.gguf).path
    ll_adapted = family.ll_logits(out)
    d_hf, d_ll = (hf_adapted - family.hf_base).ravel(), (ll_adapted - family.ll_base).ravel()
    corr = float(np.corrcoef(d_hf, d_ll)[0, 1])
    agree, ties = _argmax_agreement(hf_adapted, ll_adapted, float(np.abs(family.hf_base - family.ll_base).max()))
    size = float(np.linalg.norm(d_ll) / np.linalg.norm(d_hf))
    print(f"{family.name} {kwargs}: correlation {corr:.7f}, argmax agreement {agree:.4f} "
          f"({ties} differing positions are ties within the sides' numerical difference), size {size:.4f}")
    assert corr >= 0.999 and agree >= 0.99 and abs(size - 1) < 0.05


@pytest.mark.parametrize("family", ["qwen3"], indirect=True)
def test_parity_check_has_teeth_with_llamas_rule_on_another_architecture(family, tmp_path, monkeypatch):
    """Applying llama's q/k permutation to a qwen3 adapter (a wrong rule) fails the same check."""
    import dataclasses

    import sealq.models.arch as arch
    from sealq.convert import convert_peft_to_gguf

    peft_model = random_peft_adapter(family.hf, tmp_path / "peft", ["q_proj", "k_proj"], seed=4, keep=True, r=8,
                                     lora_alpha=16)
    hf_adapted = family.hf_logits(peft_model)
    release(peft_model, family.hf)
    monkeypatch.setitem(arch.ARCHITECTURES, "qwen3", dataclasses.replace(arch.ARCHITECTURES["qwen3"], permute_qk=True))
    out = convert_peft_to_gguf(tmp_path / "peft", tmp_path / "wrong.gguf", family.gguf).path
    ll_adapted = family.ll_logits(out)
    d_hf, d_ll = (hf_adapted - family.hf_base).ravel(), (ll_adapted - family.ll_base).ravel()
    corr = float(np.corrcoef(d_hf, d_ll)[0, 1])
    agree, _ = _argmax_agreement(hf_adapted, ll_adapted, float(np.abs(family.hf_base - family.ll_base).max()))
    print(f"qwen3 with llama's q/k permutation: correlation {corr:.4f}, argmax agreement {agree:.4f}")
    assert corr < 0.99


def test_sealq_convert_equals_llama_cpp_convert_lora_to_gguf(family, tmp_path):
    """Tensor for tensor on a plain adapter; on rsLoRA upstream's lora_b is sealq's / sqrt(r) (upstream's
    bug: it ignores use_rslora; the parity test above shows sealq's is PEFT's)."""
    import gguf

    from sealq.convert import convert_peft_to_gguf

    cases = [("plain", dict(r=8, lora_alpha=16)), ("rsLoRA", dict(r=16, lora_alpha=8, use_rslora=True))]
    for name, kwargs in cases:
        random_peft_adapter(family.hf, tmp_path / name, ALL, seed=2, **kwargs)
    upstream_lora([(tmp_path / name, family.hf_dir, tmp_path / f"{name}-upstream.gguf") for name, _ in cases])
    for name, kwargs in cases:
        ours = _gguf_tensors(convert_peft_to_gguf(tmp_path / name, tmp_path / f"{name}-sealq.gguf", family.gguf).path)
        theirs_path = tmp_path / f"{name}-upstream.gguf"
        theirs = _gguf_tensors(theirs_path)
        reader = gguf.GGUFReader(str(theirs_path))
        assert reader.fields["general.architecture"].contents() == family.arch
        assert sorted(ours) == sorted(theirs) and len(ours) == 2 * 7 * 2
        factor = math.sqrt(kwargs["r"]) if kwargs.get("use_rslora") else 1.0
        worst = 0.0
        for key, ours_t in ours.items():
            want = theirs[key] * np.float32(factor) if key.endswith("lora_b") else theirs[key]
            worst = max(worst, float(np.abs(ours_t - want).max() / (np.abs(want).max() or 1.0)))
        print(f"{family.name} {name}: {len(ours)} tensors, max relative difference {worst:.2e}"
              + (f" after scaling upstream's lora_b by sqrt(r) = {factor:g}" if factor != 1 else ""))
        assert worst <= (0.0 if factor == 1 else 1e-6), (family.arch, name, worst)
        if factor != 1:  # upstream as it is differs: its adapter is sqrt(r) times too weak
            b = next(k for k in ours if k.endswith("lora_b"))
            assert not np.allclose(ours[b], theirs[b], rtol=0.1)


def test_chat_template_and_end_of_turn_come_from_the_gguf(family):
    template, extra = TEMPLATES[family.name]
    runner = family.runner
    assert runner.llm.metadata["tokenizer.chat_template"] == template
    end = runner.llm._model.token_get_text(runner.end_of_turn)
    assert end == {"llama": "<|eot_id|>", "gemma3": "<end_of_turn>"}.get(family.name, "<|im_end|>")
    assert runner.completion_ids("Paris")[-1] == runner.end_of_turn
    prompt = runner.llm.detokenize(runner.chat_prompt_ids([{"role": "user", "content": "Question: 1?"}]),
                                   special=True).decode()
    assert "Question: 1?" in prompt and all(t in prompt for t in extra), prompt
    # a ReST-EM training pair (prompt ids + completion ids) is, as text, the template's own rendering of that
    # chat up to the end of the reply (as tokens the prompt is the one generation sees: "\n\n" before a reply
    # is one token there, while a whole rendered chat would split it)
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    llm = runner.llm
    chat = [{"role": "user", "content": "Question: 1?"}, {"role": "assistant", "content": "Paris"}]
    rendered = Jinja2ChatFormatter(template=template, eos_token=llm._model.token_get_text(llm.token_eos()),
                                   bos_token=llm._model.token_get_text(llm.token_bos()))(messages=chat).prompt
    pair = runner.chat_prompt_ids(chat[:1]) + runner.completion_ids("Paris")
    text = llm.detokenize(pair, special=True).decode()
    bos = llm._model.token_get_text(llm.token_bos())
    assert rendered.removeprefix(bos).startswith(text.removeprefix(bos)) and text.endswith("Paris" + end), (text, rendered)


def _cli(args, cache_root):
    from click.testing import CliRunner

    from sealq.cli import cli

    result = CliRunner().invoke(cli, args, catch_exceptions=False, env={"SEALQ_CACHE": str(cache_root)})
    assert result.exit_code == 0, (args[0], result.output)
    return result


@pytest.mark.parametrize("family", ARCHITECTURES, indirect=True)  # mistral is a llama GGUF: the llama path
def test_loop_eval_ask_and_convert_run_on_the_family(family, tmp_path, cache_root):
    """``--model PATH.gguf`` in every command: a one-passage loop (K=1, 1 epoch) and eval record their rows,
    ask answers with the loop's adapter attached, convert writes an adapter for this base."""
    import sqlite_utils

    ws = tmp_path / "ws"
    small = ["--passages", "1", "--k", "1", "--epochs", "1", "--workspace", str(ws), "--json"]
    loop = json.loads(_cli(["loop", "--model", str(family.gguf), *small], cache_root).stdout)
    evaluated = json.loads(_cli(["eval", "--model", str(family.gguf), *small], cache_root).stdout)
    db = sqlite_utils.Database(str(ws / "runs.db"))
    runs = {r["id"]: r for r in db["runs"].rows}
    assert {loop["run_id"], evaluated["run_id"]} == set(runs) and all(r["status"] == "done" for r in runs.values())
    counts = {t: db[t].count_where("run_id = ?", [loop["run_id"]]) for t in ("self_edits", "answers")}
    print(f"{family.name}: loop rows {counts}, eval rows {db['answers'].count_where('run_id = ?', [evaluated['run_id']])}")
    assert counts["self_edits"] == 1 and counts["answers"] > 0
    asked = _cli(["ask", "--run", loop["run_id"], "--passage", "0", "--workspace", str(ws), "--max-tokens", "4",
                  "Where is the lighthouse?"], cache_root)
    assert asked.stdout.strip()
    random_peft_adapter(family.hf, tmp_path / "peft", ["q_proj", "down_proj"], seed=3, r=4, lora_alpha=8)
    _cli(["convert", str(tmp_path / "peft"), str(tmp_path / "cli.gguf"), "--base", str(family.gguf)], cache_root)
    from sealq.models.gguf_meta import validate_adapter

    validate_adapter(tmp_path / "cli.gguf", family.gguf)
    listed = json.loads(_cli(["models", "--json", "--dir", str(tmp_path), "--dir", str(family.gguf.parent)],
                             cache_root).stdout)
    found = {Path(f["path"]).name: f for f in listed["found"]}
    assert found[family.gguf.name]["usable"] and found[family.gguf.name]["architecture"] == family.arch
    assert not found["cli.gguf"]["usable"] and found["cli.gguf"]["type"] == "adapter"


@pytest.mark.parametrize("family", ["gemma3"], indirect=True)
def test_without_sealq_overrides_transformers_computes_another_gemma3(family):
    """The gemma3 override has teeth: loaded by transformers alone (query_pre_attn_scalar left at 256),
    the training model no longer computes llama.cpp's function."""
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(str(family.gguf.parent), gguf_file=family.gguf.name,
                                                 dtype=torch.float32)
    hf = family.hf_logits(plain)
    corr = float(np.corrcoef(hf.ravel(), family.ll_base.ravel())[0, 1])
    print(f"gemma3 without sealq's overrides: base logits correlation {corr:.4f}")
    assert plain.config.query_pre_attn_scalar == 256 and corr < 0.99
