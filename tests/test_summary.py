"""The results of a run, computed from runs.db (sealq.analysis.summary / tables), on a database written
through the recorder (sealq.engine.record) with hand-made answers and steps: every figure is worked out
by hand below. No model needed.

Run R has two passages (A: 2 questions, B: 3), K = 3 self-edits each (the third skipped: no usable items)
and a passage-only step each:

============  =====================  ============================  ====================================
passage       no_context (baseline)  self-edit 0 / 1 (reward)      best-of-K
============  =====================  ============================  ====================================
A             (0,0,0) (1,1,1)        +0.5 contains, F1 +0.25/+0.3  sample 1: contains tie, higher F1 gain
B             (0,0,0) x 3            +1/3 contains, F1 +1/6 both   sample 0: full tie, earlier sample
============  =====================  ============================  ====================================

A skipped self-edit counts with the baseline answers (the model is unchanged) in ``mean_self_edit``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sealq.analysis.summary import column, edit_counts, scores_by_passage, summarize
from sealq.analysis.tables import PAIRS, eval_table, run_summary
from sealq.engine import record
from sealq.engine.answer import Answer
from sealq.engine.config import Directive, LoopConfig, SelfEditConfig
from sealq.engine.dataset import Passage, Question
from sealq.engine.step import SelfEdit, StepResult, TrainedAdapter
from sealq.engine.train import TrainResult
from sealq.metrics import METRICS, Score
from sealq.models.llama import Generation
from sealq.store import open_db
from sealq.vocab import ROW_LABELS, Condition, EditStatus, Row, Source, Split

pytestmark = pytest.mark.unit  # no model: the unit tier (tests/conftest.py)

S = Score
RUN = "RUN-R"
EDIT_TYPES = ("implications", "self-qa", "rewrite")

PASSAGE_A = Passage("Alpha", "Alpha text.", (Question("a0?", ("x",)), Question("a1?", ("y",))))
PASSAGE_B = Passage("Beta", "Beta text.", (Question("b0?", ("x",)), Question("b1?", ("y",)), Question("b2?", ("z",))))

# per question grades, in question order; None: a skipped self-edit (no answers recorded)
BASE_A, CEIL_A = [S(0, 0, 0), S(1, 1, 1)], [S(1, 1, 1), S(1, 0, 0.5)]
PO_A = [S(1, 1, 1), S(0, 0, 0)]
SE_A = [[S(1, 0, 0.5), S(1, 1, 1)], [S(1, 1, 1), S(1, 0, 0.6)], None]
BASE_B, CEIL_B = [S(0, 0, 0)] * 3, [S(1, 1, 1), S(1, 1, 1), S(0, 0, 0)]
PO_B = [S(0, 0, 0), S(0, 0, 0), S(1, 1, 1)]
SE_B = [[S(1, 0, 0.5), S(0, 0, 0), S(0, 0, 0)], [S(0, 0, 0.5), S(1, 0, 0), S(0, 0, 0)], None]

# worked out by hand from the grades above
MEAN_SELF_EDIT = [
    [S(2 / 3, 1 / 3, 0.5), S(1, 2 / 3, 2.6 / 3)],  # A: (s0 + s1 + baseline) / 3 per question
    [S(1 / 3, 0, 1 / 3), S(1 / 3, 0, 0), S(0, 0, 0)],  # B
]
BEST_OF_K = [SE_A[1], SE_B[0]]
MICRO = {  # micro-averages over the 5 questions
    Row.NO_CONTEXT: S(0.2, 0.2, 0.2),
    Row.WITH_CONTEXT: S(0.8, 0.6, 0.7),
    Row.PASSAGE_ONLY: S(0.4, 0.4, 0.4),
    Row.MEAN_SELF_EDIT: S(7 / 15, 0.2, 0.34),
    Row.BEST_OF_K: S(0.6, 0.2, 0.42),
}


def _answers(grades: list[Score], tag: str) -> list[Answer]:
    return [Answer(Generation(f"{tag} answer {i}", 3 + i, 0.01), g) for i, g in enumerate(grades)]


def _adapter(folder: Path, name: str) -> TrainedAdapter:
    peft = folder / name
    peft.mkdir(parents=True)
    (peft / "adapter_model.safetensors").write_bytes(b"peft " + name.encode())
    gguf = folder / f"{name}.gguf"
    gguf.write_bytes(b"gguf " + name.encode())
    train = TrainResult(peft, rank=16, alpha=32.0, steps=4, tokens_trained=100, losses=[2.0, 1.0],
                        final_loss=1.0, seconds=0.5, threads=1)
    return TrainedAdapter(peft, gguf, Directive(), train, convert_seconds=0.1, n_sequences=3)


def _step(folder: Path, name: str, source: Source, grades, baseline: Score, edit_type: str = "implications",
          fallbacks: dict | None = None) -> StepResult:
    """A StepResult as :func:`sealq.engine.step.inner_step` returns it; ``grades`` None: skipped."""
    if grades is None:  # nothing usable: no directive asked for (all fields "missing"), nothing trained
        edit = SelfEdit(edit_type=edit_type, prompt="prompt", text="ok", items=[], gen_tokens=12,
                        directive=Directive(), directive_raw=None,
                        fallbacks={"epochs": "missing", "lr": "missing", "rank": "missing"})
        return StepResult(source=source, edit=edit, status=EditStatus.SKIPPED, adapter=None, answers=[],
                          accuracy=baseline, reward=S(0.0, 0.0, 0.0), timings=[])
    sampled = source == Source.SELF_EDIT
    edit = SelfEdit(edit_type=edit_type if sampled else str(source), prompt="prompt", text=f"text {name}",
                    items=["item one", "item two"], gen_tokens=30 if sampled else 0, directive=Directive(),
                    directive_raw="epochs=8 lr=2e-3 rank=16" if sampled else None,
                    fallbacks=(fallbacks or {}) if sampled else {"all": "fixed settings (not a model self-edit)"})
    accuracy = Score.mean(grades)
    return StepResult(source=source, edit=edit, status=EditStatus.OK, adapter=_adapter(folder, name),
                      answers=_answers(grades, name), accuracy=accuracy, reward=accuracy.minus(baseline),
                      timings=[{"stage": "train", "seconds": 0.5, "started_utc": "2026-01-01T00:00:00.000Z"}])


def _new_run(db, run_id: str, config: LoopConfig) -> None:
    db["runs"].insert({"id": run_id, "command": "eval", "status": "done",
                       "config_json": json.dumps(config.to_dict())})


def _record(db, folder: Path, run_id: str, idx: int, passage: Passage, base, ceiling, steps, passage_only=None,
            teacher=None, round_: int = 0, split: Split = Split.ALL, seed_idx: int = 0, reverse: bool = False,
            fallbacks: dict | None = None):
    """Record one passage the way :func:`sealq.engine.passage.run_passages` does; returns the candidates
    and the best one. ``reverse``: hand the candidates to mark_best in reverse order (order must not matter)."""
    clock = record.Clock()
    rec = record.find_passage(db, run_id, round_, split, idx) or record.record_passage(
        db, run_id, idx, passage, round_, split, _answers(base, "base"), _answers(ceiling, "ceiling"), clock)
    tag = f"{run_id}-r{round_}{split}-p{idx}-s{seed_idx}"
    if passage_only is not None:
        r = _step(folder, f"{tag}-po", Source.PASSAGE_ONLY, passage_only, rec.baseline)
        record.record_step(db, run_id, rec, seed_idx, 0, r, False, clock)
    cands = []
    for j, grades in enumerate(steps):
        r = _step(folder, f"{tag}-k{j}", Source.SELF_EDIT, grades, rec.baseline, EDIT_TYPES[j % 3],
                  fallbacks if j == 0 else None)
        cands.append(record.record_step(db, run_id, rec, seed_idx, j, r, True, clock))
    if teacher is not None:
        r = _step(folder, f"{tag}-t", Source.TEACHER, teacher, rec.baseline)
        record.record_step(db, run_id, rec, seed_idx, 0, r, False, clock)
    best = record.mark_best(db, cands[::-1] if reverse else cands) if cands else None
    return rec, cands, best


@pytest.fixture
def run_r(tmp_path):
    """Run R (module docstring): passage A's first self-edit had a directive field fall back."""
    db = open_db(path=tmp_path / "runs.db")
    _new_run(db, RUN, LoopConfig(passage_only=True))
    folder = tmp_path / "adapters"
    folder.mkdir()
    a = _record(db, folder, RUN, 0, PASSAGE_A, BASE_A, CEIL_A, SE_A, PO_A, fallbacks={"lr": "missing"})
    b = _record(db, folder, RUN, 1, PASSAGE_B, BASE_B, CEIL_B, SE_B, PO_B, reverse=True)
    return db, folder, a, b


