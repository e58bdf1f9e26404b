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

__all__ = ["resolve_workspace", "open_db", "utc_now", "migrations", "DB_NAME"]

DB_NAME = "runs.db"

migrations = Migrations("sealq")


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    """Runs, passages, questions, self-edits, adapters, answers and stage timings."""
    db["runs"].create(
        {
            "id": str,  # ULID: sortable by start time
            "command": str,
            "status": str,  # running | done | failed | interrupted
            "started_utc": str,
            "finished_utc": str,
            "duration_ms": int,
            "model_name": str,
            "model_path": str,
            "model_sha256": str,
            "data_path": str,
            "seed": int,
            "pid": int,
            "config_json": str,
            "versions_json": str,
            "summary_json": str,
            "error": str,
        },
        pk="id",
    )
    db["passages"].create(
        {"id": int, "run_id": str, "idx": int, "key": str, "title": str, "context": str, "n_questions": int},
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db["questions"].create(
        {"id": int, "passage_id": int, "idx": int, "question": str, "answers_json": str},
        pk="id",
        foreign_keys=[("passage_id", "passages", "id")],
    )
    db["self_edits"].create(
        {
            "id": int,
            "run_id": str,
            "passage_id": int,
            "sample_idx": int,
            "edit_type": str,
            "prompt": str,
            "text": str,
            "items_json": str,
            "n_items": int,
            "gen_tokens": int,
            "directive_raw": str,
            "directive_json": str,
            "directive_fallback_json": str,  # field -> reason, "{}" when the model's directive was used
            "status": str,  # ok | skipped
            "skip_reason": str,
            "accuracy": float,  # contains accuracy after adaptation, no passage in context
            "reward": float,  # accuracy - baseline (contains)
            "reward_em": float,
            "reward_f1": float,
            "is_best": int,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id"), ("passage_id", "passages", "id")],
    )
    db["adapters"].create(
        {
            "id": int,
            "run_id": str,
            "self_edit_id": int,
            "peft_path": str,
            "gguf_path": str,
            "gguf_sha256": str,
            "rank": int,
            "alpha": float,
            "epochs": int,
            "lr": float,
            "n_sequences": int,
            "tokens_trained": int,
            "final_loss": float,
            "loss_curve_json": str,
            "train_seconds": float,
            "convert_seconds": float,
            "kept": int,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id"), ("self_edit_id", "self_edits", "id")],
    )
    db["answers"].create(
        {
            "id": int,
            "run_id": str,
            "question_id": int,
            "condition": str,  # no_context | with_context | adapted
            "self_edit_id": int,  # set for condition 'adapted'
            "prediction": str,
            "em": float,
            "f1": float,
            "contains": float,
            "tokens": int,
            "seconds": float,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id"), ("question_id", "questions", "id"), ("self_edit_id", "self_edits", "id")],
    )
    db["timings"].create(
        {"id": int, "run_id": str, "passage_id": int, "self_edit_id": int, "stage": str, "seconds": float, "started_utc": str},
        pk="id",
        foreign_keys=[("run_id", "runs", "id"), ("passage_id", "passages", "id"), ("self_edit_id", "self_edits", "id")],
    )
    db["passages"].create_index(["run_id", "idx"], unique=True)
    db["questions"].create_index(["passage_id", "idx"], unique=True)
    db["self_edits"].create_index(["passage_id", "sample_idx"], unique=True)
    db["self_edits"].create_index(["run_id"])
    db["adapters"].create_index(["self_edit_id"])
    db["answers"].create_index(["run_id", "condition"])
    db["answers"].create_index(["question_id"])
    db["timings"].create_index(["run_id", "stage"])


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
    if not os.access(path, os.W_OK):
        raise SealqError(f"workspace {path}: not writable")
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
