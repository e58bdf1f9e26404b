"""The passage scheduler (sealq.engine.passage.run_passages) on a fake executor: the order jobs finish in,
resume skipping and best-of-K, in milliseconds, against a real runs.db written by the real recorder.

The fake executor stands in for the models only (what is under test is the scheduling and recording):
each job's result is a pure function of the job (its passage, source, sample and seed), so a run's rows
must not depend on how many jobs ran at once or which finished first, and a resumed run must redo exactly
the work that was not recorded.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest

from sealq.analysis.snapshot import snapshot
from sealq.engine.answer import Answer
from sealq.engine.config import Directive, LoopConfig, SelfEditConfig
from sealq.engine.dataset import Passage, Question
from sealq.engine.jobs import BaselineJob, BaselineResult, StepJob
from sealq.engine.passage import LoopEvents, Scope, Session, run_passages
from sealq.engine.record import Clock
from sealq.engine.step import Models, SelfEdit, StepResult, TrainedAdapter
from sealq.engine.train import TrainResult
from sealq.metrics import Score
from sealq.models.llama import Generation
from sealq.store import open_db
from sealq.vocab import EditStatus, Source

pytestmark = pytest.mark.unit  # no model: the unit tier (tests/conftest.py)

PASSAGES = [Passage(f"Title {i}", f"Text of passage {i}.", tuple(Question(f"q{i}.{j}?", (f"a{j}",)) for j in range(3)))
            for i in range(4)]
CONFIG = LoopConfig(passage_only=True, seeds=2, selfedit=SelfEditConfig(k=3))


def _grades(key: str, n: int) -> list[Score]:
    """Deterministic 0/1 grades for ``n`` questions, from ``key`` alone."""
    rng = random.Random(key)
    return [Score(*(float(rng.random() < 0.5),) * 3) for _ in range(n)]


def _answers(grades: list[Score], tag: str) -> list[Answer]:
    return [Answer(Generation(f"{tag} {i}", 2, 0.0), g) for i, g in enumerate(grades)]


def fake_result(job: BaselineJob | StepJob) -> BaselineResult | StepResult:
    """What the models would return for ``job``: a function of the job alone. Every seventh sampled
    self-edit is skipped (no items); a trained step writes a tiny PEFT folder and GGUF file."""
    if isinstance(job, BaselineJob):
        n = len(job.passage.questions)
        return BaselineResult(_answers(_grades(job.passage.title + "/base", n), "base"),
                              _answers(_grades(job.passage.title + "/ceiling", n), "ceiling"), [])
    inp = job.inp
    key = f"{inp.passage.title}/{inp.source}/{inp.name}/{inp.seed}"
    edit = SelfEdit(str(inp.source), "prompt", key, ["item"], 5, Directive(), None, {})
    if inp.source == Source.SELF_EDIT and inp.seed % 7 == 0:
        return StepResult(inp.source, replace(edit, items=[]), EditStatus.SKIPPED, None, [], inp.baseline,
                          Score(0.0, 0.0, 0.0), [])
    peft, gguf = inp.out_dir / inp.name, inp.out_dir / f"{inp.name}.gguf"
    peft.mkdir(parents=True, exist_ok=True)
    gguf.write_text(key)
    grades = _grades(key, len(inp.passage.questions))
    accuracy = Score.mean(grades)
    adapter = TrainedAdapter(peft, gguf, Directive(), TrainResult(peft, 16, 32.0, 1, 10, [1.0], 1.0, 0.0, 1), 0.0, 2)
    return StepResult(inp.source, edit, EditStatus.OK, adapter, _answers(grades, key), accuracy,
                      accuracy.minus(inp.baseline), [])


class FakeExecutor:
    """The executor protocol of sealq.engine.jobs: takes up to ``capacity`` jobs at once and finishes them
    in a shuffled order (seeded); ``stop_after`` raises KeyboardInterrupt (a Ctrl-C) once that many jobs
    have finished. ``jobs`` lists every job it was given."""

    def __init__(self, capacity: int = 1, seed: int = 0, stop_after: int | None = None):
        self.capacity, self.rng, self.stop_after = capacity, random.Random(seed), stop_after
        self.pending: list[tuple[int, BaselineJob | StepJob]] = []
        self.jobs: list[BaselineJob | StepJob] = []
        self.finished = 0

    def free(self) -> int:
        return self.capacity - len(self.pending)

    def submit(self, job: BaselineJob | StepJob) -> int:
        self.jobs.append(job)
        self.pending.append((len(self.jobs), job))
        return len(self.jobs)

    def next_done(self):
        if self.stop_after is not None and self.finished >= self.stop_after:
            raise KeyboardInterrupt
        ticket, job = self.pending.pop(self.rng.randrange(len(self.pending)))
        self.finished += 1
        return ticket, fake_result(job)


def run(ws: Path, executor: FakeExecutor, config: LoopConfig = CONFIG):
    """run_passages of :data:`PASSAGES` into ``ws/runs.db`` on ``executor``; returns the open db."""
    ws.mkdir(parents=True, exist_ok=True)
    db = open_db(path=ws / "runs.db")
    if not db["runs"].count:
        db["runs"].insert({"id": "RUN", "command": "eval", "status": "running"})
    s = Session(db, "RUN", ws / "runs" / "RUN", config, Models(None, None, Path("model.gguf")), Clock(), LoopEvents(),
                {}, executor)
    run_passages(s, PASSAGES, Scope())
    return db


def test_rows_do_not_depend_on_how_many_jobs_run_at_once_or_their_finishing_order(tmp_path):
    one = snapshot(run(tmp_path / "one", FakeExecutor(capacity=1)))
    for capacity, seed in ((2, 1), (5, 2), (64, 3)):
        many = snapshot(run(tmp_path / f"many{capacity}", FakeExecutor(capacity=capacity, seed=seed)))
        assert many == one, capacity
    steps = len(PASSAGES) * CONFIG.seeds * (CONFIG.selfedit.k + 1)
    assert len(one["self_edits"]) == steps and len(one["passages"]) == len(PASSAGES)


@pytest.mark.parametrize("stop_after", [1, 5, 17, 30])
def test_a_resumed_run_redoes_only_what_was_not_recorded(tmp_path, stop_after):
    """Interrupted after ``stop_after`` finished jobs (some finished but not yet recorded: they wait for an
    earlier one), then resumed on a fresh executor: the second executor is given no job whose result was
    recorded, every unrecorded one is redone, and the rows equal the uninterrupted run's."""
    reference = snapshot(run(tmp_path / "ref", FakeExecutor(capacity=3, seed=9)))
    first = FakeExecutor(capacity=3, seed=9, stop_after=stop_after)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "ws", first)
    db = open_db(path=tmp_path / "ws" / "runs.db")
    recorded = db["self_edits"].count + db["passages"].count
    second = FakeExecutor(capacity=3, seed=4)
    assert snapshot(run(tmp_path / "ws", second)) == reference
    assert len(second.jobs) == len(reference["self_edits"]) + len(reference["passages"]) - recorded
    assert recorded <= stop_after  # a finished job is recorded only once the ones before it are