def _approx_groups(groups):
    return [[pytest.approx(tuple(s)) for s in passage] for passage in groups]


def test_the_recorder_writes_what_it_was_given(run_r):
    db, _folder, (rec_a, cands_a, _), _ = run_r
    assert rec_a.baseline == S(0.5, 0.5, 0.5) and len(rec_a.question_ids) == 2
    assert record.find_passage(db, RUN, 0, Split.ALL, 0) == rec_a  # read back (resume)
    assert record.find_passage(db, RUN, 0, Split.ALL, 2) is None
    rows = {(r["source"], r["seed_idx"], r["sample_idx"]): r for r in db.query(
        "select * from self_edits where passage_id = ?", [rec_a.id])}
    # passage-only at sample index 0, beside the sampled self-edit 0 (kept apart by source)
    assert set(rows) == {(Source.PASSAGE_ONLY, 0, 0), (Source.SELF_EDIT, 0, 0), (Source.SELF_EDIT, 0, 1),
                         (Source.SELF_EDIT, 0, 2)}
    s1 = rows[(Source.SELF_EDIT, 0, 1)]
    assert (s1["edit_type"], s1["status"], s1["accuracy"], s1["reward"], s1["reward_em"]) == (
        "self-qa", EditStatus.OK, 1.0, 0.5, 0.0)
    assert s1["reward_f1"] == pytest.approx(0.3)
    skipped = rows[(Source.SELF_EDIT, 0, 2)]
    assert (skipped["status"], skipped["reward"], skipped["skip_reason"]) == (EditStatus.SKIPPED, 0.0, "no usable items")
    assert db.execute("select count(*) from adapters where self_edit_id = ?", [skipped["id"]]).fetchone()[0] == 0
    assert db.execute("select count(*) from answers where self_edit_id = ?", [skipped["id"]]).fetchone()[0] == 0
    # adapted answers carry their adapter's source as condition
    conds = {(r["condition"], r["n"]) for r in db.query(
        "select a.condition, count(*) n from answers a join questions q on q.id = a.question_id "
        "where q.passage_id = ? group by 1", [rec_a.id])}
    assert conds == {(Condition.NO_CONTEXT, 2), (Condition.WITH_CONTEXT, 2), (Condition.PASSAGE_ONLY, 2),
                     (Condition.SELF_EDIT, 4)}
    # the passage-only adapter is recorded as not kept and its files are gone; self-edit adapters are kept
    po = db.execute("select a.kept, a.gguf_path, a.peft_path from adapters a join self_edits s on s.id = a.self_edit_id "
                    "where s.id = ?", [rows[(Source.PASSAGE_ONLY, 0, 0)]["id"]]).fetchone()
    assert po[0] == 0 and not Path(po[1]).exists() and not Path(po[2]).exists()
    assert all(c.gguf_path.exists() for c in cands_a if c.gguf_path)
    found = record.find_step(db, rec_a.id, Source.SELF_EDIT, 0, 1)
    assert found == cands_a[1] and found.reward == pytest.approx(S(0.5, 0.0, 0.3))
    assert record.find_step(db, rec_a.id, Source.TEACHER, 0, 0) is None


