"""runs.db: migrations give the exact schema; the workspace is resolved in one place."""

import sqlite_utils

from sealq.store import DB_NAME, migrations, open_db, resolve_workspace

EXPECTED = {
    "runs": ["id", "command", "status", "started_utc", "finished_utc", "duration_ms", "model_name", "model_path",
             "model_sha256", "data_path", "seed", "pid", "config_json", "versions_json", "summary_json", "error", "resumes", "selection_sha256"],
    "passages": ["id", "run_id", "idx", "key", "title", "context", "n_questions", "round", "split"],
    "questions": ["id", "passage_id", "idx", "question", "answers_json"],
    "self_edits": ["id", "run_id", "passage_id", "sample_idx", "edit_type", "prompt", "text", "items_json", "n_items",
                   "gen_tokens", "directive_raw", "directive_json", "directive_fallback_json", "status", "skip_reason",
                   "accuracy", "reward", "reward_em", "reward_f1", "is_best", "source", "seed_idx"],
    "adapters": ["id", "run_id", "self_edit_id", "peft_path", "gguf_path", "gguf_sha256", "rank", "alpha", "epochs",
                 "lr", "n_sequences", "tokens_trained", "final_loss", "loss_curve_json", "train_seconds",
                 "convert_seconds", "kept"],
    "answers": ["id", "run_id", "question_id", "condition", "self_edit_id", "prediction", "em", "f1", "contains",
                "tokens", "seconds"],
    "timings": ["id", "run_id", "passage_id", "self_edit_id", "stage", "seconds", "started_utc"],
    "policies": ["id", "run_id", "round", "status", "n_pairs", "peft_path", "gguf_path", "gguf_sha256", "rank", "alpha",
                 "epochs", "lr", "tokens_trained", "final_loss", "loss_curve_json", "train_seconds"],
    "policy_pairs": ["policy_id", "self_edit_id"],
}


def test_migrations_give_exact_columns():
    db = open_db(path=":memory:")
    for table, columns in EXPECTED.items():
        assert [c.name for c in db[table].columns] == columns, table
    fks = {(fk.column, fk.other_table) for fk in db["answers"].foreign_keys}
    assert fks == {("run_id", "runs"), ("question_id", "questions"), ("self_edit_id", "self_edits")}


def test_open_db_is_idempotent_and_wal(workspace):
    db = open_db()
    db["runs"].insert({"id": "r1", "status": "done"})
    db2 = open_db()  # re-applying migrations changes nothing
    assert db2["runs"].count == 1
    assert (workspace / DB_NAME).exists()
    assert sqlite_utils.Database(str(workspace / DB_NAME)).journal_mode == "wal"


def test_workspace_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("SEALQ_HOME", str(tmp_path / "home"))
    assert resolve_workspace() == (tmp_path / "home").resolve()
    assert resolve_workspace(tmp_path / "explicit") == (tmp_path / "explicit").resolve()
    monkeypatch.delenv("SEALQ_HOME")
    monkeypatch.chdir(tmp_path)
    assert resolve_workspace() == tmp_path.resolve()


def test_a_runs_db_of_the_first_schema_upgrades_in_place(tmp_path):
    """A runs.db written before m002 keeps its rows: old self-edits become source 'model', repeat 0."""
    path = tmp_path / DB_NAME
    old = sqlite_utils.Database(str(path))
    migrations.apply(old, stop_before="m002_conditions_and_resume")
    old["runs"].insert({"id": "R", "status": "done"})
    old["passages"].insert({"id": 1, "run_id": "R", "idx": 0})
    for j in range(2):
        old["self_edits"].insert({"run_id": "R", "passage_id": 1, "sample_idx": j, "is_best": j})
    old.conn.close()
    db = open_db(path=path)
    assert [(r["sample_idx"], r["source"], r["seed_idx"]) for r in db["self_edits"].rows] == [(0, "model", 0), (1, "model", 0)]
    assert db["runs"].get("R")["resumes"] == 0
    # the new uniqueness: the same sample index may exist once per source and repeat
    db["self_edits"].insert({"run_id": "R", "passage_id": 1, "sample_idx": 0, "source": "teacher"})
    import sqlite3

    import pytest

    with pytest.raises(sqlite3.IntegrityError):
        db["self_edits"].insert({"run_id": "R", "passage_id": 1, "sample_idx": 0, "source": "teacher"})