def test_best_of_k_is_the_highest_reward_and_only_its_adapter_is_kept(tmp_path):
    db = run(tmp_path, FakeExecutor(capacity=4, seed=5))
    for pid, seed_idx in db.execute("select distinct passage_id, seed_idx from self_edits").fetchall():
        rows = list(db.query("""select s.sample_idx, s.reward, s.reward_f1, s.is_best, a.kept, a.gguf_path
                                from self_edits s left join adapters a on a.self_edit_id = s.id
                                where s.passage_id = ? and s.seed_idx = ? and s.source = ?
                                order by s.sample_idx""", [pid, seed_idx, Source.SELF_EDIT.value]))
        best = max(rows, key=lambda r: (r["reward"], r["reward_f1"], -r["sample_idx"]))
        assert [r["is_best"] for r in rows] == [int(r is best) for r in rows]
        for r in rows:
            if r["gguf_path"] is not None:  # skipped ones trained nothing
                assert r["kept"] == int(r is best) and Path(r["gguf_path"]).exists() == (r is best)
    # the passage-only LoRA is no best-of-K candidate: recorded, its files not kept
    assert {r["kept"] for r in db.query("""select a.kept from adapters a join self_edits s on s.id = a.self_edit_id
                                           where s.source = ?""", [Source.PASSAGE_ONLY.value])} == {0}