def test_best_of_k_tie_breaks(run_r):
    """Highest contains gain; on a tie the higher F1 gain (A: sample 1); on a full tie the earlier sample
    (B: sample 0, though mark_best was handed the candidates in reverse order)."""
    db, _, (_, cands_a, best_a), (_, _cands_b, best_b) = run_r
    assert best_a.sample_idx == 1 and best_b.sample_idx == 0
    best = {(r["idx"], r["sample_idx"]) for r in db.query(
        "select p.idx, s.sample_idx from self_edits s join passages p on p.id = s.passage_id where s.is_best = 1")}
    assert best == {(0, 1), (1, 0)}
    # idempotent: a resumed run may redo it
    assert record.mark_best(db, cands_a).sample_idx == 1
    assert db.execute("select count(*) from self_edits where is_best = 1").fetchone()[0] == 2


def test_contains_gain_outranks_f1_gain(tmp_path):
    db = open_db(path=tmp_path / "runs.db")
    _new_run(db, "C", LoopConfig())
    base = [S(0, 0, 0), S(0, 0, 0)]
    steps = [[S(0, 1, 1), S(1, 1, 1)],  # contains +0.5, F1 +1
             [S(1, 0, 0), S(1, 0, 0)],  # contains +1, F1 0: the best
             [S(1, 0, 0), S(1, 0, 0)]]  # the same reward, a later sample
    _, _, best = _record(db, tmp_path, "C", 0, PASSAGE_A, base, base, steps)
    assert best.sample_idx == 1
    assert scores_by_passage(db, "C")[Row.BEST_OF_K] == [steps[1]]


