"""PEFT LoRA adapter -> GGUF LoRA adapter for llama.cpp.

Format (llama.cpp ``src/llama-adapter.cpp``, gguf-py constants): ``general.type = adapter``,
``adapter.type = lora``, ``adapter.lora.alpha``, ``general.architecture`` equal to the base's; for each
adapted linear layer two tensors ``blk.N.<gguf name>.weight.lora_a`` (numpy shape ``(r, in)``, GGUF ne
``[in, r]``) and ``.lora_b`` (numpy ``(out, r)``). llama.cpp computes ``W x + (alpha / r) * B (A x)``
with ``r`` read from lora_a.

Two details make or break parity with PEFT:

* llama.cpp stores the q and k projections of llama models with their rows permuted (the rotary
  layout of ``convert_hf_to_gguf.py``); lora_B's rows (the output dimension) must get the same
  permutation, lora_A does not.
* llama.cpp scales every module by one global ``alpha / r``. PEFT's scale may differ per module
  (``rank_pattern``, ``alpha_pattern``) or be ``alpha / sqrt(r)`` (rsLoRA); the difference is folded
  into lora_B.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sealq.errors import SealqError
from sealq.models.gguf_meta import GGUFMeta

__all__ = ["convert_peft_to_gguf", "ConvertResult", "permute_rows", "read_base_info", "BaseInfo"]

_PEFT_PREFIX = "base_model.model."
_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")
_LLAMA_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
OUTTYPES = ("f32", "f16", "q8_0")


@dataclass(frozen=True)
class BaseInfo:
    """What the converter needs to know about the base GGUF.

    Args:
        architecture: ``general.architecture``.
        n_blocks: number of transformer blocks.
        n_head: attention heads (q).
        n_head_kv: key/value heads.
        shapes: GGUF tensor name -> numpy-order shape ``(out, in)`` of every base tensor.
    """

    architecture: str
    n_blocks: int
    n_head: int
    n_head_kv: int
    shapes: dict


@dataclass(frozen=True)
class ConvertResult:
    """A written adapter: path, tensor pairs written, alpha written, seconds taken."""

    path: Path
    n_pairs: int
    alpha: float
    seconds: float


def read_base_info(base_gguf: str | Path) -> BaseInfo:
    """Read architecture, block/head counts and tensor shapes from a base GGUF.

    Parsing a GGUF's metadata takes seconds (the vocabulary is 49k strings), so the result is cached
    per (path, size, mtime).

    Raises:
        SealqError: the file is not a readable GGUF model.
    """
    p = Path(base_gguf).resolve()
    try:
        st = p.stat()
    except OSError as e:
        raise SealqError(f"{base_gguf}: cannot read base model ({e.strerror or e})") from None
    return _read_base_info(str(p), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _read_base_info(base_gguf: str, _size: int, _mtime_ns: int) -> BaseInfo:
    import gguf

    meta = GGUFMeta(base_gguf)
    field = meta.field
    arch = field(gguf.Keys.General.ARCHITECTURE)
    if arch is None:
        raise SealqError(f"{base_gguf}: no general.architecture")
    n_head = field(gguf.Keys.Attention.HEAD_COUNT.format(arch=arch))
    n_head_kv = field(gguf.Keys.Attention.HEAD_COUNT_KV.format(arch=arch)) or n_head
    n_blocks = field(gguf.Keys.LLM.BLOCK_COUNT.format(arch=arch))
    return BaseInfo(arch, int(n_blocks), int(n_head), int(n_head_kv), meta.shapes())


def permute_rows(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Apply llama.cpp's q/k row permutation (``convert_hf_to_gguf.LlamaModel.permute``).

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


def _pattern_value(patterns: dict, module: str, default):
    """PEFT's per-module override lookup: a key matches the module name or a dotted suffix of it."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _read_adapter(adapter_dir: Path) -> tuple[dict, dict]:
    cfg_path = adapter_dir / "adapter_config.json"
    weights_path = adapter_dir / "adapter_model.safetensors"
    if not cfg_path.is_file():
        if (adapter_dir / "adapter_model.bin").exists():
            raise SealqError(f"{adapter_dir}: only adapter_model.bin (pickle) found; sealq reads safetensors only")
        raise SealqError(f"{adapter_dir}: no adapter_config.json (not a PEFT adapter folder)")
    if not weights_path.is_file():
        raise SealqError(f"{adapter_dir}: no adapter_model.safetensors")
    try:
        config = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as e:
        raise SealqError(f"{cfg_path}: unreadable ({e})") from None
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = {k: v.float().numpy() for k, v in load_file(str(weights_path)).items()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise SealqError(f"{weights_path}: corrupted adapter weights ({e})") from None
    return config, tensors


def _check_config(config, where: Path) -> None:
    if not isinstance(config, dict):
        raise SealqError(f"{where}/adapter_config.json: expected a JSON object")
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise SealqError(f"{where}: peft_type {config.get('peft_type')!r} is not LORA")
    if config.get("use_dora"):
        raise SealqError(f"{where}: DoRA adapters are not supported by llama.cpp")
    if config.get("modules_to_save"):
        raise SealqError(f"{where}: modules_to_save ({config['modules_to_save']}) cannot be expressed as a LoRA adapter")
    if config.get("lora_bias"):
        raise SealqError(f"{where}: lora_bias is not supported")


def convert_peft_to_gguf(adapter_dir: str | Path, out_path: str | Path, base_gguf: str | Path,
                         outtype: str = "f32") -> ConvertResult:
    """Convert a PEFT LoRA adapter folder into a llama.cpp GGUF LoRA adapter.

    Args:
        adapter_dir: folder with ``adapter_config.json`` and ``adapter_model.safetensors`` (never pickle).
        out_path: the ``.gguf`` file to write (written to a temporary name, fsynced, then renamed).
        base_gguf: the base model the adapter was trained on; gives the architecture, head counts (for
            the q/k permutation) and tensor shapes (to detect a mismatched base before inference).
        outtype: ``f32``, ``f16`` or ``q8_0`` (q8_0 where the row length allows it, else f32).

    Returns:
        What was written.

    Raises:
        SealqError: unsupported adapter variant (DoRA, modules_to_save, non-linear targets), unknown
            architecture, shapes that do not fit the base, unreadable or corrupted files.
    """
    import time

    import gguf

    t0 = time.perf_counter()
    adapter_dir, out_path = Path(adapter_dir), Path(out_path)
    if outtype not in OUTTYPES:
        raise SealqError(f"--outtype must be one of {', '.join(OUTTYPES)}, got {outtype!r}")
    config, tensors = _read_adapter(adapter_dir)
    _check_config(config, adapter_dir)
    base = read_base_info(base_gguf)
    if base.architecture != "llama":
        raise SealqError(f"{base_gguf}: architecture {base.architecture!r} is not supported by the converter (llama only)")
    arch = gguf.MODEL_ARCH.LLAMA
    name_map = gguf.get_tensor_name_map(arch, base.n_blocks)

    try:
        r_default = int(config.get("r", 8))
        alpha_default = float(config.get("lora_alpha", r_default))
        patterns = {k: {str(m): float(v) for m, v in (config.get(k) or {}).items()} for k in ("rank_pattern", "alpha_pattern")}
        for pattern in (m for p in patterns.values() for m in p):
            re.compile(pattern)
    except (TypeError, ValueError, AttributeError, re.error) as e:
        raise SealqError(f"{adapter_dir}/adapter_config.json: invalid r, lora_alpha, rank_pattern or alpha_pattern ({e})") from None
    rslora = bool(config.get("use_rslora"))

    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        m = _KEY.match(key)
        if m is None:
            raise SealqError(f"{adapter_dir}: tensor {key!r} is not a LoRA A/B weight (unsupported adapter layout)")
        module = m.group("module")
        module = module[len(_PEFT_PREFIX):] if module.startswith(_PEFT_PREFIX) else module
        pairs.setdefault(module, {})[m.group("ab")] = value

    writer_tensors = []
    for module, ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            raise SealqError(f"{adapter_dir}: module {module} lacks lora_{'A' if 'A' not in ab else 'B'}")
        leaf = module.rsplit(".", 1)[-1]
        if leaf not in _LLAMA_LINEAR:
            raise SealqError(f"{adapter_dir}: LoRA on {module!r} is not supported (only llama linear layers {', '.join(_LLAMA_LINEAR)})")
        gguf_name = name_map.get_name(module)
        if gguf_name is None:
            raise SealqError(f"{adapter_dir}: module {module!r} has no GGUF name for this base ({base.n_blocks} blocks)")
        a, b = ab["A"], ab["B"]  # (r, in), (out, r)
        weight_name = gguf_name + ".weight"
        if weight_name not in base.shapes:
            raise SealqError(f"{adapter_dir}: {weight_name} not in base model {base_gguf} (adapter for another base?)")
        out_f, in_f = base.shapes[weight_name]
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != in_f or b.shape[0] != out_f or a.shape[0] != b.shape[1]:
            raise SealqError(
                f"{adapter_dir}: {module} has A{tuple(a.shape)} B{tuple(b.shape)}, base {weight_name} is {(out_f, in_f)} "
                "(adapter for another base?)"
            )
        r = a.shape[0]
        r_m = int(_pattern_value(patterns["rank_pattern"], module, r_default))
        alpha_m = float(_pattern_value(patterns["alpha_pattern"], module, alpha_default))
        if r_m != r:
            raise SealqError(f"{adapter_dir}: {module} has rank {r} but the config says {r_m}")
        peft_scale = alpha_m / (math.sqrt(r) if rslora else r)
        llama_scale = alpha_default / r
        b = b * np.float32(peft_scale / llama_scale)
        if leaf == "q_proj":
            b = permute_rows(b, base.n_head)
        elif leaf == "k_proj":
            b = permute_rows(b, base.n_head_kv)
        writer_tensors.append((weight_name + ".lora_a", np.ascontiguousarray(a, dtype=np.float32)))
        writer_tensors.append((weight_name + ".lora_b", np.ascontiguousarray(b, dtype=np.float32)))
    if not writer_tensors:
        raise SealqError(f"{adapter_dir}: no LoRA tensors")

    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".gguf", dir=out_path.parent)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[arch])
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha_default)
        writer.add_string(gguf.Keys.General.NAME, f"sealq LoRA ({adapter_dir.name})")
        for name, data in writer_tensors:
            if outtype == "f16":
                writer.add_tensor(name, data.astype(np.float16))
            elif outtype == "q8_0" and data.shape[-1] % 32 == 0:
                q = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
                writer.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            else:
                writer.add_tensor(name, data)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out_path)
    except OSError as e:
        raise SealqError(f"{out_path}: cannot write adapter ({e.strerror or e})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return ConvertResult(out_path, len(writer_tensors) // 2, alpha_default, time.perf_counter() - t0)


def validate_adapter(adapter_gguf: str | Path, base_gguf: str | Path) -> None:
    """Check a GGUF LoRA adapter against a base model before llama.cpp sees it.

    llama.cpp refuses a mismatched adapter too, but only with a log line and a NULL; this names the
    problem: not an adapter, another architecture, a tensor the base lacks, or shapes that do not fit.

    Raises:
        SealqError: the file is unreadable, truncated, or does not fit the base.
    """
    import gguf

    meta = GGUFMeta(adapter_gguf, "GGUF adapter")
    field = meta.field
    if field(gguf.Keys.General.TYPE) != gguf.GGUFType.ADAPTER or field(gguf.Keys.Adapter.TYPE) != "lora":
        raise SealqError(f"{adapter_gguf}: not a GGUF LoRA adapter (general.type={field(gguf.Keys.General.TYPE)!r})")
    base = read_base_info(base_gguf)
    arch = field(gguf.Keys.General.ARCHITECTURE)
    if arch != base.architecture:
        raise SealqError(f"{adapter_gguf}: adapter for architecture {arch!r}, base {base_gguf} is {base.architecture!r}")
    for name, shape in meta.shapes().items():
        weight, _, part = name.rpartition(".")
        if weight not in base.shapes:
            raise SealqError(f"{adapter_gguf}: {weight} is not in base {base_gguf} (adapter for another base?)")
        out_f, in_f = base.shapes[weight]
        if (part == "lora_a" and shape[1] != in_f) or (part == "lora_b" and shape[0] != out_f):
            raise SealqError(f"{adapter_gguf}: {name} has shape {shape}, base {weight} is {(out_f, in_f)} "
                             "(adapter for another base?)")
