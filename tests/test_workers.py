"""Inner steps on Ray workers (``--workers``): real local Ray clusters (one ``sealq`` starts itself, one
started with ``ray start --head`` and joined by address), real worker processes with the real model.

Every cluster here binds 127.0.0.1 and every connection checked stays on loopback. The slow tests compare
whole runs row for row (:mod:`sealq.analysis.snapshot`): 1 worker against 2 (1 thread each), a worker
killed mid-step, the driver killed and the run resumed.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import sqlite_utils

from sealq.analysis.snapshot import snapshot as run_snapshot
from sealq.engine.workers import LOOPBACK_ENV

SEALQ = str(Path(sys.executable).parent / "sealq")
RAY = str(Path(sys.executable).parent / "ray")
# 1 bundled passage: baseline, passage-only LoRA, 2 self-edits (1 epoch, fixed settings)
EVAL_ARGS = ["eval", "--passages", "1", "--k", "2", "--epochs", "1", "--seed", "3", "--json"]
FAULTS = ("SEALQ_KILL_AT", "SEALQ_FAIL_AT", "SEALQ_WORKER_KILL_AT", "SEALQ_WORKER_FAIL_AT")


def sealq(ws: Path, *args, env=None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in FAULTS}
    full_env.update(env or {})
    return subprocess.run([SEALQ, *args, "--workspace", str(ws)], env=full_env, capture_output=True, text=True,
                          timeout=900)


def snapshot(ws: Path) -> dict:
    return run_snapshot(sqlite_utils.Database(str(ws / "runs.db")))


def adapter_files(ws: Path) -> list[str]:
    return sorted("/".join(f.relative_to(ws / "runs").parts[1:]) for f in (ws / "runs").rglob("*")
                  if f.is_file() and f.name != "writer.lock")


def _is_loopback(addr) -> bool:
    """An empty address (a listening socket's peer) or 127.0.0.0/8, ::1, or ::ffff:127.x.y.z."""
    if not addr:
        return True
    ip = ipaddress.ip_address(addr.ip)
    return (getattr(ip, "ipv4_mapped", None) or ip).is_loopback


def inet_connections(pids: set[int]) -> list:
    """The TCP/UDP sockets (listening and connected) of the processes ``pids``."""
    out = []
    for pid in pids:
        try:
            out += psutil.Process(pid).net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def assert_loopback_only(pids: set[int]) -> None:
    conns = inet_connections(pids)
    assert any(c.status == psutil.CONN_LISTEN for c in conns), "no listening socket found: the check saw nothing"
    outside = [c for c in conns if not (_is_loopback(c.laddr) and _is_loopback(c.raddr))]
    assert not outside, f"sockets off loopback: {outside}"


def test_without_workers_ray_is_not_imported():
    """The in-process path (every engine module, the CLI) imports Ray only when --workers asks for it."""
    code = ("import sys; from sealq.cli import cli; import sealq.engine.loop, sealq.engine.workers; "
            "from sealq.engine.config import ScaleConfig; ScaleConfig(); print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"


def test_scale_options_are_checked_before_anything_runs(tmp_path):
    """Bad --workers options: one line, exit 2, no run recorded (checked before Ray starts)."""
    cases = {("--workers", "-1"): "Error: --workers must be in 1-4096, got -1",
             ("--threads-per-worker", "2"): "Error: --threads-per-worker and --ray-address need --workers N",
             ("--workers", "1", "--threads-per-worker", "100000"):
                 "Error: --workers 1 x 100000 threads need 100000 CPUs; the Ray cluster has"}
    for opts, message in cases.items():
        proc = sealq(tmp_path, "loop", "--passages", "1", "--k", "1", *opts)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr.strip().splitlines()[-1].startswith(message)
        assert not (tmp_path / "runs.db").exists() or sqlite_utils.Database(str(tmp_path / "runs.db"))["runs"].count == 0


def test_error_in_a_worker_is_one_line(tmp_path):
    """A SealqError raised inside a worker process fails the run with that one line, no traceback."""
    proc = sealq(tmp_path, "loop", "--passages", "1", "--k", "1", "--directives", "off", "--epochs", "1",
                 "--workers", "1", "--threads-per-worker", "1", env={"SEALQ_WORKER_FAIL_AT": "generate"})
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == "Error: injected fault at generate (SEALQ_FAIL_AT)"
    assert "Traceback" not in proc.stderr
    (status,) = sqlite_utils.Database(str(tmp_path / "runs.db")).execute("select status from runs").fetchone()
    assert status == "failed"


def test_local_cluster_binds_loopback_and_runs_a_job(runner, passages):
    """The cluster sealq starts itself: every socket of its processes is on 127.0.0.1, a job runs on a
    worker and gives the answers this process gives, and closing the pool stops every Ray process."""
    from dataclasses import replace

    from sealq.engine.config import EvalConfig, LoopConfig, ScaleConfig
    from sealq.engine.jobs import BaselineJob, run_job
    from sealq.engine.passage import LoopEvents
    from sealq.engine.step import Models
    from sealq.engine.workers import RayPool
    from sealq.models.registry import file_sha256

    config = LoopConfig(eval=EvalConfig(threads=1))
    models = Models(runner, None, runner.model.path)
    pool = RayPool(config, ScaleConfig(workers=1, threads_per_worker=1), file_sha256(runner.model.path),
                   LoopEvents(), models)
    try:
        ray_pids = {p.pid for p in psutil.Process().children(recursive=True)}
        assert ray_pids, "the local cluster's processes are children of this process"
        assert_loopback_only(ray_pids)
        job = BaselineJob(replace(passages[0], questions=passages[0].questions[:2]), max_tokens=16)
        pool.submit(job)
        _, got = pool.next_done()
    finally:
        pool.close()
    want = run_job(job, models, config)
    assert [a.generation.text for a in got.base] == [a.generation.text for a in want.base]
    assert [a.generation.text for a in got.ceiling] == [a.generation.text for a in want.ceiling]
    deadline = time.monotonic() + 20
    while any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in map(_proc, ray_pids) if p) \
            and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [p for p in map(_proc, ray_pids) if p and p.status() != psutil.STATUS_ZOMBIE], "Ray processes left"


def _proc(pid: int):
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head():
    """A cluster started as a user starts one (``ray start --head``) on 127.0.0.1 with 2 CPUs; yields its
    address. Its own temporary folder (a short path: Ray's socket names must fit 107 bytes) tells its
    processes apart from any other Ray on the machine."""
    temp = tempfile.mkdtemp(prefix="sq-ray-", dir="/tmp")
    port = _free_port()
    env = {**os.environ, **LOOPBACK_ENV}
    subprocess.run([RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
                    "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
                   env=env, check=True, capture_output=True, timeout=180)
    try:
        yield f"127.0.0.1:{port}", temp
    finally:
        procs = [_proc(pid) for pid in head_pids(temp)]
        procs = [p for p in procs if p]
        for p in procs:
            p.terminate()
        _, alive = psutil.wait_procs(procs, timeout=10)
        for p in alive:  # gcs_server outlives SIGTERM (as under `ray stop`, which also ends with SIGKILL)
            p.kill()


def head_pids(temp: str) -> set[int]:
    pids = {p.pid for p in psutil.process_iter(["cmdline"]) if temp in " ".join(p.info["cmdline"] or [])}
    return pids | {c.pid for pid in pids if _proc(pid) for c in _proc(pid).children(recursive=True)}


@pytest.fixture(scope="module")
def one_worker(head, tmp_path_factory, hf_model):
    """The reference: the eval run on 1 worker with 1 thread, joined to the ``ray start`` cluster."""
    ws = tmp_path_factory.mktemp("one-worker")
    proc = sealq(ws, *EVAL_ARGS, "--workers", "1", "--threads-per-worker", "1", "--ray-address", head[0])
    assert proc.returncode == 0, proc.stderr[-3000:]
    snap = snapshot(ws)
    assert len(snap["self_edits"]) == 3 and snap["answers"]
    assert_loopback_only(head_pids(head[1]))
    return snap, adapter_files(ws)


def assert_same_run(ws: Path, reference) -> None:
    snap, files = reference
    got = snapshot(ws)
    for table in snap:
        assert got[table] == snap[table], table
    assert adapter_files(ws) == files


@pytest.mark.slow
@pytest.mark.cluster
def test_two_workers_give_the_rows_of_one(one_worker, head, tmp_path):
    proc = sealq(tmp_path, *EVAL_ARGS, "--workers", "2", "--threads-per-worker", "1", "--ray-address", head[0])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_run(tmp_path, one_worker)


@pytest.mark.slow
@pytest.mark.cluster
def test_a_worker_killed_mid_step_is_replaced_and_the_rows_are_unchanged(one_worker, head, tmp_path):
    """Worker 0 SIGKILLs itself after training its first adapter (before renaming it): the pool starts
    another worker, the step runs again there, and the run is recorded once, equal to the reference."""
    proc = sealq(tmp_path, *EVAL_ARGS, "--workers", "2", "--threads-per-worker", "1", "--ray-address", head[0],
                 env={"SEALQ_WORKER_KILL_AT": "train"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "a Ray worker died mid-job" in proc.stderr
    assert_same_run(tmp_path, one_worker)


@pytest.mark.slow
@pytest.mark.cluster
def test_a_killed_driver_resumes_to_the_same_rows(one_worker, head, tmp_path):
    """The driver SIGKILLs itself inside its second self-edit transaction; `sealq loop --resume` with
    workers finishes the run with the reference rows and files."""
    workers = ["--workers", "2", "--threads-per-worker", "1", "--ray-address", head[0]]
    proc = sealq(tmp_path, *EVAL_ARGS, *workers, env={"SEALQ_KILL_AT": "db_write:2"})
    assert proc.returncode == -9, proc.stderr[-3000:]
    (run_id,) = sqlite_utils.Database(str(tmp_path / "runs.db")).execute("select id from runs").fetchone()
    proc = sealq(tmp_path, "loop", "--resume", run_id, "--json", *workers)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_run(tmp_path, one_worker)