def test_scores_by_passage_by_hand(run_r):
    db = run_r[0]
    s = scores_by_passage(db, RUN)
    assert list(s) == [Row.NO_CONTEXT, Row.WITH_CONTEXT, Row.PASSAGE_ONLY, Row.MEAN_SELF_EDIT, Row.BEST_OF_K]
    assert s[Row.NO_CONTEXT] == [BASE_A, BASE_B]
    assert s[Row.WITH_CONTEXT] == [CEIL_A, CEIL_B]
    assert s[Row.PASSAGE_ONLY] == [PO_A, PO_B]
    assert s[Row.MEAN_SELF_EDIT] == _approx_groups(MEAN_SELF_EDIT)
    assert s[Row.BEST_OF_K] == [SE_A[1], SE_B[0]] == BEST_OF_K
    assert all(isinstance(g, Score) for groups in s.values() for p in groups for g in p)
    assert column(s[Row.WITH_CONTEXT], "f1") == [[1.0, 0.5], [1.0, 1.0, 0.0]]
    assert column(s[Row.MEAN_SELF_EDIT], "contains") == [pytest.approx([2 / 3, 1]), pytest.approx([1 / 3, 1 / 3, 0])]


def test_summarize_by_hand(run_r):
    db = run_r[0]
    summary = summarize(db, RUN)
    assert (summary["run_id"], summary["passages"], summary["questions"]) == (RUN, 2, 5)
    # sampled self-edits only: 3 per passage, the third skipped; one fallback (a skipped self-edit's
    # all-missing directive is no fallback: no directive was asked for)
    assert (summary["self_edits"], summary["skipped"], summary["directive_fallbacks"]) == (6, 2, 1)
    assert summary["directives"] == "model"
    assert summary["mean_reward"] == pytest.approx((0.5 + 0.5 + 0 + 1 / 3 + 1 / 3 + 0) / 6)  # 5/18
    assert summary["best_reward"] == pytest.approx((0.5 + 1 / 3) / 2)  # 5/12
    assert list(summary["conditions"]) == list(MICRO)
    for row, want in MICRO.items():
        got = summary["conditions"][row]
        assert got["n"] == 5
        assert (got["contains"], got["em"], got["f1"]) == pytest.approx(tuple(want)), row


def test_edit_counts_by_hand(run_r):
    db = run_r[0]
    assert edit_counts(db, RUN) == {"self_edits": 6, "skipped": 2, "directive_fallbacks": 1, "best": 2,
                                    "mean_reward": pytest.approx(5 / 18)}
    # with the passage-only rows: their rewards are 0 (A) and 1/3 (B); fixed settings are no fallback
    assert edit_counts(db, RUN, model_only=False) == {"self_edits": 8, "skipped": 2, "directive_fallbacks": 1,
                                                      "best": 2, "mean_reward": pytest.approx(0.25)}
    by_type = edit_counts(db, RUN, by_type=True)
    assert [t["edit_type"] for t in by_type] == ["implications", "self-qa", "rewrite"]  # highest mean reward first
    assert [(t["self_edits"], t["skipped"], t["directive_fallbacks"], t["best"]) for t in by_type] == [
        (2, 0, 1, 1), (2, 0, 0, 1), (2, 2, 0, 0)]
    assert [t["mean_reward"] for t in by_type] == pytest.approx([5 / 12, 5 / 12, 0.0])


