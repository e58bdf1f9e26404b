"""`sealq eval`: every condition of the SEAL table on the real model, with intervals and paired differences."""

import json
from typing import NamedTuple

import pytest
import sqlite_utils
from click.testing import CliRunner

from sealq.analysis.tables import PAIRS
from sealq.cli import cli
from sealq.engine.dataset import load_passages

# A hand-written "teacher" self-edit for the first bundled passage (the format of SEAL's published
# synthetic data: title, context, completions).
TEACHER_LINES = [
    "The Varnholt Lighthouse stands on a cliff above the harbour.",
    "Its lamp flashes green, which is unusual for a lighthouse.",
    "The keeper of the Varnholt Lighthouse maintains the lamp every night.",
]


def _teacher_file(folder):
    """A teacher file for the first bundled passage (and one passage not in the data)."""
    p = load_passages()[0]
    assert p.title == "Varnholt Lighthouse"
    teacher = folder / "teacher.json"
    teacher.write_text(json.dumps([
        {"title": p.title, "context": p.context, "completions": ["\n".join(f"{i + 1}. {x}" for i, x in enumerate(TEACHER_LINES))]},
        {"title": "Not in the data", "context": "Unrelated.", "completions": ["x y z"]},
    ]))
    return teacher


class Trained(NamedTuple):
    source: str
    items: int
    sequences: int


def _sequences_by_source(ws) -> list[Trained]:
    """Source, items and sequences trained of every trained adapter of a workspace."""
    db = sqlite_utils.Database(str(ws / "runs.db"))
    return [Trained(r["source"], r["n_items"], r["n_sequences"]) for r in db.query(
        "select s.source, s.n_items, a.n_sequences from adapters a join self_edits s on s.id = a.self_edit_id")]


@pytest.fixture(scope="module")
def eval_run(tmp_path_factory, cache_root):
    teacher = _teacher_file(tmp_path_factory.mktemp("teacher"))
    ws = tmp_path_factory.mktemp("eval-ws")
    result = CliRunner().invoke(
        cli, ["eval", "--k", "2", "--seeds", "2", "--epochs", "2", "--teacher", str(teacher), "--workspace", str(ws),
              "--json"], catch_exceptions=False, env={"SEALQ_CACHE": str(cache_root)})
    assert result.exit_code == 0, result.output
    return ws, json.loads(result.stdout)


def test_every_condition_is_recorded_and_tagged(eval_run):
    ws, _table = eval_run
    db = sqlite_utils.Database(str(ws / "runs.db"))
    (run,) = list(db["runs"].rows)
    assert run["command"] == "eval" and run["status"] == "done"
    config = json.loads(run["config_json"])
    assert config["passage_only"] and config["teacher"].endswith("teacher.json") and config["seeds"] == 2
    assert config["selfedit"]["directives"] == "off"  # same training settings for every condition
    assert db["passages"].count == 1  # only the passage the teacher file covers
    by_source = {(r["source"], r["seed_idx"]): r["n"] for r in db.query(
        "select source, seed_idx, count(*) n from self_edits group by source, seed_idx")}
    assert by_source == {("passage_only", 0): 1, ("passage_only", 1): 1, ("self_edit", 0): 2, ("self_edit", 1): 2,
                         ("teacher", 0): 1, ("teacher", 1): 1}
    # passage-only and teacher rows are one per repeat, at sample index 0 (apart from the sampled ones by source)
    assert {r["sample_idx"] for r in db.query("select sample_idx from self_edits where source != 'self_edit'")} == {0}
    assert sorted(r["sample_idx"] for r in db.query("select sample_idx from self_edits where source = 'self_edit'")) == [
        0, 0, 1, 1]
    # one best-of-K pick per seed, among the model's own self-edits only
    best = {r["seed_idx"]: r["n"] for r in db.query("select seed_idx, sum(is_best) n from self_edits group by seed_idx")}
    assert best == {0: 1, 1: 1}
    assert db.execute("select count(*) from self_edits where is_best = 1 and source != 'self_edit'").fetchone()[0] == 0
    teacher = next(db.query("select * from self_edits where source = 'teacher'"))
    assert json.loads(teacher["items_json"]) == TEACHER_LINES
    n_ok = db.execute("select count(*) from self_edits where source = 'self_edit' and status = 'ok'").fetchone()[0]
    conditions = {r["condition"]: r["n"] for r in db.query("select condition, count(*) n from answers group by condition")}
    assert conditions == {"no_context": 5, "with_context": 5, "passage_only": 10, "teacher": 10, "self_edit": 5 * n_ok}
    # every adapted answer's condition is its adapter's source
    assert not list(db.query("select a.id from answers a join self_edits s on s.id = a.self_edit_id "
                             "where a.condition != s.source"))


