"""PEFT LoRA adapter -> GGUF LoRA adapter for llama.cpp (architectures llama, qwen2, qwen3, gemma3).

Format (llama.cpp ``src/llama-adapter.cpp``, gguf-py constants): ``general.type = adapter``,
``adapter.type = lora``, ``adapter.lora.alpha``, ``general.architecture`` equal to the base's; for each
adapted linear layer two tensors ``blk.N.<gguf name>.weight.lora_a`` (numpy shape ``(r, in)``, GGUF ne
``[in, r]``) and ``.lora_b`` (numpy ``(out, r)``). llama.cpp computes ``W x + (alpha / r) * B (A x)``
with ``r`` read from lora_a.

Two details make or break parity with PEFT:

* llama.cpp stores the q and k projections of llama models with their rows permuted (the rotary
  layout of ``convert_hf_to_gguf.py``); lora_B's rows (the output dimension) must get the same
  permutation, lora_A does not. qwen2, qwen3 and gemma3 keep Hugging Face's row order
  (:mod:`sealq.models.arch` states every per-architecture rule; tensor names come from gguf-py's map of
  the base's architecture).
* llama.cpp scales every module by one global ``alpha / r``. PEFT's scale may differ per module
  (``rank_pattern``, ``alpha_pattern``) or be ``alpha / sqrt(r)`` (rsLoRA); the difference is folded
  into lora_B. Every field of ``adapter_config.json`` is read by PEFT itself (``PeftConfig``), so
  missing fields take PEFT's defaults (``lora_alpha`` 8, not r) and pattern keys match as in PEFT.
  llama.cpp reads alpha 0 as "no alpha" (scale 1); PEFT's ``lora_alpha: 0`` (scale 0) is written as
  alpha = r with lora_b scaled by 0.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sealq.errors import SealqError
from sealq.models.arch import architecture, permute_rows
from sealq.models.gguf_meta import BaseInfo, read_base_info, validate_adapter
from sealq.vocab import LINEAR_TARGETS

if TYPE_CHECKING:
    from peft import LoraConfig

__all__ = ["convert_peft_to_gguf", "write_adapter", "ConvertResult", "permute_rows", "read_base_info", "BaseInfo", "validate_adapter", "read_lora_config",
           "module_rank_alpha", "peft_scale", "written_alpha"]

_PEFT_PREFIX = "base_model.model."
_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")

OUTTYPES = ("f32", "f16", "q8_0")


@dataclass(frozen=True)
class ConvertResult:
    """A written adapter: path, tensor pairs written, alpha written, seconds taken, and the config's
    ``lora_alpha`` as PEFT read it (differs from ``alpha`` only for 0, see :func:`written_alpha`)."""

    path: Path
    n_pairs: int
    alpha: float
    seconds: float
    peft_alpha: float


#: LoraConfig fields that change what a LoRA computes in ways a llama.cpp LoRA adapter cannot express
#: (PEFT 0.21 ``LoraConfig``); a config that sets any of them is refused with its name.
_UNSUPPORTED = {
    "use_dora": "DoRA adapters are not supported by llama.cpp",
    "lora_bias": "lora_bias is not supported",
    "modules_to_save": "modules_to_save ({value}) cannot be expressed as a LoRA adapter",
    "trainable_token_indices": "trainable_token_indices ({value}) cannot be expressed as a LoRA adapter",
    "target_parameters": "LoRA on parameters (target_parameters {value}) is not supported",
    "layer_replication": "layer_replication ({value}) changes the base model; not supported",
    "alora_invocation_tokens": "activated LoRA (alora_invocation_tokens) is not supported",
    "use_qalora": "QALoRA (use_qalora) is not supported",
    "use_bdlora": "block-diagonal LoRA (use_bdlora) is not supported",
    "velora_config": "VeLoRA (velora_config) is not supported",
    "monteclora_config": "MonteCLoRA (monteclora_config) is not supported",
    "arrow_config": "Arrow (arrow_config) is not supported",
    "kasa_config": "KaSA (kasa_config) is not supported",
}


def read_lora_config(adapter_dir: str | Path):
    """Parse ``adapter_config.json`` with PEFT itself (``PeftConfig.from_pretrained``), so every field
    and every default is PEFT's: a config without ``lora_alpha`` gets LoraConfig's default (8), not r.

    Returns:
        ``peft.LoraConfig``.

    Raises:
        SealqError: no or unreadable config, not a LoRA config, values PEFT rejects, or a LoRA variant
            llama.cpp cannot express (DoRA, modules_to_save, ...; see ``_UNSUPPORTED``).
    """
    import warnings

    from peft import LoraConfig, PeftConfig

    adapter_dir = Path(adapter_dir)
    cfg_path = adapter_dir / "adapter_config.json"
    if not cfg_path.is_file():  # checked here: PEFT would try the hub for a missing file
        if (adapter_dir / "adapter_model.bin").exists():
            raise SealqError(f"{adapter_dir}: only adapter_model.bin (pickle) found; sealq reads safetensors only")
        raise SealqError(f"{adapter_dir}: no adapter_config.json (not a PEFT adapter folder)")
    try:
        raw = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise SealqError(f"{cfg_path}: unreadable ({type(e).__name__}: {e})") from None
    if not isinstance(raw, dict):
        raise SealqError(f"{cfg_path}: expected a JSON object")
    if str(raw.get("peft_type", "")).upper() != "LORA":
        raise SealqError(f"{adapter_dir}: peft_type {raw.get('peft_type')!r} is not LORA")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. keys of a newer PEFT, ignored as PEFT itself does
            config = PeftConfig.from_pretrained(str(adapter_dir))
    except Exception as e:  # noqa: BLE001  (PEFT raises ValueError/TypeError/KeyError/ImportError on bad configs)
        raise SealqError(f"{cfg_path}: PEFT rejects this config ({type(e).__name__}: {e})") from None
    if not isinstance(config, LoraConfig):
        raise SealqError(f"{adapter_dir}: peft_type {raw.get('peft_type')!r} is not LORA")
    for name, message in _UNSUPPORTED.items():
        value = getattr(config, name, None)
        if value:
            raise SealqError(f"{adapter_dir}: " + message.format(value=value))
    _check_numbers(config, cfg_path)
    return config


def _check_numbers(config, cfg_path: Path) -> None:
    """The values PEFT needs to build the layers and sealq needs to write them: ``r`` and every
    ``rank_pattern`` value a positive integer; ``lora_alpha`` and every ``alpha_pattern`` value a finite
    number that float32 (the GGUF's alpha) holds, a nonzero one not rounding to 0 (llama.cpp would read
    that 0 as "no alpha"); pattern keys regular expressions.

    Raises:
        SealqError: naming the field and its value.
    """
    for name in ("rank_pattern", "alpha_pattern"):
        patterns = getattr(config, name)
        if patterns is not None and not isinstance(patterns, dict):
            raise SealqError(f"{cfg_path}: {name} must be an object (module pattern -> value), got {patterns!r}")
        for key in patterns or {}:
            try:
                re.compile(key)
            except re.error as e:
                raise SealqError(f"{cfg_path}: {name} key {key!r} is not a regular expression ({e})") from None
    ranks = {"r": config.r, **{f"rank_pattern[{k!r}]": v for k, v in (config.rank_pattern or {}).items()}}
    for where, r in ranks.items():
        if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
            raise SealqError(f"{cfg_path}: PEFT rejects this config ({where} must be a positive integer, got {r!r})")
    f32_max, f32_tiny = float(np.finfo(np.float32).max), float(np.finfo(np.float32).tiny)
    alphas = {"lora_alpha": config.lora_alpha, **{f"alpha_pattern[{k!r}]": v for k, v in (config.alpha_pattern or {}).items()}}
    for where, a in alphas.items():
        if (not isinstance(a, (int, float)) or isinstance(a, bool) or not math.isfinite(a) or abs(a) > f32_max
                or (a != 0 and abs(a) < f32_tiny)):
            raise SealqError(f"{cfg_path}: {where} must be a finite number float32 can hold, got {a!r}")


def _targeted(config, module: str) -> bool:
    """Whether PEFT, loading this config, would put a LoRA on ``module`` (PEFT's own
    ``check_target_module_exists``: target_modules as a list or regex, layers_to_transform, exclude_modules)."""
    from peft.tuners.tuners_utils import check_target_module_exists

    return config.target_modules is None or bool(check_target_module_exists(config, module))


def module_rank_alpha(config: LoraConfig, module: str) -> tuple[int, float]:
    """The rank and alpha PEFT gives ``module`` (e.g. ``model.layers.0.self_attn.q_proj``): ``rank_pattern``
    and ``alpha_pattern`` keys are regexes matched against the module name or a dotted suffix of it by
    PEFT's own ``get_pattern_key`` (as ``LoraModel._create_and_replace`` does), else ``r`` / ``lora_alpha``."""
    from peft.utils.other import get_pattern_key

    ranks, alphas = config.rank_pattern or {}, config.alpha_pattern or {}
    # ignore: peft annotates pattern_keys as Sequence[str] but only iterates them (and passes .keys() itself)
    r = ranks.get(get_pattern_key(ranks.keys(), module), config.r)  # type: ignore[arg-type]
    alpha = alphas.get(get_pattern_key(alphas.keys(), module), config.lora_alpha)  # type: ignore[arg-type]
    return int(r), float(alpha)


