"""Crash safety: a real `sealq loop` process is killed (SIGKILL) or runs out of space at chosen points,
`sealq loop --resume` finishes it, and the rows equal those of an uninterrupted run with the same seed.

The kill points are in :mod:`sealq.faults`; `SEALQ_KILL_AT=point:n` makes the process SIGKILL itself the
n-th time it passes the point (no handler, no finally: the same as `kill -9`).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlite_utils

from sealq.analysis.snapshot import snapshot as run_snapshot

SEALQ = str(Path(sys.executable).parent / "sealq")
# 1 bundled passage, K=2 (two edit types), model-written directives, 1 epoch: every stage, quickly
ARGS = ["loop", "--passages", "1", "--k", "2", "--epochs", "1", "--edit-type", "implications",
        "--edit-type", "self-qa", "--seed", "3"]


def sealq(ws: Path, *args, env=None, preexec_fn=None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "SEALQ_KILL_AT"}
    full_env.update(env or {})
    return subprocess.run([SEALQ, *args, "--workspace", str(ws)], env=full_env, capture_output=True, text=True,
                          timeout=900, preexec_fn=preexec_fn)


def snapshot(ws: Path) -> dict:
    """Every recorded row that describes the work (sealq.analysis.snapshot: ids, run id, timings left out)."""
    return run_snapshot(sqlite_utils.Database(str(ws / "runs.db")))


def files(ws: Path) -> list[str]:
    """Adapter files on disk, run id replaced, lock file left out."""
    out = []
    for f in sorted((ws / "runs").rglob("*")):
        rel = f.relative_to(ws / "runs").parts
        if f.is_file() and rel[-1] != "writer.lock":
            out.append("/".join(("RUN", *rel[1:])))
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory, hf_model):
    """The uninterrupted run (hf_model: the training-model cache is warm before any subprocess starts)."""
    ws = tmp_path_factory.mktemp("reference")
    proc = sealq(ws, *ARGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    snap = snapshot(ws)
    assert len(snap["self_edits"]) == 2 and snap["answers"]
    return snap, files(ws)


def run_id_and_status(ws: Path) -> tuple[str, str]:
    (row,) = sqlite_utils.Database(str(ws / "runs.db")).execute("select id, status from runs").fetchall()
    return row


def resume_and_compare(ws: Path, reference, resumes: int = 1) -> None:
    """``sealq loop --resume`` finishes the run in ``ws`` (its ``resumes``-th resume): the same run id, done,
    and every recorded row and adapter file equal to the uninterrupted ``reference``."""
    run_id, _ = run_id_and_status(ws)
    proc = sealq(ws, "loop", "--resume", run_id[:10], "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["run_id"] == run_id
    assert run_id_and_status(ws) == (run_id, "done")
    assert sqlite_utils.Database(str(ws / "runs.db"))["runs"].get(run_id)["resumes"] == resumes
    snap, on_disk = reference
    got = snapshot(ws)
    for table in snap:
        assert got[table] == snap[table], table
    assert files(ws) == on_disk  # no orphaned temporary folder or unrecorded adapter left


#: The four kill points, in the order one run reaches them: the first process dies inside the database
#: transaction of its second self-edit (the first is recorded); each resume redoes that self-edit and dies at
#: the next point (after generating it, while training it, between its conversion and evaluation); the last
#: resume finishes. One chain, not four runs: each point is still reached (exit -9), each killed process's
#: state is checked, and each resume starts from a different kill.
CHAIN = ("db_write:2", "generate:1", "train:1", "convert:1")


def assert_killed_at(ws: Path, proc: subprocess.CompletedProcess, point: str, resumes: int) -> int:
    """The process SIGKILLed itself at ``point``; nothing recorded it: the run stays ``running`` (listed
    ``dead``), with ``resumes`` resumes and its time up to the last commit kept. Returns that time (ms)."""
    assert proc.returncode == -9, (point, proc.stderr[-3000:])
    run_id, status = run_id_and_status(ws)
    assert status == "running"  # the process had no chance to record anything
    row = sqlite_utils.Database(str(ws / "runs.db"))["runs"].get(run_id)
    assert row["resumes"] == resumes and row["duration_ms"] > 0
    listed = subprocess.run([SEALQ, "runs", "--json", "--workspace", str(ws)], capture_output=True, text=True)
    assert json.loads(listed.stdout)[0]["status"] == "dead"
    return row["duration_ms"]


@pytest.mark.slow
def test_sigkill_at_each_point_then_resume_equals_uninterrupted(reference, tmp_path):
    proc = sealq(tmp_path, *ARGS, env={"SEALQ_KILL_AT": CHAIN[0]})
    killed_ms = assert_killed_at(tmp_path, proc, CHAIN[0], 0)
    # the killed transaction left nothing behind: exactly the self-edit before it
    db = sqlite_utils.Database(str(tmp_path / "runs.db"))
    assert db["self_edits"].count == 1 and db["adapters"].count == 1
    run_id, _ = run_id_and_status(tmp_path)
    for resumes, point in enumerate(CHAIN[1:], start=1):
        proc = sealq(tmp_path, "loop", "--resume", run_id[:10], env={"SEALQ_KILL_AT": point})
        ms = assert_killed_at(tmp_path, proc, point, resumes)
        assert ms >= killed_ms
        killed_ms = ms
    resume_and_compare(tmp_path, reference, resumes=len(CHAIN))
    assert sqlite_utils.Database(str(tmp_path / "runs.db"))["runs"].get(run_id)["duration_ms"] > killed_ms


@pytest.mark.slow
def test_full_workspace_is_one_line_and_resumable(reference, tmp_path):
    """Writes beyond 2 MB fail (RLIMIT_FSIZE -> EFBIG, as a full disk fails with ENOSPC): the first adapter
    save fails; the user sees one line naming the workspace and the resume command; the run resumes."""
    limit = 2 * 1024 * 1024

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = sealq(tmp_path, *ARGS, preexec_fn=small_disk)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: workspace ") and "is full" in lines[-1] and "--resume" in lines[-1]
    assert "Traceback" not in proc.stderr
    _run_id, status = run_id_and_status(tmp_path)
    assert status == "failed"
    assert sqlite_utils.Database(str(tmp_path / "runs.db"))["passages"].count == 1  # the baseline was kept
    resume_and_compare(tmp_path, reference)


def test_second_writer_is_refused_and_readers_are_not(cli_run, tmp_path):
    """While a process holds a run's lock, `--resume` of that run fails with its pid; `sealq runs` still reads."""
    ws, summary = cli_run
    run_id = summary["run_id"]
    db = sqlite_utils.Database(str(ws / "runs.db"))
    db["runs"].update(run_id, {"status": "running"})
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from sealq.store import RunLock\n"
        f"RunLock(Path({str(ws)!r}), {run_id!r}).acquire(); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = sealq(ws, "loop", "--resume", run_id)
        assert proc.returncode == 2
        assert proc.stderr.strip() == (f"Error: run {run_id} is being written by process {holder.pid}; "
                                       "wait for it to finish or stop it first")
        listed = subprocess.run([SEALQ, "runs", "--json", "--workspace", str(ws)], capture_output=True, text=True)
        assert json.loads(listed.stdout)[0]["status"] == "running"
    finally:
        holder.kill()
        holder.wait()
        db["runs"].update(run_id, {"status": "done"})
    listed = subprocess.run([SEALQ, "runs", "--json", "--workspace", str(ws)], capture_output=True, text=True)
    assert json.loads(listed.stdout)[0]["status"] == "done"


