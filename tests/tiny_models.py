"""Tiny random models of every supported architecture, written to GGUF by llama.cpp's own converter.

Real weights of other families cannot be downloaded here, so each architecture gets a random model with
its real transformers class (2 layers, hidden 64, 4 query and 2 key/value heads of 16), SmolLM2's
tokenizer (read from the bundled GGUF and saved with ``save_pretrained``) and a chat template of that
family. ``convert_hf_to_gguf.py`` from the llama-cpp-python source distribution (unpacked by the Makefile
into ``.venv/src/llama.cpp``) writes it as an F32 GGUF, exactly as a user's model would have been written.

Norm weights are randomized too (transformers initializes them to a constant), so a wrong norm offset
(gemma's ``1 + w``) cannot hide. That converter knows SmolLM2's pre-tokenizer as ``smollm`` but not the
hash of the tokenizer as transformers saves it, so :func:`to_gguf` names it instead of letting it refuse.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

UPSTREAM = Path(sys.prefix) / "src" / "llama.cpp"

#: Chat templates per family, reduced to what sealq sends (system, user and assistant turns).
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
LLAMA3 = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
          "{{ m['content'] }}<|eot_id|>{% endfor %}"
          "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
def _mistral_template() -> str:
    """Mistral Instruct's own template (as llama-cpp-python carries it): [INST] turns, replies end with EOS."""
    from llama_cpp.llama_chat_format import MISTRAL_INSTRUCT_CHAT_TEMPLATE

    return MISTRAL_INSTRUCT_CHAT_TEMPLATE


GEMMA = ("{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else 'user' }}\n"
         "{{ m['content'] }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")

#: model family -> (chat template, special tokens the template needs that SmolLM2's vocabulary lacks)
TEMPLATES = {
    "llama": (LLAMA3, ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]),
    "mistral": (_mistral_template(), []),
    "qwen2": (CHATML, []),
    "qwen3": (CHATML, []),
    "gemma3": (GEMMA, ["<start_of_turn>", "<end_of_turn>"]),
}
FAMILIES = tuple(TEMPLATES)
#: the GGUF architecture each family is written as (a Mistral model becomes a llama GGUF)
GGUF_ARCH = {f: ("llama" if f == "mistral" else f) for f in FAMILIES}
ARCHITECTURES = tuple(f for f in FAMILIES if GGUF_ARCH[f] == f)


def upstream() -> Path:
    """The unpacked llama.cpp converters; raises (a test failure, not a skip) when the install lacks them."""
    if not (UPSTREAM / "convert_hf_to_gguf.py").is_file():
        raise FileNotFoundError(f"{UPSTREAM}: llama.cpp's converters are not unpacked (run `make install`)")
    return UPSTREAM


def hf_config(arch: str, vocab_size: int, bos: int, eos: int):
    """A transformers config of family ``arch``: 2 layers, hidden 64, 4 heads of 16 (2 for keys/values)."""
    import transformers as tf

    # Mistral 7B and Qwen2.5-7B have a separate output layer; the others tie it to the embedding
    common = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=2048,
                  tie_word_embeddings=arch not in ("mistral", "qwen2"), bos_token_id=bos, eos_token_id=eos,
                  rms_norm_eps=1e-6)
    if arch == "llama":
        return tf.LlamaConfig(**common, rope_theta=10000.0)
    if arch == "mistral":
        return tf.MistralConfig(**common, rope_theta=1000000.0, sliding_window=None)
    if arch == "qwen2":
        return tf.Qwen2Config(**common, rope_theta=1000000.0)
    if arch == "qwen3":
        return tf.Qwen3Config(**common, rope_theta=1000000.0)
    if arch == "gemma3":
        # both layers sliding, as llama.cpp reads a gemma3 GGUF (5 sliding layers, then 1 global)
        return tf.Gemma3TextConfig(**common, query_pre_attn_scalar=16, sliding_window=512,
                                   layer_types=["sliding_attention"] * 2, hidden_activation="gelu_pytorch_tanh")
    raise ValueError(arch)


def build_hf(arch: str, tokenizer_dir: Path, out_dir: Path, seed: int = 0) -> Path:
    """Write a random ``arch`` model with the family's chat template to ``out_dir`` (safetensors + tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    template, extra = TEMPLATES[arch]
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    if extra:
        tok.add_special_tokens({"additional_special_tokens": extra})
    tok.chat_template = template
    config = hf_config(arch, len(tok), tok.bos_token_id, tok.eos_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:  # constant at init; random here so every norm rule is exercised
                p.copy_(torch.randn_like(p) * 0.1 + (0.0 if arch == "gemma3" else 1.0))
            elif p.ndim == 2:
                p.normal_(0.0, 0.08)
            else:
                p.normal_(0.0, 0.02)  # qwen2's q/k/v biases
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    tok.save_pretrained(str(out_dir))
    (out_dir / "arch.json").write_text(json.dumps({"arch": arch, "seed": seed}))
    return out_dir


_RUN = """
import runpy, sys
sys.path.insert(0, {root!r})
from conversion import base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "smollm"  # SmolLM2's pre-tokenizer, named
for argv in {argvs!r}:
    sys.argv = argv
    try:
        runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as e:
        if e.code not in (None, 0):
            raise
"""


def _run_upstream(script: str, argvs: list[list[str]]) -> None:
    """Run one of llama.cpp's converter scripts once per argument list, all in one Python process (each
    process spends most of its time importing torch and transformers)."""
    root = upstream()
    code = _RUN.format(root=str(root), argvs=[[str(root / script), *map(str, a)] for a in argvs])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{script} failed on {argvs}:\n{proc.stderr[-3000:]}")


def to_gguf(pairs: list[tuple[Path, Path]]) -> None:
    """Convert each ``(hf_dir, out)`` to an F32 GGUF with llama.cpp's ``convert_hf_to_gguf.py``."""
    _run_upstream("convert_hf_to_gguf.py", [[hf, "--outfile", out, "--outtype", "f32"] for hf, out in pairs])


def upstream_lora(jobs: list[tuple[Path, Path, Path]]) -> None:
    """Convert each ``(adapter_dir, hf_dir, out)`` with llama.cpp's ``convert_lora_to_gguf.py`` (F32, base
    config from ``hf_dir``)."""
    _run_upstream("convert_lora_to_gguf.py",
                  [["--base", hf, "--outfile", out, "--outtype", "f32", adapter] for adapter, hf, out in jobs])


def save_smollm_tokenizer(model_path: Path, out_dir: Path) -> Path:
    """SmolLM2's tokenizer as transformers reads it from the bundled GGUF, saved with ``save_pretrained``."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_path.parent), gguf_file=model_path.name)
    tok.save_pretrained(str(out_dir))
    return out_dir
