"""Resolving --model: the bundled default, and every kind of bad model file."""

import pytest

from sealq.errors import SealqError
from sealq.models.registry import KNOWN_MODELS, resolve_model

pytestmark = pytest.mark.unit  # no model: the unit tier (tests/conftest.py)


def test_default_model_is_found_without_importing_llm(model):
    assert model.name == "smollm2-135m" and model.architecture == "llama"
    assert model.path.name == KNOWN_MODELS["smollm2-135m"].filename
    assert len(model.sha256) == 64


def test_path_to_gguf(model):
    m = resolve_model(str(model.path))
    assert m.path == model.path and m.name == model.path.stem


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.gguf", "no such file and not a known model"),
        (lambda d: d, "is a directory"),
        (lambda d: (d / "x.gguf").write_bytes(b"not a model at all") and d / "x.gguf", "not a GGUF file"),
        (lambda d: (d / "t.gguf").write_bytes(b"GGUF\x03\x00\x00\x00\x10") and d / "t.gguf", "not a readable GGUF model"),
    ],
)
def test_bad_model_files(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(SealqError, match=message):
        resolve_model(str(path))


def test_truncated_real_model(tmp_path, model):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(model.path.read_bytes()[: 1 << 20])
    with pytest.raises(SealqError, match="not a readable GGUF model"):
        resolve_model(str(cut))
