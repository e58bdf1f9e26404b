"""runs.db: migrations give the exact schema; the workspace is resolved in one place."""

import sqlite3

import pytest
import sqlite_utils

from sealq.store import DB_NAME, migrations, open_db, resolve_workspace
from sealq.vocab import Condition, Source

pytestmark = pytest.mark.unit  # no model: the unit tier (tests/conftest.py)

EXPECTED = {
    "runs": ["id", "command", "status", "started_utc", "finished_utc", "duration_ms", "model_name", "model_path",
             "model_sha256", "data_path", "seed", "pid", "config_json", "versions_json", "summary_json", "error", "resumes", "selection_sha256"],
    "passages": ["id", "run_id", "idx", "key", "title", "context", "n_questions", "round", "split",
                 "n_probes"],
    "questions": ["id", "passage_id", "idx", "question", "answers_json", "role"],
    "self_edits": ["id", "run_id", "passage_id", "sample_idx", "edit_type", "prompt", "text", "items_json", "n_items",
                   "gen_tokens", "directive_raw", "directive_json", "directive_fallback_json", "status", "skip_reason",
                   "accuracy", "reward", "reward_em", "reward_f1", "is_best", "source", "seed_idx",
                   "continual_model_id"],
    "adapters": ["id", "run_id", "self_edit_id", "peft_path", "gguf_path", "gguf_sha256", "rank", "alpha", "epochs",
                 "lr", "n_sequences", "tokens_trained", "final_loss", "loss_curve_json", "train_seconds",
                 "convert_seconds", "kept", "threads"],
    "answers": ["id", "run_id", "question_id", "condition", "self_edit_id", "prediction", "em", "f1", "contains",
                "tokens", "seconds"],
    "timings": ["id", "run_id", "passage_id", "self_edit_id", "stage", "seconds", "started_utc"],
    "policies": ["id", "run_id", "round", "status", "n_pairs", "peft_path", "gguf_path", "gguf_sha256", "rank", "alpha",
                 "epochs", "lr", "tokens_trained", "final_loss", "loss_curve_json", "train_seconds", "threads"],
    "policy_pairs": ["policy_id", "self_edit_id"],
    "continual_models": ["id", "run_id", "sequence", "history", "parent_id", "update_self_edit_id", "parity_corr",
                         "parity_scale", "parity_max_abs"],
    "continual_answers": ["id", "run_id", "model_id", "candidate_id", "question_id", "prediction", "em", "f1",
                          "contains", "tokens", "seconds"],
    "continual_measures": ["id", "run_id", "model_id", "self_edit_id", "kind", "before", "after", "value"],
    "continual_decisions": ["id", "run_id", "sequence", "gate", "step", "model_id", "self_edit_id", "status",
                            "measurement", "threshold", "next_model_id"],
    "probes": ["id", "run_id", "passage_id", "idx", "sentence", "question", "answer_text", "answer", "reason",
               "question_id", "seconds"],
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
    """A runs.db written before m002 keeps its rows: old self-edits become sampled self-edits
    (m002's default source 'model', renamed 'self_edit' by m005), repeat 0."""
    path = tmp_path / DB_NAME
    old = sqlite_utils.Database(str(path))
    migrations.apply(old, stop_before="m002_conditions_and_resume")
    old["runs"].insert({"id": "R", "status": "done"})
    old["passages"].insert({"id": 1, "run_id": "R", "idx": 0})
    for j in range(2):
        old["self_edits"].insert({"run_id": "R", "passage_id": 1, "sample_idx": j, "is_best": j})
    old.conn.close()
    db = open_db(path=path)
    assert [(r["sample_idx"], r["source"], r["seed_idx"]) for r in db["self_edits"].rows] == [
        (0, Source.SELF_EDIT, 0), (1, Source.SELF_EDIT, 0)]
    assert db["runs"].get("R")["resumes"] == 0
    # the new uniqueness: the same sample index may exist once per source and repeat
    db["self_edits"].insert({"run_id": "R", "passage_id": 1, "sample_idx": 0, "source": "teacher"})
    with pytest.raises(sqlite3.IntegrityError):
        db["self_edits"].insert({"run_id": "R", "passage_id": 1, "sample_idx": 0, "source": "teacher"})


def _db_before_m005(path):
    """A runs.db with the schema and the stored names of sealq before m005 (m001-m004 applied)."""
    old = sqlite_utils.Database(str(path))
    migrations.apply(old, stop_before="m005_one_vocabulary")
    assert "m005_one_vocabulary" not in {r["name"] for r in old["_sqlite_migrations"].rows}
    return old


def test_m005_renames_the_stored_names_of_an_old_database(tmp_path):
    """m005: self_edits.source 'model' -> 'self_edit', 'passage' -> 'passage_only' (sample_idx 900 -> 0),
    teacher sample_idx 901 -> 0, answers.condition 'adapted' -> 'self_edit'; everything else is kept."""
    path = tmp_path / DB_NAME
    old = _db_before_m005(path)
    old["runs"].insert({"id": "R", "status": "done"})
    old["passages"].insert({"id": 1, "run_id": "R", "idx": 0})
    old["questions"].insert({"id": 1, "passage_id": 1, "idx": 0, "question": "Q?", "answers_json": '["A"]'})
    # (id, source, seed_idx, sample_idx) as sealq wrote them before m005
    stored = [(1, "model", 0, 0), (2, "model", 0, 1), (3, "passage", 0, 900), (4, "teacher", 0, 901),
              (5, "model", 1, 0), (6, "passage", 1, 900), (7, "teacher", 1, 901)]
    for sid, source, seed_idx, sample_idx in stored:
        old["self_edits"].insert({"id": sid, "run_id": "R", "passage_id": 1, "source": source, "seed_idx": seed_idx,
                                  "sample_idx": sample_idx, "reward": sid / 10, "is_best": int(sid == 2)})
    answers = [(1, "no_context", None), (2, "with_context", None), (3, "adapted", 1), (4, "adapted", 2),
               (5, "passage_only", 3), (6, "teacher", 4), (7, "adapted", 5)]
    for aid, condition, se in answers:
        old["answers"].insert({"id": aid, "run_id": "R", "question_id": 1, "condition": condition,
                               "self_edit_id": se, "contains": 1.0})
    old.conn.close()

    db = open_db(path=path)
    assert "m005_one_vocabulary" in {r["name"] for r in db["_sqlite_migrations"].rows}
    got = [(r["id"], r["source"], r["seed_idx"], r["sample_idx"], r["reward"], r["is_best"])
           for r in db.query("select * from self_edits order by id")]
    assert got == [
        (1, "self_edit", 0, 0, 0.1, 0), (2, "self_edit", 0, 1, 0.2, 1), (3, "passage_only", 0, 0, 0.3, 0),
        (4, "teacher", 0, 0, 0.4, 0), (5, "self_edit", 1, 0, 0.5, 0), (6, "passage_only", 1, 0, 0.6, 0),
        (7, "teacher", 1, 0, 0.7, 0),
    ]
    assert {r["source"] for r in db["self_edits"].rows} <= set(Source.values())
    got = [(r["id"], r["condition"], r["self_edit_id"]) for r in db.query("select * from answers order by id")]
    assert got == [(1, "no_context", None), (2, "with_context", None), (3, "self_edit", 1), (4, "self_edit", 2),
                   (5, "passage_only", 3), (6, "teacher", 4), (7, "self_edit", 5)]
    assert {r["condition"] for r in db["answers"].rows} <= set(Condition.values())
    # an adapted answer's condition is its adapter's source
    assert not list(db.query("select a.id from answers a join self_edits s on s.id = a.self_edit_id "
                             "where a.condition != s.source"))
    db.conn.close()
    assert [tuple(r) for r in open_db(path=path).execute("select id, source, sample_idx from self_edits order by id")][2] == (
        3, "passage_only", 0)  # re-opening applies nothing twice


def test_m005_on_a_database_with_new_names_changes_nothing(tmp_path):
    """A database whose rows already use the new names (written by the current schema) is left as it is."""
    db = open_db(path=tmp_path / DB_NAME)
    db["runs"].insert({"id": "R", "status": "done"})
    db["passages"].insert({"id": 1, "run_id": "R", "idx": 0})
    db["self_edits"].insert({"id": 1, "run_id": "R", "passage_id": 1, "source": Source.SELF_EDIT, "sample_idx": 3})
    before = list(db["self_edits"].rows)
    db.conn.close()
    assert list(open_db(path=tmp_path / DB_NAME)["self_edits"].rows) == before