def test_table_has_intervals_and_paired_differences(eval_run):
    _ws, table = eval_run
    assert table["passages"] == 1 and table["questions"] == 5
    assert list(table["conditions"]) == ["no_context", "with_context", "passage_only", "mean_self_edit", "best_of_k",
                                         "teacher"]
    for row in table["conditions"].values():
        for m in ("contains", "em", "f1"):
            assert row[m]["low"] <= row[m]["estimate"] <= row[m]["high"]
    assert [(d["a"], d["b"]) for d in table["differences"]] == list(PAIRS)
    c = table["conditions"]
    for d in table["differences"]:
        assert d["contains"]["estimate"] == pytest.approx(c[d["a"]]["contains"]["estimate"] - c[d["b"]]["contains"]["estimate"])
    assert c["best_of_k"]["contains"]["estimate"] >= c["mean_self_edit"]["contains"]["estimate"]


def test_table_prints_like_the_paper(eval_run, tmp_path):
    from rich.console import Console

    from sealq.cli.loop import print_eval

    ws, table = eval_run
    config = json.loads(next(sqlite_utils.Database(str(ws / "runs.db"))["runs"].rows)["config_json"])
    console = Console(record=True, width=200)
    print_eval(table, "RUN", console, config)
    text = console.export_text()
    for label in ("baseline (no passage)", "LoRA on the passage only", "teacher self-edit", "33.5", "46.3",
                  "paired differences"):
        assert label in text


def test_every_adapter_trains_on_its_items_and_the_passage(eval_run):
    """SEAL's combination (the default): one sequence per item, plus the passage; the passage row: the passage."""
    rows = _sequences_by_source(eval_run[0])
    assert {r.source for r in rows} == {"passage_only", "self_edit", "teacher"}
    for r in rows:
        assert r.sequences == r.items + 1, r
    assert all(r.items == 3 for r in rows if r.source == "teacher")


def test_train_on_items_leaves_the_passage_out(tmp_path, cache_root):
    """--train-on items: self-edit and teacher LoRAs train on their items alone; the passage row is unchanged."""
    ws = tmp_path / "ws"
    result = CliRunner().invoke(
        cli, ["eval", "--k", "1", "--epochs", "1", "--teacher", str(_teacher_file(tmp_path)), "--train-on", "items",
              "--workspace", str(ws), "--json"], catch_exceptions=False, env={"SEALQ_CACHE": str(cache_root)})
    assert result.exit_code == 0, result.output
    passage_only, self_edit, teacher = sorted(_sequences_by_source(ws))
    assert (passage_only.source, self_edit.source, teacher.source) == ("passage_only", "self_edit", "teacher")
    assert passage_only.sequences == 1 and (teacher.items, teacher.sequences) == (3, 3)
    assert self_edit.items >= 1 and self_edit.sequences == self_edit.items  # one sequence per item, no passage
    config = json.loads(next(sqlite_utils.Database(str(ws / "runs.db"))["runs"].rows)["config_json"])
    assert config["selfedit"]["train_on"] == "items"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--train-on", "passage"], "Invalid value for '--train-on'"),
        (["--seeds", "0"], "--seeds must be at least 1"),
        (["--teacher", "/nonexistent.json"], "cannot read teacher file"),
        (["--min-grounding", "1.5"], "--min-grounding must be in [0, 1], got 1.5"),
        (["--temperature", "9"], "--temperature must be in [0, 5], got 9.0"),
    ],
)
def test_eval_bad_options(args, message):
    result = CliRunner().invoke(cli, ["eval", *args])
    assert result.exit_code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_teacher_file_that_matches_no_passage(tmp_path):
    teacher = tmp_path / "t.json"
    teacher.write_text(json.dumps([{"title": "A", "context": "B", "completions": ["c d e"]}]))
    result = CliRunner().invoke(cli, ["eval", "--teacher", str(teacher)])
    assert result.exit_code == 2 and "no passage of the data set has a teacher completion" in result.stderr