def test_eval_table_by_hand(run_r):
    db = run_r[0]
    t = eval_table(db, RUN, n_boot=200)
    assert (t["passages"], t["questions"]) == (2, 5)
    assert list(t["conditions"]) == [r for r in ROW_LABELS if r in MICRO]  # table order; no teacher row
    for row, want in MICRO.items():
        c = t["conditions"][row]
        assert c["label"] == ROW_LABELS[row] and c["n"] == 5
        for m in METRICS:
            assert c[m]["estimate"] == pytest.approx(getattr(want, m)), (row, m)
            assert c[m]["low"] <= c[m]["estimate"] + 1e-12 and c[m]["estimate"] <= c[m]["high"] + 1e-12
    assert [(d["a"], d["b"]) for d in t["differences"]] == [p for p in PAIRS if Row.TEACHER not in p]
    for d in t["differences"]:
        for m in METRICS:
            want = getattr(MICRO[d["a"]], m) - getattr(MICRO[d["b"]], m)
            assert d[m]["estimate"] == pytest.approx(want), (d["a"], d["b"], m)
    # run_summary: the summary plus the eval table of a run that trained passage-only steps
    stored = run_summary(db, RUN)
    assert stored["conditions"] == summarize(db, RUN)["conditions"] and "rounds" not in stored
    assert stored["eval"]["conditions"][Row.MEAN_SELF_EDIT]["contains"]["estimate"] == pytest.approx(7 / 15)


def test_a_run_with_no_passage_has_no_table(tmp_path):
    db = open_db(path=tmp_path / "runs.db")
    _new_run(db, "E", LoopConfig())
    assert scores_by_passage(db, "E") == {row: [] for row in (Row.NO_CONTEXT, Row.WITH_CONTEXT, Row.MEAN_SELF_EDIT,
                                                              Row.BEST_OF_K)}
    with pytest.raises(ValueError, match="no recorded passages"):
        eval_table(db, "E")


def test_every_self_edit_skipped_means_the_baseline(tmp_path):
    """Skipped self-edits leave the model unchanged: mean and best-of-K equal the baseline, reward 0."""
    db = open_db(path=tmp_path / "runs.db")
    _new_run(db, "K", LoopConfig())
    _, _, best = _record(db, tmp_path, "K", 0, PASSAGE_A, BASE_A, CEIL_A, [None, None])
    assert best.sample_idx == 0 and best.adapter_id is None
    s = scores_by_passage(db, "K")
    assert s[Row.MEAN_SELF_EDIT] == s[Row.BEST_OF_K] == [BASE_A]
    summary = summarize(db, "K")
    assert (summary["self_edits"], summary["skipped"], summary["mean_reward"], summary["best_reward"]) == (2, 2, 0, 0)
    assert summary["conditions"][Row.BEST_OF_K]["contains"] == summary["conditions"][Row.NO_CONTEXT]["contains"] == 0.5


