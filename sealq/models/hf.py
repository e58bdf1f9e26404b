"""The training side: the GGUF base dequantized into a transformers model (fp32, CPU).

``AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)`` dequantizes every tensor and undoes
llama.cpp's q/k row permutation (~16 s for the default model). The result is cached as safetensors under
``<cache>/hf/<sha256 of the GGUF>/`` (see :func:`default_cache_root`), so later runs load it in about a second; a changed GGUF
has a different sha256 and gets a fresh cache entry.

The cache is derived data and disposable. When an entry is written, the size and sha256 of each of its files
go into ``manifest.json``, written last; every load checks them (hashing the ~540 MB of weights takes 0.5-0.8 s
of a ~1.1 s cached load) and rebuilds the entry from the GGUF when the manifest is missing or unreadable, a file
is missing or differs (a truncated copy, a full disk, a flipped bit), or loading the entry raises anything.
Entries written by sealq versions before the manifest have none and are rebuilt once. If the cache folder cannot
be written (read-only or full), the freshly dequantized model is used anyway, with one warning line.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from sealq.cores import default_threads
from sealq.errors import SealqError, SealqWarning, disk_full_reason
from sealq.models.registry import ResolvedModel, sha256_of

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["load_training_model", "set_torch_threads", "default_cache_root"]


def default_cache_root() -> Path:
    """Where derived files are cached: ``$SEALQ_CACHE``, else ``$XDG_CACHE_HOME/sealq``, else ``~/.cache/sealq``."""
    if os.environ.get("SEALQ_CACHE"):
        return Path(os.environ["SEALQ_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sealq"


def set_torch_threads(threads: int = 0) -> int:
    """Set torch's intra-op threads (0: ``SEALQ_THREADS``, else one per core this process may use, :func:`sealq.cores.default_threads`) and return the number used."""
    import torch

    n = threads or default_threads()
    torch.set_num_threads(n)
    return n


_WEIGHTS = "model.safetensors"
_CONFIG = "config.json"
#: Written last into a cache entry: ``{"version": 1, "files": {name: {"size": bytes, "sha256": hex}}}``.
_MANIFEST = "manifest.json"
_MANIFEST_VERSION = 1


