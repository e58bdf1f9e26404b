"""Default thread counts follow the cores the process may use (its CPU affinity), not the machine's count."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit  # no model: the unit tier (tests/conftest.py)


def test_usable_cores_is_the_affinity():
    from sealq.cores import usable_cores

    assert usable_cores() == len(os.sched_getaffinity(0))


@pytest.mark.model  # its subprocess loads the model
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores to restrict to 1")
def test_torch_and_llama_cpp_threads_follow_a_restricted_affinity(model):
    """A process pinned to one core (as `taskset -c 0` does) starts one torch thread and one llama.cpp
    thread by default, on a machine with more cores."""
    code = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
        "from sealq.models.hf import set_torch_threads\n"
        "from sealq.models.llama import LlamaRunner\n"
        "from sealq.models.registry import resolve_model\n"
        "import torch\n"
        "n = set_torch_threads(0)\n"
        "r = LlamaRunner(resolve_model(None), n_ctx=256)\n"
        "print(n, torch.get_num_threads(), r.llm.n_threads, r.llm.n_threads_batch)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SEALQ_THREADS"}  # the defaults, not the suite's pin
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1", "1", "1"], out.stdout


def _busy_loop():
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="/proc/stat (Linux) is where busy cores are read")
def test_a_busy_process_is_seen_and_this_process_is_not():
    """busy_cores counts another process's busy loop (about one core) and not this process's own busy
    thread; training_threads leaves the busy core alone (bench/contention.py: 2 threads next to a busy
    loop trained 7-12x slower than 1 thread), as does a training whose count is automatic; a count that
    was given is used as it is."""
    import threading

    from sealq.cores import busy_cores, training_threads, usable_cores
    from sealq.engine.config import TrainConfig
    from sealq.engine.train import threads_for

    stop = threading.Event()
    spinner = threading.Thread(target=lambda: [None for _ in iter(stop.is_set, True)], daemon=True)
    spinner.start()
    try:
        own_only = busy_cores(0.3)
    finally:
        stop.set()
        spinner.join()
    competitor = _busy_loop()
    try:
        import time

        time.sleep(0.2)
        other = busy_cores(0.3)
        threads = training_threads()
        automatic = threads_for(TrainConfig(threads=usable_cores(), lower_when_busy=True))
        given = threads_for(TrainConfig(threads=usable_cores()))
    finally:
        competitor.kill()
        competitor.wait()
    assert other - own_only > 0.6, (own_only, other)  # the other process's loop: about one core more
    assert own_only < other
    if usable_cores() >= 2:
        assert threads <= usable_cores() - 1
        assert automatic <= usable_cores() - 1
    assert given == usable_cores()
    assert training_threads(1) == 1


def test_requested_threads_option_then_environment(monkeypatch):
    """--threads N wins over SEALQ_THREADS; without either, None (automatic); a bad value is one line."""
    from sealq.cores import requested_threads
    from sealq.errors import SealqError

    monkeypatch.setenv("SEALQ_THREADS", "3")
    assert requested_threads(2) == 2
    assert requested_threads() == 3
    monkeypatch.delenv("SEALQ_THREADS")
    assert requested_threads() is None
    for bad in ("0", "two", "-1", "1.5"):
        monkeypatch.setenv("SEALQ_THREADS", bad)
        with pytest.raises(SealqError, match="SEALQ_THREADS must be a whole number"):
            requested_threads()
    with pytest.raises(SealqError, match="--threads must be at least 1"):
        requested_threads(0)


def test_thread_counts_are_decided_once_and_kept(monkeypatch):
    """A run's counts are decided when it starts (given: exactly; else automatic, which a training may
    lower) and stored; a resume keeps the stored counts unless new ones are asked for; a config stored
    with them reads back equal."""
    from sealq.cores import usable_cores
    from sealq.engine.config import LoopConfig

    auto = LoopConfig().threads_decided(None)
    assert 1 <= auto.train.threads <= usable_cores() and auto.train.lower_when_busy
    assert auto.eval.threads == auto.train.threads
    given = LoopConfig().threads_decided(3)
    assert (given.train.threads, given.eval.threads, given.train.lower_when_busy) == (3, 3, False)
    stored = LoopConfig.from_dict(given.to_dict())
    assert stored == given
    assert stored.threads_decided(None) == given  # resume without --threads: the stored counts
    assert stored.threads_decided(1).train.threads == 1  # resume --threads 1
    assert stored.policy.train_config(stored.train).threads == 3  # ReST-EM's generator update too
