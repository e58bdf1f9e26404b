"""Shared fixtures: the real bundled model, loaded once per test session, and a temporary workspace."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sealq.vocab import LINEAR_TARGETS

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "squad-dev"

#: Every torch and llama.cpp thread count of the suite, pinned (``SEALQ_THREADS``): 1, or ``SEALQ_TEST_THREADS``,
#: the same whether the suite runs serially or in one pytest-xdist worker per core, so no figure a test checks
#: depends on how the suite was started or on the machine's load (a resumed run equals the uninterrupted one
#: next to another CPU-bound process). Set at import, before any session fixture loads a model; the
#: subprocesses the tests start inherit it.
TEST_THREADS = os.environ.get("SEALQ_TEST_THREADS") or "1"
os.environ["SEALQ_THREADS"] = TEST_THREADS


#: The unit tier, as ``make test-fast`` selects it: tests marked ``unit`` (a module's ``pytestmark`` or one
#: test's mark) and neither ``model`` (a test of a unit module that does load the model) nor ``slow``.
UNIT_TIER = "unit and not model and not slow"


def _in_unit_tier(item) -> bool:
    return all((item.get_closest_marker("unit"), not item.get_closest_marker("model"),
                not item.get_closest_marker("slow")))


#: The schedule of ``make test`` and ``make test-slow`` (pytest-xdist ``--dist loadfile --no-loadscope-reorder``):
#: every module is one unit of work, so its module-scoped fixtures are built once, and the modules measured
#: longest (``--durations``, docs/testing.md) start first: longest-processing-time-first, so the last module a
#: worker runs is a short one and the workers finish close together. xdist gives a worker the next module as
#: soon as it has two tests or fewer left, so a one-test module takes a second at once: in the slow tier the
#: crash module (five long tests) comes first, so the other worker runs the default loop and then continual's
#: kill-and-resume test, while the crash module's worker takes learn's when it has two left. An order, not a
#: claim checked by a test: a wrong one costs minutes, never a result. (Not ``--dist loadgroup``: with pytest
#: 9.2 and pytest-xdist 3.8 it silently stops grouping, https://github.com/pytest-dev/pytest-xdist/issues/1386.)
LONGEST_FIRST = ("test_crash", "test_slow_default_loop", "test_restem", "test_continual", "test_loop", "test_learn",
                 "test_eval", "test_model_families", "test_hf_cache", "test_workers")


def _module_of(item) -> str:
    return item.module.__name__.rpartition(".")[2]


@pytest.hookimpl(tryfirst=True)  # the tier marks exist before ``-m`` deselects
def pytest_collection_modifyitems(config, items):
    """Tiers: ``slow`` as marked; the unit tier (:data:`UNIT_TIER`); every other test is marked ``model``: it
    may load the real model. The modules of :data:`LONGEST_FIRST` come first (a stable sort: the order inside a
    module is kept)."""
    for item in items:
        if not item.get_closest_marker("slow") and not _in_unit_tier(item):
            item.add_marker(pytest.mark.model)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(_module_of(item), len(rank)))


@pytest.fixture(autouse=True)
def _unit_loads_no_model(request, monkeypatch):
    """A unit-tier test that loads a model in this process fails at once, naming the tier: the tier's
    promise (no model, seconds) is checked, not assumed."""
    if not _in_unit_tier(request.node):
        return
    from sealq.models import hf, llama

    def refuse(*args, **kwargs):
        raise AssertionError(f"{request.node.nodeid} loads a model: mark it @pytest.mark.model")

    monkeypatch.setattr(llama.LlamaRunner, "__init__", refuse)
    monkeypatch.setattr(hf, "load_training_model", refuse)


@pytest.fixture(autouse=True)
def workspace(tmp_path, monkeypatch, cache_root) -> Path:
    """Every test writes its runs.db into its own temporary workspace (and shares one model cache), with
    the suite's pinned thread count (a test that changes ``SEALQ_THREADS`` changes it for itself only)."""
    ws = tmp_path / "ws"
    monkeypatch.setenv("SEALQ_HOME", str(ws))
    monkeypatch.setenv("SEALQ_CACHE", str(cache_root))
    monkeypatch.setenv("SEALQ_THREADS", TEST_THREADS)
    return ws


@pytest.fixture(scope="session")
def model():
    from sealq.models.registry import resolve_model

    return resolve_model(None)


@pytest.fixture(scope="session")
def runner(model):
    from sealq.models.llama import LlamaRunner

    return LlamaRunner(model, n_ctx=2048, seed=0)


