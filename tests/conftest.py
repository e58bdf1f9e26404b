"""Shared fixtures: the real bundled model, loaded once per test session, and a temporary workspace."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "squad-dev"


@pytest.fixture(autouse=True)
def workspace(tmp_path, monkeypatch, cache_root) -> Path:
    """Every test writes its runs.db into its own temporary workspace (and shares one model cache)."""
    ws = tmp_path / "ws"
    monkeypatch.setenv("SEALQ_HOME", str(ws))
    monkeypatch.setenv("SEALQ_CACHE", str(cache_root))
    return ws


@pytest.fixture(scope="session")
def model():
    from sealq.models.registry import resolve_model

    return resolve_model(None)


@pytest.fixture(scope="session")
def runner(model):
    from sealq.models.llama import LlamaRunner

    return LlamaRunner(model, n_ctx=2048, seed=0)


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory) -> Path:
    """One dequantized-model cache for the whole session (the first load takes ~15 s)."""
    return Path(os.environ.get("SEALQ_TEST_CACHE", tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def hf_model(model, cache_root):
    from sealq.models.hf import load_training_model, set_torch_threads

    set_torch_threads(0)
    hf, _ = load_training_model(model, cache_root)
    return hf


@pytest.fixture(scope="session")
def passages():
    from sealq.engine.dataset import load_passages

    return load_passages()