def peft_scale(config, module: str, r: int) -> float:
    """PEFT's scaling of ``module`` (``LoraLayer.update_layer``): alpha / r, or alpha / sqrt(r) with rsLoRA."""
    _, alpha = module_rank_alpha(config, module)
    return alpha / (math.sqrt(r) if config.use_rslora else r)


def written_alpha(config) -> float:
    """The one ``adapter.lora.alpha`` written to the GGUF. llama.cpp scales every tensor by alpha / r,
    but reads alpha 0 as "no alpha" (scale 1), so a zero ``lora_alpha`` (PEFT scale 0, a no-op adapter)
    is written as alpha = r with every lora_b scaled by 0: the same no-op in llama.cpp."""
    alpha = float(config.lora_alpha)
    return alpha if alpha != 0 else float(config.r)


def _read_weights(adapter_dir: Path) -> dict:
    weights_path = adapter_dir / "adapter_model.safetensors"
    if not weights_path.is_file():
        raise SealqError(f"{adapter_dir}: no adapter_model.safetensors")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return {k: v.float().numpy() for k, v in load_file(str(weights_path)).items()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise SealqError(f"{weights_path}: corrupted adapter weights ({e})") from None


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

    t0 = time.perf_counter()
    adapter_dir, out_path = Path(adapter_dir), Path(out_path)
    if outtype not in OUTTYPES:
        raise SealqError(f"--outtype must be one of {', '.join(OUTTYPES)}, got {outtype!r}")
    config = read_lora_config(adapter_dir)
    tensors = _read_weights(adapter_dir)
    inputs = [Path(base_gguf), *(adapter_dir.iterdir())]
    if out_path.exists() and any(out_path.resolve() == p.resolve() for p in inputs):
        raise SealqError(f"{out_path}: is one of the input files (the base model or the adapter); choose another name")
    base = read_base_info(base_gguf)
    arch = architecture(base.architecture, str(base_gguf))
    alpha = written_alpha(config)
    pairs = _lora_pairs(tensors, adapter_dir)
    out = [t for module, ab in sorted(pairs.items())
           for t in _gguf_pair(module, ab, config, alpha, base, adapter_dir, base_gguf)]
    if not out:
        raise SealqError(f"{adapter_dir}: no LoRA tensors")
    write_adapter(out, out_path, arch.name, alpha, outtype, f"sealq LoRA ({adapter_dir.name})")
    return ConvertResult(out_path, len(out) // 2, alpha, time.perf_counter() - t0, float(config.lora_alpha))


def _lora_pairs(tensors: dict, adapter_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """PEFT tensor names -> {module name (without PEFT's prefix): {"A": (r, in), "B": (out, r)}}."""
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        m = _KEY.match(key)
        if m is None:
            raise SealqError(f"{adapter_dir}: tensor {key!r} is not a LoRA A/B weight (unsupported adapter layout)")
        module = m.group("module")
        module = module[len(_PEFT_PREFIX):] if module.startswith(_PEFT_PREFIX) else module
        ab = pairs.setdefault(module, {})
        if m.group("ab") in ab:
            raise SealqError(f"{adapter_dir}: two lora_{m.group('ab')} tensors for {module} (several adapters in one "
                             "file?); convert one adapter at a time")
        ab[m.group("ab")] = value
    return pairs


def _gguf_pair(module: str, ab: dict, config, alpha: float, base: BaseInfo, adapter_dir: Path,
               base_gguf) -> list[tuple[str, np.ndarray]]:
    """One module's (lora_a, lora_b) as GGUF tensors: shapes checked against the base, PEFT's scale for
    this module folded into lora_b relative to llama.cpp's global alpha / r, rows in the GGUF's order
    (the architecture's q/k rule)."""
    if set(ab) != {"A", "B"}:
        raise SealqError(f"{adapter_dir}: module {module} lacks lora_{'A' if 'A' not in ab else 'B'}")
    leaf = module.rsplit(".", 1)[-1]
    if leaf not in LINEAR_TARGETS:
        raise SealqError(f"{adapter_dir}: LoRA on {module!r} is not supported (only the linear layers {', '.join(LINEAR_TARGETS)})")
    if not _targeted(config, module):
        raise SealqError(f"{adapter_dir}: the weights hold a LoRA for {module}, which adapter_config.json does not "
                         "target (target_modules, layers_to_transform, exclude_modules): PEFT would ignore it")
    arch = architecture(base.architecture, str(base_gguf))
    gguf_name = arch.tensor_name_map(base.n_blocks).get_name(module)
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
    r_config, _ = module_rank_alpha(config, module)
    if r_config != r:
        raise SealqError(f"{adapter_dir}: {module} has rank {r} but the config says {r_config}")
    with np.errstate(over="ignore", invalid="ignore"):
        b = b * np.float32(peft_scale(config, module, r) / (alpha / r))
    if not np.isfinite(b).all():
        raise SealqError(f"{adapter_dir}: {module}: lora_B times PEFT's scale overflows float32 (alpha too large)")
    b = arch.to_gguf_rows(leaf, b, base.n_head, base.n_head_kv)
    return [(weight_name + ".lora_a", np.ascontiguousarray(a, dtype=np.float32)),
            (weight_name + ".lora_b", np.ascontiguousarray(b, dtype=np.float32))]


def write_adapter(tensors: list, out_path: Path, arch_name: str, alpha: float, outtype: str, name: str) -> None:
    """Write a GGUF LoRA adapter for ``arch_name`` (the base's ``general.architecture``) atomically
    (temporary file, fsync, rename); used by :func:`convert_peft_to_gguf` and by
    :func:`sealq.convert.combine.combine_adapters`.

    Args:
        tensors: ``(gguf tensor name, float32 array)`` pairs: each module's ``.lora_a`` (r, in) and ``.lora_b``
            (out, r), named as llama.cpp's base tensors (GGUF adapter format, ``general.type`` ``adapter``).
        out_path: the ``.gguf`` file to write (replaced if it exists).
        arch_name: the base model's architecture name.
        alpha: ``adapter.lora.alpha`` (llama.cpp scales each product by alpha / r).
        outtype: tensor storage, one of :data:`OUTTYPES` (as :func:`convert_peft_to_gguf`).
        name: ``general.name``.
    """
    import gguf

    tmp = None
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".gguf", dir=out_path.parent)
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as a plainly created file (mkstemp makes it 0600)
        writer = gguf.GGUFWriter(tmp, arch_name)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        writer.add_string(gguf.Keys.General.NAME, name)
        for tensor_name, data in tensors:
            if outtype == "f16":
                writer.add_tensor(tensor_name, data.astype(np.float16))
            elif outtype == "q8_0" and data.shape[-1] % 32 == 0:
                q = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
                writer.add_tensor(tensor_name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            else:
                writer.add_tensor(tensor_name, data)
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
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
