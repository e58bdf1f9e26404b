"""The dequantized training model is cached by the GGUF's sha256: identical when warm, rebuilt when the file
changes, and rebuilt (never a traceback) when the entry is damaged or incomplete.

One cold load (~16 s) builds a module-wide cache; a test that damages or extends it works on a copy.
"""

import json
import shutil
import warnings

import pytest
import torch

from sealq.errors import SealqWarning
from sealq.models.hf import load_training_model
from sealq.models.registry import resolve_model


@pytest.fixture(scope="module")
def built(model, tmp_path_factory):
    """(cache root with one fresh entry, the cold-loaded model)."""
    root = tmp_path_factory.mktemp("hf-cache")
    cold, hit = load_training_model(model, root)
    assert hit is False
    yield root, cold
    shutil.rmtree(root, ignore_errors=True)  # ~540 MB


@pytest.fixture
def copy(built, tmp_path):
    """A throwaway copy of the module cache root (removed after the test: ~540 MB)."""
    root = tmp_path / "cache"
    shutil.copytree(built[0], root)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def entry(root, model):
    return root / "hf" / model.sha256


def load_quietly(model, root):
    """Load, failing on any SealqWarning (a valid entry must load without complaint)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", SealqWarning)
        return load_training_model(model, root)


def assert_rebuilt(model, root, cold, match):
    with pytest.warns(SealqWarning, match=match):
        hf, hit = load_training_model(model, root)
    assert hit is False
    assert torch.equal(hf.model.embed_tokens.weight, cold.model.embed_tokens.weight)
    assert sorted(p.name for p in (root / "hf").iterdir()) == [model.sha256]  # no temp or damaged folder left
    manifest = json.loads((entry(root, model) / "manifest.json").read_text())
    for name, want in manifest["files"].items():
        assert (entry(root, model) / name).stat().st_size == want["size"]


def test_warm_load_equals_cold_and_a_changed_file_misses(model, built, copy):
    root, cold = built
    warm, hit = load_quietly(model, root)
    assert hit is True
    a, b = cold.state_dict(), warm.state_dict()
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert warm.lm_head.weight.data_ptr() == warm.model.embed_tokens.weight.data_ptr()  # still tied
    assert not hasattr(warm.config, "quantization_config")
    del warm, a, b

    changed = copy.parent / "changed.gguf"
    shutil.copy(model.path, changed)
    with open(changed, "ab") as f:  # trailing bytes: same weights, different file, different sha256
        f.write(b"\0" * 64)
    _, hit3 = load_training_model(resolve_model(str(changed)), copy)
    assert hit3 is False
    assert len(list((copy / "hf").iterdir())) == 2
    changed.unlink()


def test_truncated_weights_are_rebuilt_and_valid_again(model, built, copy):
    weights = entry(copy, model) / "model.safetensors"
    with open(weights, "r+b") as f:  # a killed copy or a full disk
        f.truncate(weights.stat().st_size // 2)
    assert_rebuilt(model, copy, built[1], "model.safetensors of the wrong size")
    _, hit = load_quietly(model, copy)
    assert hit is True


def test_a_flipped_byte_is_caught_by_sha256(model, built, copy):
    weights = entry(copy, model) / "model.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as f:  # same size, loads fine: only the sha256 tells
        f.seek(size // 2)
        byte = f.read(1)
        f.seek(size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert weights.stat().st_size == size
    assert_rebuilt(model, copy, built[1], "sha256 does not match")


def test_an_entry_without_manifest_is_rebuilt(model, built, copy):
    (entry(copy, model) / "manifest.json").unlink()  # as written by an earlier sealq, or never completed
    assert_rebuilt(model, copy, built[1], "no manifest")