@contextlib.contextmanager
def _no_tqdm():
    """transformers' GGUF dequantization draws a tqdm bar on sys.stderr; keep the CLI's output clean."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        yield


def _save_cached(hf, folder: Path) -> None:
    """Write config + fp32 weights in the layout ``from_pretrained`` reads, then the manifest (last).

    transformers refuses ``save_pretrained`` on a GGUF-loaded model, and its config still names the GGUF
    quantizer; the cache holds plain fp32 weights, so that entry is dropped.
    """
    from safetensors.torch import save_model

    config = hf.config.to_dict()
    config.pop("quantization_config", None)
    (folder / _CONFIG).write_text(json.dumps(config, indent=2))
    save_model(hf, str(folder / _WEIGHTS))  # handles the tied embedding / lm_head
    files = {name: {"size": (folder / name).stat().st_size, "sha256": sha256_of(folder / name)}
             for name in (_CONFIG, _WEIGHTS)}
    # last: an entry without a valid manifest is incomplete
    (folder / _MANIFEST).write_text(json.dumps({"version": _MANIFEST_VERSION, "files": files}, indent=2))


def _verify_cached(folder: Path) -> str | None:
    """Why the cache entry ``folder`` cannot be trusted, or None when every file matches its manifest."""
    try:
        manifest = json.loads((folder / _MANIFEST).read_text())
    except FileNotFoundError:
        return "has no manifest (written by an earlier sealq, or never completed)"
    except (OSError, ValueError) as e:
        return f"has an unreadable manifest ({type(e).__name__})"
    if not isinstance(manifest, dict) or manifest.get("version") != _MANIFEST_VERSION:
        return "has a manifest of another version"
    files = manifest.get("files")
    if not isinstance(files, dict) or not {_CONFIG, _WEIGHTS} <= files.keys():
        return "has an incomplete manifest"
    try:
        for name in (_CONFIG, _WEIGHTS):  # sizes first: a truncated file fails without hashing anything
            want = files[name]  # only the files sealq writes: a hand-edited manifest names nothing else
            if not isinstance(want, dict) or (folder / name).stat().st_size != want.get("size"):
                return f"has a {name} of the wrong size"
        for name in (_CONFIG, _WEIGHTS):
            want = files[name]
            if sha256_of(folder / name) != want.get("sha256"):
                return f"has a {name} whose sha256 does not match"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    return None


def _discard(path: Path) -> None:
    """Move a damaged entry aside (so no one loads it meanwhile), then delete it; frees its space first."""
    aside = path.with_name(f".damaged-{uuid.uuid4().hex[:12]}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return
    if aside.is_dir() and not aside.is_symlink():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        aside.unlink(missing_ok=True)


def _write_cache(hf, cache: Path) -> None:
    """Replace ``cache`` atomically with a fresh entry for ``hf``; on any failure, warn and leave no temp folder."""
    tmp = None
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(cache):
            _discard(cache)
        _remove_stale(cache.parent)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache.parent))
        _save_cached(hf, tmp)
        os.replace(tmp, cache)
    except Exception as e:  # noqa: BLE001  (OSError, safetensors' SafetensorError on a full disk, ...)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if cache.is_dir() and _verify_cached(cache) is None:  # another process wrote it meanwhile
            return
        reason = disk_full_reason(e) or (getattr(e, "strerror", None) or str(e)).splitlines()[0][:200]
        warnings.warn(f"cannot write the training-model cache in {cache.parent} ({reason}); "
                      "using the model without caching it", SealqWarning, stacklevel=3)


def _remove_stale(folder: Path, age_s: float = 3600) -> None:
    """Delete ``.tmp-*`` / ``.damaged-*`` entries left by a process killed while it wrote or discarded a
    cache entry (~540 MB each). Only those untouched for ``age_s``: another process may be writing one now."""
    import time

    for entry in folder.glob(".*"):
        try:
            if entry.name.startswith((".tmp-", ".damaged-")) and time.time() - entry.lstat().st_mtime > age_s:
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
        except OSError:
            pass


def _load_cached(folder: Path):
    import torch
    from transformers import AutoModelForCausalLM

    with _no_tqdm():
        return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)


def _overrides(model: ResolvedModel) -> dict:
    """Config values transformers' GGUF loader does not read for this architecture (see :mod:`sealq.models.arch`).

    transformers 5 also drops a GGUF's rope scaling (``<arch>.rope.scaling.*`` keys, llama-3's
    ``rope_freqs`` tensor: Llama-3.1/3.2, Gemma-3 4B+, Qwen2.5 with YaRN) except for gpt-oss; such a base
    is trained with unscaled rotary frequencies while llama.cpp runs it scaled. sealq warns once; it is
    not corrected (docs/models.md)."""
    from sealq.models.arch import architecture
    from sealq.models.gguf_meta import GGUFMeta

    meta = GGUFMeta(model.path)
    scaling = meta.field(f"{model.architecture}.rope.scaling.type")
    if (scaling not in (None, "none")) or "rope_freqs.weight" in meta.shapes():
        warnings.warn(f"{model.path.name} uses rope scaling ({scaling or 'rope_freqs'}), which transformers does not "
                      "read from a GGUF: LoRA training sees unscaled rotary frequencies while llama.cpp applies "
                      "them (see docs/models.md)", SealqWarning, stacklevel=3)
    return architecture(model.architecture).hf_overrides(meta.fields)


def load_training_model(model: ResolvedModel, cache_root: Path | None) -> tuple[PreTrainedModel, bool]:
    """Load the base model for LoRA training, dequantized to fp32.

    A cache entry is used only if its files match the sizes and sha256 sums in its manifest and it loads;
    otherwise (damaged, incomplete, or written by an earlier sealq without a manifest) it is rebuilt from the
    GGUF with a one-line :class:`SealqWarning`. A cache folder that cannot be written costs the cache only.

    Args:
        model: the resolved GGUF base.
        cache_root: folder for the dequantized cache (None: no cache).

    Returns:
        (model, cache_hit): a ``transformers`` causal LM in eval mode with all parameters frozen, and
        whether it came from a verified cache entry.

    Raises:
        SealqError: transformers cannot read the GGUF.
    """
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    cache = cache_root / "hf" / model.sha256 if cache_root is not None else None
    hf = None
    if cache is not None and os.path.lexists(cache):
        problem = _verify_cached(cache)
        if problem is None:
            try:
                hf = _load_cached(cache)
            except Exception as e:  # noqa: BLE001  (anything: the entry is disposable)
                detail = (str(e).splitlines() or [""])[0][:200]
                problem = f"cannot be loaded ({type(e).__name__}{': ' + detail if detail else ''})"
        if problem is not None:
            warnings.warn(f"the cached training model in {cache} {problem}; rebuilding it from the GGUF",
                          SealqWarning, stacklevel=2)
    hit = hf is not None
    if not hit:
        try:
            with _no_tqdm():
                hf = AutoModelForCausalLM.from_pretrained(
                    str(model.path.parent), gguf_file=model.path.name, dtype=torch.float32, **_overrides(model)
                )
        except Exception as e:  # noqa: BLE001  (transformers raises many types for unreadable GGUFs)
            raise SealqError(f"{model.path}: transformers cannot load this GGUF ({type(e).__name__}: {e})") from None
        if cache is not None:
            _write_cache(hf, cache)
    assert hf is not None  # loaded from the cache (hit) or from the GGUF (not hit)
    hf.eval()
    for p in hf.parameters():
        p.requires_grad_(False)
    return hf, hit