def test_resume_of_a_finished_run_is_refused(cli_run):
    ws, summary = cli_run
    proc = sealq(ws, "loop", "--resume", summary["run_id"])
    assert proc.returncode == 2 and proc.stderr.strip() == f"Error: run {summary['run_id']} is complete; nothing to resume"


def test_reading_while_a_transaction_is_open(tmp_path):
    """WAL: a reader sees the last committed state while a writer's transaction is open, and is not blocked."""
    from sealq.store import open_db

    writer = open_db(tmp_path)
    writer["runs"].insert({"id": "A", "status": "done"})
    writer.conn.execute("begin immediate")
    writer.conn.execute("insert into runs (id, status) values ('B', 'running')")
    t0 = time.perf_counter()
    reader = sqlite_utils.Database(str(tmp_path / "runs.db"))
    assert [r["id"] for r in reader["runs"].rows] == ["A"]
    assert time.perf_counter() - t0 < 1
    writer.conn.execute("commit")
    assert [r["id"] for r in reader["runs"].rows] == ["A", "B"]


EVAL_ARGS = ["eval", "--passages", "1", "--k", "1", "--epochs", "1", "--seed", "5"]


@pytest.mark.slow
def test_killed_eval_run_resumes_to_the_same_rows(tmp_path_factory, hf_model):
    """An eval run (passage-only, self-edit, teacher per passage) killed while training its teacher
    adapter, after the passage-only adapter was recorded and deleted: resume gives the reference rows and
    files (no passage-only or teacher adapter left on disk)."""
    from sealq.engine.dataset import load_passages

    p = load_passages()[0]
    teacher = tmp_path_factory.mktemp("teacher") / "t.json"
    teacher.write_text(json.dumps([{"title": p.title, "context": p.context,
                                    "completions": ["1. The lighthouse lamp is green.\n2. The keeper lights it at dusk."]}]))
    args = [*EVAL_ARGS, "--teacher", str(teacher), "--json"]
    ref = tmp_path_factory.mktemp("eval-ref")
    proc = sealq(ref, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ws = tmp_path_factory.mktemp("eval-killed")
    proc = sealq(ws, *args, env={"SEALQ_KILL_AT": "train:3"})
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert sqlite_utils.Database(str(ws / "runs.db"))["self_edits"].count == 2  # passage-only and the self-edit
    resume_and_compare(ws, (snapshot(ref), files(ref)))
    sources = {r[0] for r in sqlite_utils.Database(str(ws / "runs.db")).execute("select source from self_edits")}
    assert sources == {"passage_only", "self_edit", "teacher"}


RESTEM_ARGS = ["loop", "--rounds", "1", "--holdout-fraction", "0.25", "--passages", "2", "--holdout-passages", "1",
               "--k", "2", "--edit-type", "rewrite", "--directives", "off", "--epochs", "4", "--seed", "3"]


@pytest.mark.slow
def test_killed_restem_run_resumes_with_the_policy_attached(tmp_path_factory, hf_model):
    """A ReST-EM run killed after its policy adapter was trained and converted, before the policy row was
    recorded: resume removes the unrecorded policy files, trains the policy again, and round 1 (whose
    self-edits are written by base + policy) gives the same rows and files as an uninterrupted run."""
    ref = tmp_path_factory.mktemp("restem-ref")
    proc = sealq(ref, *RESTEM_ARGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reference = snapshot(ref)
    assert [p[1] for p in reference["policies"]] == ["trained"] and reference["policy_pairs"]
    ws = tmp_path_factory.mktemp("restem-killed")
    proc = sealq(ws, *RESTEM_ARGS, env={"SEALQ_KILL_AT": "policy:1"})
    assert proc.returncode == -9, proc.stderr[-3000:]
    db = sqlite_utils.Database(str(ws / "runs.db"))
    assert db["policies"].count == 0 and {r[0] for r in db.execute("select round from passages")} == {0}
    assert any(f.endswith(".gguf") for f in files(ws))  # the converted, unrecorded policy is on disk
    resume_and_compare(ws, (reference, files(ref)))