def _shared_root(tmp_path_factory, worker_id: str) -> Path:
    """A folder every pytest-xdist worker of this session sees (the parent of the workers' own temporary
    folders); the session's own temporary folder when the suite runs serially."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory, worker_id) -> Path:
    """One dequantized-model cache for the whole session, shared by the xdist workers (the first load takes
    ~15 s; a concurrent first write is safe: :func:`sealq.models.hf.load_training_model` keeps the entry
    another process wrote meanwhile)."""
    if "SEALQ_TEST_CACHE" in os.environ:
        return Path(os.environ["SEALQ_TEST_CACHE"])
    root = _shared_root(tmp_path_factory, worker_id) / "model-cache"
    root.mkdir(exist_ok=True)
    return root


def built_once(tmp_path_factory, worker_id: str, name: str, build) -> tuple[Path, dict]:
    """A session fixture's workspace built once for all xdist workers, returned as this worker's own copy.

    ``build(ws)`` runs a command into the empty folder ``ws`` and returns its JSON summary (a dict). The first
    worker that needs it builds it under a file lock (pytest-xdist's recipe for session fixtures); the others
    wait for it and copy the folder, so a test that takes the run lock or writes a file changes its worker's
    copy only. The copy's runs.db still names the built folder's adapter files (absolute paths), which stay
    in place, unchanged, for the session. Returns (workspace, summary).
    """
    import json
    import shutil

    from filelock import FileLock

    shared = _shared_root(tmp_path_factory, worker_id)
    built, done = shared / f"{name}-built", shared / f"{name}-built.json"
    with FileLock(str(shared / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(built, ignore_errors=True)  # a worker that died while building left it half-written
            built.mkdir()
            done.write_text(json.dumps(build(built)))
    summary = json.loads(done.read_text())
    if worker_id == "master":
        return built, summary
    ws = tmp_path_factory.mktemp(name) / "ws"
    shutil.copytree(built, ws)
    return ws, summary


def cli_json(args: list[str], cache_root: Path) -> dict:
    """``sealq ARGS --json`` through click on the session's model cache; the parsed summary."""
    import json

    from click.testing import CliRunner

    from sealq.cli import cli

    result = CliRunner().invoke(cli, [*args, "--json"], catch_exceptions=False, env={"SEALQ_CACHE": str(cache_root)})
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="session")
def hf_model(model, cache_root):
    from sealq.models.hf import load_training_model, set_torch_threads

    set_torch_threads(0)
    hf, _ = load_training_model(model, cache_root)
    return hf


@pytest.fixture(scope="session")
def cli_run(tmp_path_factory, worker_id, cache_root):
    """`sealq loop --passages 1 --k 2 --json` through click, with model-written directives, built once for the
    session (:func:`built_once`). Returns (workspace, summary). Shared by the loop and inspection tests."""
    args = ["loop", "--passages", "1", "--k", "2", "--epochs", "2", "--edit-type", "implications",
            "--edit-type", "self-qa"]
    return built_once(tmp_path_factory, worker_id, "cli-run",
                      lambda ws: cli_json([*args, "--workspace", str(ws)], cache_root))


@pytest.fixture(scope="session")
def passages():
    from sealq.engine.dataset import load_passages

    return load_passages()


#: Every linear module a sealq LoRA targets (the same list the engine uses).
ALL = list(LINEAR_TARGETS)


def random_peft_adapter(hf_model, out_dir, targets=ALL, seed=0, keep=False, **lora_kwargs):
    """Save a PEFT adapter with non-trivial random lora_A and lora_B (a normal init has B = 0).

    Returns the wrapped PEFT model when ``keep`` (call :func:`release` after), else None.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    peft_model = get_peft_model(hf_model, LoraConfig(target_modules=targets, lora_dropout=0.0, **lora_kwargs))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_A" in name:
                p.normal_(0, 1 / p.shape[1] ** 0.5)
            elif "lora_B" in name:
                p.normal_(0, 0.4 / p.shape[1] ** 0.5)
    peft_model.save_pretrained(str(out_dir), save_embedding_layers=False)
    if keep:
        return peft_model
    release(peft_model, hf_model)
    return None


def release(peft_model, hf_model):
    """Unwrap the base model again (the session's training model is shared by many tests)."""
    peft_model.unload()
    if hasattr(hf_model, "peft_config"):
        del hf_model.peft_config


@pytest.fixture(scope="session")
def f32_base(model, tmp_path_factory) -> Path:
    """An F32 copy of the bundled base GGUF (gguf-py dequantization): llama.cpp then runs on exactly the weights
    the training model was dequantized to, so logits of the two sides can be compared without quantization noise."""
    from sealq.convert.dequantize import dequantize_gguf

    return dequantize_gguf(model.path, tmp_path_factory.mktemp("f32") / "base-f32.gguf")


#: The tiny continual run of the suite: 2 sequences x 2 bundled passages, K=1, 1 epoch, three gates.
CONTINUAL_ARGS = ["continual", "--sequences", "2", "--length", "2", "--k", "1", "--epochs", "1", "--seed", "5",
                  "--gate", "none", "--gate", "retention:0", "--gate", "kl:0.04"]


@pytest.fixture(scope="session")
def continual_run(tmp_path_factory, worker_id, cache_root):
    """`sealq continual` (:data:`CONTINUAL_ARGS`) on the bundled model through click, built once for the
    session (:func:`built_once`: its two test modules may run on two workers). Returns (workspace, summary)."""
    return built_once(tmp_path_factory, worker_id, "continual-run",
                      lambda ws: cli_json([*CONTINUAL_ARGS, "--workspace", str(ws)], cache_root))
