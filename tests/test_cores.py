"""Default thread counts follow the cores the process may use (its CPU affinity), not the machine's count."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def test_usable_cores_is_the_affinity():
    from sealq.cores import usable_cores

    assert usable_cores() == len(os.sched_getaffinity(0))


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
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1", "1", "1"], out.stdout
