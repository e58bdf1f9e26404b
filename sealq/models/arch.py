"""The model architectures sealq trains and converts, and every per-architecture rule, in one place.

A GGUF names its architecture in ``general.architecture``. Tensor names come from gguf-py's own map for
that architecture (``gguf.get_tensor_name_map``, i.e. ``gguf.TensorNameMap`` over ``gguf.MODEL_TENSORS``);
what differs between architectures is only how llama.cpp's ``convert_hf_to_gguf.py`` transforms a
Hugging Face weight on its way into the GGUF:

============  ==========================================  =============================================
architecture  q/k projections                             RMSNorm weights
============  ==========================================  =============================================
llama         rows permuted to llama.cpp's rotary layout  as they are
qwen2         as they are (q/k/v biases as they are)      as they are
qwen3         as they are                                 as they are (q_norm/k_norm included)
gemma3        as they are                                 ``+ 1`` (Gemma3RMSNorm computes ``x * (1 + w)``)
============  ==========================================  =============================================

(``conversion/llama.py`` ``LlamaModel.modify_tensors``, ``conversion/qwen.py``, ``conversion/gemma.py``
``Gemma3Model.norm_shift`` in llama.cpp as vendored by llama-cpp-python 0.3.36.) transformers undoes both
when it loads the GGUF for training; the converter applies the q/k rule to a LoRA's ``lora_B`` rows. The
linear layers that take a LoRA have the same names in all four (:data:`sealq.vocab.LINEAR_TARGETS`).

transformers 5's GGUF loader also leaves two settings at its config defaults that llama.cpp reads from the
file, so the training model would compute something else than llama.cpp (measured on a tiny gemma3: logit
correlation 0.83 instead of 0.9999999); :meth:`Architecture.hf_overrides` passes them explicitly:

* qwen3: ``head_dim`` from ``qwen3.attention.key_length`` (transformers' default is 128);
* gemma3: ``query_pre_attn_scalar`` as llama.cpp computes the attention scale
  (``src/models/gemma3.cpp``): ``key_length``, or ``embedding_length / head_count`` for the 62-layer 27B
  (transformers' default is 256).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sealq.errors import SealqError

__all__ = ["Architecture", "ARCHITECTURES", "SUPPORTED_ARCHITECTURES", "architecture", "permute_rows"]


@dataclass(frozen=True)
class Architecture:
    """One supported ``general.architecture`` and the converter's transforms for it.

    Args:
        name: ``general.architecture`` as written in the GGUF (``llama``, ``qwen2``, ...).
        gguf_arch: the member name of ``gguf.MODEL_ARCH`` (``LLAMA``, ``QWEN2``, ...).
        permute_qk: q and k rows are stored in llama.cpp's rotary layout (see :func:`permute_rows`).
        norm_offset: added to every RMSNorm weight by ``convert_hf_to_gguf.py`` (1.0 for gemma3).
        families: the model families that ship as this architecture (for ``sealq models``).
    """

    name: str
    gguf_arch: str
    permute_qk: bool
    norm_offset: float
    families: str

    def tensor_name_map(self, n_blocks: int):
        """gguf-py's map from Hugging Face tensor names to GGUF names for this architecture."""
        return _name_map(self.gguf_arch, n_blocks)

    def hf_overrides(self, fields: dict) -> dict:
        """Config values to pass to transformers' ``from_pretrained(gguf_file=...)`` for this GGUF.

        Args:
            fields: the GGUF's metadata, key -> value (``GGUFMeta.fields``).

        Returns:
            HF config attribute -> value (empty when transformers reads everything it needs itself).
        """
        def key(suffix):
            return fields.get(f"{self.name}.{suffix}")

        if self.name == "qwen3" and key("attention.key_length"):
            return {"head_dim": int(key("attention.key_length"))}
        if self.name == "gemma3" and key("attention.key_length"):
            if key("block_count") == 62:
                return {"query_pre_attn_scalar": int(key("embedding_length")) // int(key("attention.head_count"))}
            return {"query_pre_attn_scalar": int(key("attention.key_length"))}
        return {}

    def to_gguf_weight(self, hf_name: str, weight: np.ndarray, n_head: int, n_head_kv: int) -> np.ndarray:
        """A Hugging Face weight as ``convert_hf_to_gguf.py`` writes it into the GGUF: the q/k row rule and the
        norm offset (RMSNorm weights, whose names end in ``norm.weight``). Used to check that transformers
        undid exactly these when it loaded the GGUF.

        Args:
            hf_name: e.g. ``model.layers.0.self_attn.q_proj.weight``.
            weight: numpy-order array of that tensor.
        """
        parts = hf_name.split(".")
        weight = self.to_gguf_rows(parts[-2] if len(parts) > 1 else "", weight, n_head, n_head_kv)
        if self.norm_offset and hf_name.endswith("norm.weight"):
            weight = weight + np.float32(self.norm_offset)
        return weight

    def to_gguf_rows(self, leaf: str, lora_b: np.ndarray, n_head: int, n_head_kv: int) -> np.ndarray:
        """A LoRA's ``lora_B`` (``(out, r)``) for the linear layer ``leaf`` (``q_proj``, ...) in the GGUF's
        row order: the q/k permutation for llama, unchanged otherwise."""
        if self.permute_qk and leaf == "q_proj":
            return permute_rows(lora_b, n_head)
        if self.permute_qk and leaf == "k_proj":
            return permute_rows(lora_b, n_head_kv)
        return lora_b


ARCHITECTURES = {
    a.name: a
    for a in [
        Architecture("llama", "LLAMA", True, 0.0, "Llama 2/3, Mistral 7B, SmolLM/SmolLM2, TinyLlama"),
        Architecture("qwen2", "QWEN2", False, 0.0, "Qwen2, Qwen2.5"),
        Architecture("qwen3", "QWEN3", False, 0.0, "Qwen3 (dense)"),
        Architecture("gemma3", "GEMMA3", False, 1.0, "Gemma 3 (text)"),
    ]
}
SUPPORTED_ARCHITECTURES = tuple(ARCHITECTURES)


def architecture(name: str, where: str = "") -> Architecture:
    """The rules of architecture ``name``.

    Raises:
        SealqError: ``name`` is not supported; the message names the supported ones.
    """
    if not isinstance(name, str) or name not in ARCHITECTURES:
        raise SealqError(f"{where + ': ' if where else ''}unsupported architecture {name!r} "
                         f"(sealq supports {', '.join(SUPPORTED_ARCHITECTURES)})")
    return ARCHITECTURES[name]


def permute_rows(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Apply llama.cpp's q/k row permutation (``convert_hf_to_gguf`` ``LlamaModel.permute``).

    Args:
        weight: ``(n_head * head_dim, ...)``: a q/k projection or the lora_B of one.
        n_head: heads of that projection (``n_head`` for q, ``n_head_kv`` for k).
    """
    rows = weight.shape[0]
    return (
        weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


_NAME_MAPS: dict = {}


def _name_map(gguf_arch: str, n_blocks: int):
    """gguf-py's tensor name map (building one takes ~15 ms: once per architecture and block count)."""
    key = (gguf_arch, n_blocks)
    if key not in _NAME_MAPS:
        import gguf

        _NAME_MAPS[key] = gguf.get_tensor_name_map(gguf.MODEL_ARCH[gguf_arch], n_blocks)
    return _NAME_MAPS[key]