def test_seeds_teacher_and_best_of_k_per_seed(tmp_path):
    """Two repeats: mean self-edit averages all K x seeds self-edits per question, best-of-K the best of
    each seed, passage-only and teacher rows their repeats."""
    db = open_db(path=tmp_path / "runs.db")
    _new_run(db, "T", LoopConfig(seeds=2, passage_only=True, teacher="/t.json",
                                 selfedit=SelfEditConfig(k=2, directives="off")))
    base, ceil = [S(0, 0, 0), S(0, 0, 0)], [S(1, 1, 1), S(1, 1, 1)]
    seed0 = [[S(1, 1, 1), S(0, 0, 0)], [S(0, 0, 0), S(0, 0, 0)]]  # best: sample 0
    seed1 = [[S(0, 0, 0), S(0, 0, 0)], [S(1, 1, 1), S(1, 1, 1)]]  # best: sample 1
    po = ([S(1, 0, 0), S(0, 0, 0)], [S(0, 0, 0), S(0, 0, 0)])
    teacher = ([S(1, 1, 1), S(1, 1, 1)], [S(1, 1, 1), S(0, 0, 0)])
    _, _, b0 = _record(db, tmp_path, "T", 0, PASSAGE_A, base, ceil, seed0, po[0], teacher[0], seed_idx=0)
    _, _, b1 = _record(db, tmp_path, "T", 0, PASSAGE_A, base, ceil, seed1, po[1], teacher[1], seed_idx=1)
    assert (b0.sample_idx, b1.sample_idx) == (0, 1)
    assert db.execute("select count(*) from passages").fetchone()[0] == 1  # the second repeat found the passage
    s = scores_by_passage(db, "T")
    assert list(s) == list(ROW_LABELS)
    assert s[Row.MEAN_SELF_EDIT] == [[S(0.5, 0.5, 0.5), S(0.25, 0.25, 0.25)]]
    assert s[Row.BEST_OF_K] == [[S(1, 1, 1), S(0.5, 0.5, 0.5)]]  # (seed 0 sample 0 + seed 1 sample 1) / 2
    assert s[Row.PASSAGE_ONLY] == [[S(0.5, 0, 0), S(0, 0, 0)]]
    assert s[Row.TEACHER] == [[S(1, 1, 1), S(0.5, 0.5, 0.5)]]
    summary = summarize(db, "T")
    assert summary["directives"] == "off" and summary["self_edits"] == 4 and summary["directive_fallbacks"] == 0
    assert summary["conditions"][Row.TEACHER] == {"n": 2, "contains": 0.75, "em": 0.75, "f1": 0.75}
    t = eval_table(db, "T", n_boot=50)
    assert [(d["a"], d["b"]) for d in t["differences"]] == list(PAIRS)


def test_round_and_split_restrict_the_passages(tmp_path):
    db = open_db(path=tmp_path / "runs.db")
    _new_run(db, "X", LoopConfig(rounds=1, holdout_fraction=0.5))
    _record(db, tmp_path, "X", 0, PASSAGE_A, BASE_A, CEIL_A, SE_A[:2], round_=0, split=Split.HOLDOUT)
    _record(db, tmp_path, "X", 0, PASSAGE_B, BASE_B, CEIL_B, SE_B[:2], round_=0, split=Split.TRAIN)
    _record(db, tmp_path, "X", 0, PASSAGE_A, CEIL_A, CEIL_A, [CEIL_A], round_=1, split=Split.HOLDOUT)
    assert scores_by_passage(db, "X", round=0, split=Split.HOLDOUT)[Row.NO_CONTEXT] == [BASE_A]
    assert scores_by_passage(db, "X", round=0, split=Split.TRAIN)[Row.BEST_OF_K] == [SE_B[0]]
    assert scores_by_passage(db, "X", round=1, split=Split.HOLDOUT)[Row.NO_CONTEXT] == [CEIL_A]
    assert scores_by_passage(db, "X")[Row.NO_CONTEXT] == [BASE_A, BASE_B, CEIL_A]  # round, split, idx order
    s = summarize(db, "X", round=0, split=Split.HOLDOUT)
    assert (s["passages"], s["questions"], s["self_edits"]) == (1, 2, 2)
    assert edit_counts(db, "X", round=0)["self_edits"] == 4


def test_diff_runs_script_finds_one_changed_answer(run_r, tmp_path_factory):
    """scripts/diff_runs.py: a copy of a workspace compares the same; one changed prediction is found."""
    import shutil
    import subprocess
    import sys

    db, *_ = run_r
    src = Path(db.execute("pragma database_list").fetchone()[2]).parent
    other = tmp_path_factory.mktemp("copy")
    for f in src.glob("runs.db*"):
        shutil.copy(f, other / f.name)
    script = Path(__file__).resolve().parent.parent / "scripts" / "diff_runs.py"

    def diff():
        return subprocess.run([sys.executable, str(script), str(src), str(other)], capture_output=True, text=True)

    same = diff()
    assert same.returncode == 0 and same.stdout.strip().endswith("same"), same.stdout + same.stderr
    changed = open_db(path=other / "runs.db")
    (aid,) = changed.execute("select id from answers order by id limit 1").fetchone()
    changed["answers"].update(aid, {"prediction": "something else"})
    changed.conn.close()
    out = diff()
    assert out.returncode == 1, out.stdout
    assert "answers: " in out.stdout and "1 only in A, 1 only in B" in out.stdout
    assert "1 tables differ" in out.stdout


