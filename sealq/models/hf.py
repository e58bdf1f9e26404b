"""The training side: the GGUF base dequantized into a transformers model (fp32, CPU).

``AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)`` dequantizes every tensor and undoes
llama.cpp's q/k row permutation (~16 s for the default model). The result is cached as safetensors under
``<cache>/hf/<sha256 of the GGUF>/`` (see :func:`default_cache_root`), so later runs load it in about a second; a changed GGUF
has a different sha256 and gets a fresh cache entry.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from sealq.errors import SealqError
from sealq.models.registry import ResolvedModel

__all__ = ["load_training_model", "set_torch_threads", "default_cache_root"]


def default_cache_root() -> Path:
    """Where derived files are cached: ``$SEALQ_CACHE``, else ``$XDG_CACHE_HOME/sealq``, else ``~/.cache/sealq``."""
    if os.environ.get("SEALQ_CACHE"):
        return Path(os.environ["SEALQ_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sealq"


def set_torch_threads(threads: int = 0) -> int:
    """Set torch's intra-op threads (0: one per core) and return the number used."""
    import torch

    n = threads or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


_WEIGHTS = "model.safetensors"


@contextlib.contextmanager
def _no_tqdm():
    """transformers' GGUF dequantization draws a tqdm bar on sys.stderr; keep the CLI's output clean."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        yield


def _save_cached(hf, folder: Path) -> None:
    """Write config + fp32 weights in the layout ``from_pretrained`` reads.

    transformers refuses ``save_pretrained`` on a GGUF-loaded model, and its config still names the GGUF
    quantizer; the cache holds plain fp32 weights, so that entry is dropped.
    """
    import json

    from safetensors.torch import save_model

    config = hf.config.to_dict()
    config.pop("quantization_config", None)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_model(hf, str(folder / _WEIGHTS))  # handles the tied embedding / lm_head


def _load_cached(folder: Path):
    import torch
    from transformers import AutoModelForCausalLM

    with _no_tqdm():
        return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)


def load_training_model(model: ResolvedModel, cache_root: Path | None):
    """Load the base model for LoRA training, dequantized to fp32.

    Args:
        model: the resolved GGUF base.
        cache_root: folder for the dequantized cache (None: no cache).

    Returns:
        (model, cache_hit): a ``transformers`` causal LM in eval mode with all parameters frozen, and
        whether it came from the cache.

    Raises:
        SealqError: transformers cannot read the GGUF.
    """
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    cache = cache_root / "hf" / model.sha256 if cache_root is not None else None
    hit = cache is not None and (cache / _WEIGHTS).exists()
    if hit:
        hf = _load_cached(cache)
    else:
        try:
            with _no_tqdm():
                hf = AutoModelForCausalLM.from_pretrained(
                    str(model.path.parent), gguf_file=model.path.name, dtype=torch.float32
                )
        except Exception as e:  # transformers raises many types for unreadable GGUFs
            raise SealqError(f"{model.path}: transformers cannot load this GGUF ({type(e).__name__}: {e})") from None
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache.parent))
            try:
                _save_cached(hf, tmp)
                os.replace(tmp, cache)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
    hf.eval()
    for p in hf.parameters():
        p.requires_grad_(False)
    return hf, hit
