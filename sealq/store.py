"""The workspace and its SQLite store, ``runs.db``.

The workspace is resolved in one place (:func:`resolve_workspace`): ``--workspace``, else ``$SEALQ_HOME``,
else the current directory. The schema changes only through the migrations below (sqlite-utils >= 4
``Migrations``): one function per change, never edited once landed.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import sqlite_utils
from sqlite_utils import Migrations

from sealq.errors import SealqError
from sealq.vocab import RESUMABLE, Command, RunStatus

__all__ = ["resolve_workspace", "open_db", "utc_now", "migrations", "DB_NAME", "find_run", "RunLock", "run_status",
           "workspace_of", "RESUMABLE", "resume_command"]

DB_NAME = "runs.db"

migrations = Migrations("sealq")


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    """Runs, passages, questions, self-edits, adapters, answers and stage timings."""
    db.table("runs").create(
        {
            "id": str,  # ULID: sortable by start time
            "command": str,
            "status": str,  # running | done | failed | interrupted
            "started_utc": str, "finished_utc": str, "duration_ms": int, "model_name": str, "model_path": str,
            "model_sha256": str, "data_path": str, "seed": int, "pid": int, "config_json": str,
            "versions_json": str, "summary_json": str, "error": str,
        },
        pk="id",
    )
    db.table("passages").create(
        {"id": int, "run_id": str, "idx": int, "key": str, "title": str, "context": str, "n_questions": int},
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db.table("questions").create(
        {"id": int, "passage_id": int, "idx": int, "question": str, "answers_json": str},
        pk="id",
        foreign_keys=[("passage_id", "passages", "id")],
    )
    db.table("self_edits").create(
        {
            "id": int, "run_id": str, "passage_id": int, "sample_idx": int, "edit_type": str, "prompt": str,
            "text": str, "items_json": str, "n_items": int, "gen_tokens": int, "directive_raw": str,
            "directive_json": str,
            "directive_fallback_json": str,  # field -> reason, "{}" when the model's directive was used
            "status": str,  # ok | skipped
            "skip_reason": str,
            "accuracy": float,  # contains accuracy after adaptation, no passage in context
            "reward": float,  # accuracy - baseline (contains)
            "reward_em": float, "reward_f1": float, "is_best": int,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id"), ("passage_id", "passages", "id")],
    )
    db.table("adapters").create(
        {
            "id": int, "run_id": str, "self_edit_id": int, "peft_path": str, "gguf_path": str,
            "gguf_sha256": str, "rank": int, "alpha": float, "epochs": int, "lr": float, "n_sequences": int,
            "tokens_trained": int, "final_loss": float, "loss_curve_json": str, "train_seconds": float,
            "convert_seconds": float, "kept": int,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id"), ("self_edit_id", "self_edits", "id")],
    )
    db.table("answers").create(
        {
            "id": int, "run_id": str, "question_id": int,
            "condition": str,  # no_context | with_context | the adapter's source (m005; was 'adapted')
            "self_edit_id": int,  # set for an adapted answer
            "prediction": str, "em": float, "f1": float, "contains": float, "tokens": int, "seconds": float,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id"), ("question_id", "questions", "id"), ("self_edit_id", "self_edits", "id")],
    )
    db.table("timings").create(
        {"id": int, "run_id": str, "passage_id": int, "self_edit_id": int, "stage": str, "seconds": float, "started_utc": str},
        pk="id",
        foreign_keys=[("run_id", "runs", "id"), ("passage_id", "passages", "id"), ("self_edit_id", "self_edits", "id")],
    )
    db.table("passages").create_index(["run_id", "idx"], unique=True)
    db.table("questions").create_index(["passage_id", "idx"], unique=True)
    db.table("self_edits").create_index(["passage_id", "sample_idx"], unique=True)
    db.table("self_edits").create_index(["run_id"])
    db.table("adapters").create_index(["self_edit_id"])
    db.table("answers").create_index(["run_id", "condition"])
    db.table("answers").create_index(["question_id"])
    db.table("timings").create_index(["run_id", "stage"])


@migrations()
def m002_conditions_and_resume(db: sqlite_utils.Database) -> None:
    """Evaluation conditions and repeats (``sealq eval``) and resumable runs (``sealq loop --resume``).

    self_edits.source: ``model`` (a sampled self-edit), ``passage`` (LoRA on the passage alone, no
    self-edit) or ``teacher`` (a teacher-written self-edit read from a file); self_edits.seed_idx: which
    repeat (``--seeds``); best-of-K is picked per passage and repeat among ``model`` rows.
    runs.resumes: how many times the run was resumed.
    """
    db.table("self_edits").add_column("source", str, not_null_default="model")
    db.table("self_edits").add_column("seed_idx", int, not_null_default=0)
    db.execute("drop index if exists idx_self_edits_passage_id_sample_idx")
    db.table("self_edits").create_index(["passage_id", "source", "seed_idx", "sample_idx"], unique=True)
    db.table("runs").add_column("resumes", int, not_null_default=0)


@migrations()
def m003_restem(db: sqlite_utils.Database) -> None:
    """ReST-EM rounds (``sealq loop --rounds``): passages per round and split, policy adapters and lineage.

    passages.round: the outer-loop round whose model answered and wrote self-edits (0 without rounds);
    passages.split: ``all`` (no rounds), ``train`` or ``holdout``. A passage appears once per round.
    policies: the generator update of each round (``round`` = the round whose model it creates, 1..R).
    policy_pairs: which self-edits trained which policy.
    """
    db.table("passages").add_column("round", int, not_null_default=0)
    db.table("passages").add_column("split", str, not_null_default="all")
    db.execute("drop index if exists idx_passages_run_id_idx")
    db.table("passages").create_index(["run_id", "round", "split", "idx"], unique=True)
    db.table("policies").create(
        {
            "id": int,
            "run_id": str,
            "round": int,
            "status": str,  # trained | no_data (no self-edit with a positive reward fit: the model is unchanged)
            "n_pairs": int,
            "peft_path": str,
            "gguf_path": str,
            "gguf_sha256": str,
            "rank": int,
            "alpha": float,
            "epochs": int,
            "lr": float,
            "tokens_trained": int,
            "final_loss": float,
            "loss_curve_json": str,
            "train_seconds": float,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db.table("policies").create_index(["run_id", "round"], unique=True)
    db.table("policy_pairs").create(
        {"policy_id": int, "self_edit_id": int},
        pk=("policy_id", "self_edit_id"),
        foreign_keys=[("policy_id", "policies", "id"), ("self_edit_id", "self_edits", "id")],
    )


@migrations()
def m004_selection_fingerprint(db: sqlite_utils.Database) -> None:
    """runs.selection_sha256: what the run read from its data, so `--resume` can refuse changed data."""
    db.table("runs").add_column("selection_sha256", str)


@migrations()
def m005_one_vocabulary(db: sqlite_utils.Database) -> None:
    """One name per concept (:mod:`sealq.vocab`): self_edits.source ``model`` -> ``self_edit`` and
    ``passage`` -> ``passage_only``; answers.condition ``adapted`` -> ``self_edit`` (an adapted answer's
    condition is its adapter's source); the passage-only and teacher rows' sample_idx 900 / 901 -> 0
    (placeholders; the rows are kept apart by their source, their seeds by :data:`sealq.engine.step.SEED_SLOTS`)."""
    db.execute("update self_edits set source = 'self_edit' where source = 'model'")
    db.execute("update self_edits set source = 'passage_only', sample_idx = 0 where source = 'passage'")
    db.execute("update self_edits set sample_idx = 0 where source = 'teacher'")
    db.execute("update answers set condition = 'self_edit' where condition = 'adapted'")


@migrations()
def m006_continual(db: sqlite_utils.Database) -> None:
    """Continual self-edits (``sealq continual``, SEAL sec. 4.3): model states built from accepted updates,
    gate decisions and measurements, and the answers behind the forgetting matrix.

    A sequence's passages are ``passages`` rows with split ``continual``, round = sequence, idx = position;
    questions.role says which questions the gates see (``gate``) and which the matrix scores (``scored``).
    continual_models: one row per model state of a sequence, named by its history (the steps whose update
    was accepted, e.g. ``0,2``; ``""`` is the base), with the logit parity of llama.cpp's stacked adapters
    against the merged training model. self_edits.continual_model_id: the model state a candidate was
    written and trained on (0 outside continual runs). continual_answers: a model state's answers (with a
    candidate self-edit's adapter on top when candidate_id is set). continual_measures: a gate's
    measurement of a candidate on a model state. continual_decisions: per sequence, gate and step.
    """
    db.table("questions").add_column("role", str)
    db.table("self_edits").add_column("continual_model_id", int, not_null_default=0)
    db.execute("drop index if exists idx_self_edits_passage_id_source_seed_idx_sample_idx")
    db.table("self_edits").create_index(["passage_id", "source", "seed_idx", "sample_idx", "continual_model_id"], unique=True)
    db.table("continual_models").create(
        {"id": int, "run_id": str, "sequence": int, "history": str, "parent_id": int, "update_self_edit_id": int,
         "parity_corr": float,  # llama.cpp (stacked GGUF adapters) vs merged PEFT: corr. of the logit change from base
         "parity_scale": float,  # size of llama.cpp's logit change relative to PEFT's
         "parity_max_abs": float},  # largest |difference| of the two logit changes
        pk="id", foreign_keys=[("run_id", "runs", "id")])
    db.table("continual_models").create_index(["run_id", "sequence", "history"], unique=True)
    db.table("continual_answers").create(
        {"id": int, "run_id": str, "model_id": int, "candidate_id": int, "question_id": int, "prediction": str,
         "em": float, "f1": float, "contains": float, "tokens": int, "seconds": float},
        pk="id", foreign_keys=[("run_id", "runs", "id"), ("model_id", "continual_models", "id"),
                               ("question_id", "questions", "id")])
    db.table("continual_answers").create_index(["model_id", "candidate_id", "question_id"])
    db.table("continual_measures").create(
        {"id": int, "run_id": str, "model_id": int, "self_edit_id": int, "kind": str,
         "before": float, "after": float, "value": float},
        pk="id", foreign_keys=[("run_id", "runs", "id"), ("model_id", "continual_models", "id")])
    db.table("continual_measures").create_index(["model_id", "self_edit_id", "kind"], unique=True)
    db.table("continual_decisions").create(
        {"id": int, "run_id": str, "sequence": int, "gate": str, "step": int, "model_id": int, "self_edit_id": int,
         "status": str, "measurement": float, "threshold": float, "next_model_id": int},
        pk="id", foreign_keys=[("run_id", "runs", "id"), ("model_id", "continual_models", "id")])
    db.table("continual_decisions").create_index(["run_id", "sequence", "gate", "step"], unique=True)


@migrations()
def m007_learn(db: sqlite_utils.Database) -> None:
    """Learning a document (``sealq learn``): the model's probe questions.

    probes: every probe candidate the model wrote for a passage (:mod:`sealq.engine.probes`): the sentence
    asked about, the question, the in-context answer, the grounded span kept as the probe's answer, why it
    was kept or dropped (``reason``), and the ``questions`` row of a kept one (role ``gate``).
    passages.n_probes: probes kept for the passage; NULL until its probes are written.
    """
    db.table("passages").add_column("n_probes", int)
    db.table("probes").create(
        {"id": int, "run_id": str, "passage_id": int, "idx": int, "sentence": str, "question": str,
         "answer_text": str, "answer": str, "reason": str, "question_id": int, "seconds": float},
        pk="id", foreign_keys=[("run_id", "runs", "id"), ("passage_id", "passages", "id")])
    db.table("probes").create_index(["passage_id", "idx"], unique=True)


@migrations()
def m008_threads(db: sqlite_utils.Database) -> None:
    """adapters.threads, policies.threads: the torch threads each training used. The run's own counts are in
    ``runs.config_json`` (``train.threads``, ``eval.threads``, decided when the run starts or resumes); an
    adapter trained with fewer says that other processes held cores then (an automatic count only)."""
    db.table("adapters").add_column("threads", int)
    db.table("policies").add_column("threads", int)


def resolve_workspace(workspace: str | os.PathLike | None = None, create: bool = True) -> Path:
    """The folder that holds ``runs.db`` and the adapters: ``workspace``, else ``$SEALQ_HOME``, else cwd.

    Args:
        workspace: an explicit folder (``--workspace``).
        create: create it and require write access (commands that only read pass False).

    Raises:
        SealqError: the folder cannot be created or is not writable.
    """
    raw = workspace or os.environ.get("SEALQ_HOME") or os.getcwd()
    path = Path(raw).expanduser().resolve()
    if not create:
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SealqError(f"workspace {path}: cannot create ({e.strerror or e})") from None
    if not path.is_dir():
        raise SealqError(f"workspace {path}: not a directory")
    try:  # a real write: os.access says yes to root on a read-only mount
        import tempfile

        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise SealqError(f"workspace {path}: not writable ({e.strerror or e})") from None
    return path


def open_db(workspace: Path | str | None = None, path: Path | str | None = None) -> sqlite_utils.Database:
    """Open (creating if needed) ``runs.db`` in the workspace, in WAL mode, with all migrations applied.

    Args:
        workspace: the workspace folder (see :func:`resolve_workspace`); ignored when ``path`` is given.
        path: an explicit database file, or ``":memory:"``.
    """
    if path is None:
        path = resolve_workspace(workspace) / DB_NAME
    memory = str(path) == ":memory:"
    db = sqlite_utils.Database(memory=True) if memory else sqlite_utils.Database(str(path))
    try:
        if not memory:
            db.enable_wal()
        db.execute("PRAGMA foreign_keys = ON")
        migrations.apply(db)
    except Exception as e:
        if isinstance(e, SealqError):
            raise
        import sqlite3

        if isinstance(e, sqlite3.DatabaseError):
            raise SealqError(f"{path}: cannot open the run database ({e})") from None
        raise
    return db


def utc_now() -> str:
    """Current UTC time as ISO 8601 with milliseconds, e.g. ``2026-11-29T14:06:58.123Z``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def find_run(db: sqlite_utils.Database, run: str) -> str:
    """A full run id from a full id, a unique prefix of one, or ``latest``.

    Raises:
        SealqError: empty, ambiguous or unknown.
    """
    if run == "latest":
        row = db.execute("select id from runs order by id desc limit 1").fetchone()
    else:
        if not run:
            raise SealqError("empty run id")
        rows = db.execute("select id from runs where substr(id, 1, ?) = ?", [len(run), run.upper()]).fetchall()
        if len(rows) > 1:
            raise SealqError(f"run {run!r} is ambiguous ({len(rows)} runs start with it)")
        row = rows[0] if rows else None
    if row is None:
        raise SealqError(f"no run {run!r} in runs.db (see `sealq runs`)")
    return row[0]


class RunLock:
    """The one-writer-per-run lock: an exclusive ``flock`` on ``<workspace>/runs/<run id>/writer.lock``.

    The kernel drops the lock when the holding process dies, however it dies (SIGKILL included), so a
    lock is never stale; readers of runs.db never take it (``sealq runs`` only probes it for a moment to
    tell a live run from a dead one). The holder's pid is written into the file for the error message of
    a second writer.
    """

    def __init__(self, workspace: Path, run_id: str):
        self.path = Path(workspace) / "runs" / run_id / "writer.lock"
        self.run_id = run_id
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock or fail at once.

        Raises:
            SealqError: another process holds it ("run N is being written by process P").
        """
        import fcntl

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise SealqError(f"{self.path}: cannot create the run lock ({e.strerror or e})") from None
        import time

        for attempt in range(5):  # a reader's probe (held_by_other) holds a shared lock for microseconds
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt < 4:
                    time.sleep(0.1)
        else:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise SealqError(f"run {self.run_id} is being written by process {holder}; "
                             "wait for it to finish or stop it first") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def held_by_other(self) -> bool:
        """True when some live process holds the lock (used to tell a running run from a dead one)."""
        import fcntl

        if not self.path.exists():
            return False
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    def release(self) -> None:
        """Drop the lock (closing the descriptor releases it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def resume_command(run_id: str, command: str = "loop") -> str:
    """The command that continues a run: ``sealq continual --resume RUN`` for a continual run, ``sealq learn
    --resume RUN`` for a learn run (``command`` is ``runs.command``), ``sealq loop --resume RUN`` for every
    other kind."""
    own = command in (Command.CONTINUAL, Command.LEARN)
    return f"sealq {command if own else 'loop'} --resume {run_id}"


def workspace_of(db: sqlite_utils.Database) -> Path | None:
    """The workspace folder of an open ``runs.db`` (None for an in-memory database)."""
    row = db.execute("pragma database_list").fetchone()
    return Path(row[2]).parent if row and row[2] else None


def run_status(db: sqlite_utils.Database, row: dict) -> str:
    """The status every view shows (``sealq runs``, ``show``, ``report``): the recorded one, except ``dead``
    for a run recorded as ``running`` whose lock no process holds (it was killed or crashed; the kernel
    dropped its lock).

    Args:
        db: the run's ``runs.db`` (its folder is the workspace that holds the lock files).
        row: the run's row of ``runs`` (``id`` and ``status``).
    """
    if row["status"] != RunStatus.RUNNING:
        return row["status"]
    ws = workspace_of(db)
    if ws is None or RunLock(ws, row["id"]).held_by_other():
        return "running"
    return "dead"