def test_pool_seeds_script_averages_runs_that_differ_only_in_seed(run_r, tmp_path_factory):
    """scripts/pool_seeds.py: a run pooled with a copy of itself at another seed is the run's own eval table;
    one answer changed in the copy moves the pooled row by half a question; other settings are refused."""
    import shutil
    import subprocess
    import sys

    db, *_ = run_r
    src = Path(db.execute("pragma database_list").fetchone()[2]).parent
    script = Path(__file__).resolve().parent.parent / "scripts" / "pool_seeds.py"

    def copy(change: dict) -> Path:
        other = tmp_path_factory.mktemp("seed")
        for f in src.glob("runs.db*"):
            shutil.copy(f, other / f.name)
        odb = open_db(path=other / "runs.db")
        odb["runs"].update(RUN, change)
        odb.conn.close()
        return other

    def pool(*workspaces):
        out = subprocess.run([sys.executable, str(script), *map(str, workspaces), "--json"], capture_output=True,
                             text=True)
        return out.returncode, (json.loads(out.stdout) if out.returncode == 0 else out.stderr)

    config = json.loads(db["runs"].get(RUN)["config_json"])
    older = {**config, "selfedit": {k: v for k, v in config["selfedit"].items() if k != "train_on"}}
    seed1 = copy({"seed": 1, "config_json": json.dumps(older)})  # recorded before --train-on: its default
    rc, t = pool(src, seed1)
    own = eval_table(db, RUN)
    assert rc == 0 and t["runs"] == [RUN, RUN]
    assert {k: v for k, v in t.items() if k != "runs"} == json.loads(json.dumps(own))  # the run's own eval table
    changed = open_db(path=seed1 / "runs.db")
    (aid, before) = changed.execute("select id, contains from answers where condition = ? order by id limit 1",
                                    [Condition.NO_CONTEXT.value]).fetchone()
    changed["answers"].update(aid, {"contains": 1 - before})
    changed.conn.close()
    rc, t = pool(src, seed1)
    def baseline(table):
        return table["conditions"][Row.NO_CONTEXT]["contains"]["estimate"]
    shift = baseline(t) - baseline(own)
    assert rc == 0 and shift == pytest.approx((1 - 2 * before) / 2 / 5)  # half of one of 5 questions
    for other, message in ((copy({"seed": 1, "config_json": json.dumps({**config, "passages": 99})}),
                            "Error: run RUN-R differs from run RUN-R in more than its seed"),
                           (copy({}), "Error: two runs have the same seed")):
        rc, err = pool(src, other)
        assert (rc, err.strip().splitlines()) == (2, [message])


def test_thread_use_says_when_a_training_used_fewer_threads(tmp_path):
    """An automatic count: an adapter trained with fewer threads than the run's is counted and explained; a
    run recorded before thread counts were stored says so instead of inventing one."""
    from sealq.analysis.summary import thread_use

    db = open_db(path=tmp_path / "runs.db")
    config = LoopConfig().with_threads(2).to_dict()
    config["train"]["lower_when_busy"] = True
    db["runs"].insert({"id": "T", "command": "loop", "status": "done", "config_json": json.dumps(config)})
    db["adapters"].insert_all([{"run_id": "T", "threads": n} for n in (2, 2, 1)])
    use = thread_use(db, db["runs"].get("T"))
    assert (use["run"], use["automatic"], use["adapters"]) == (2, True, {"2": 2, "1": 1})
    assert use["text"] == ("threads 2 (automatic); adapters trained with 2: 2, 1: 1 "
                           "(fewer: other processes held cores, or workers with their own count)")
    fixed = LoopConfig().with_threads(2).to_dict()  # a given count: a lower one is no busy machine's doing
    db["runs"].insert({"id": "F", "command": "loop", "status": "done", "config_json": json.dumps(fixed)})
    db["adapters"].insert({"run_id": "F", "threads": 1})
    assert thread_use(db, db["runs"].get("F"))["text"] == "threads 2 (fixed); adapters trained with 1: 1"
    old = LoopConfig().to_dict()
    db["runs"].insert({"id": "OLD", "command": "loop", "status": "done", "config_json": json.dumps(old)})
    db["adapters"].insert({"run_id": "OLD", "threads": None})
    assert thread_use(db, db["runs"].get("OLD"))["text"] == "threads not recorded; adapters trained with unrecorded: 1"
