"""The passages of a run (SEAL, Zweiger et al. 2025, sec. 3, Algorithm 1): per passage, baseline and
ceiling answers, then per repeat (``--seeds``) the inner steps (LoRA on the passage alone, K sampled
self-edits, a teacher self-edit: whichever the run trains), then the best-of-K pick.

The work runs on the session's executor (:mod:`sealq.engine.jobs`: in this process, or on Ray workers)
and is recorded in one fixed order whatever ran it. Resumable step by step: what is recorded is read
back, not redone; what is not is run with the seed an uninterrupted run would have used.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from sealq.engine import record
from sealq.engine.config import LoopConfig
from sealq.engine.dataset import Passage
from sealq.engine.jobs import BaselineJob, BaselineResult, Executor, StepJob
from sealq.engine.record import Candidate, Clock, PassageRecord
from sealq.engine.step import SEED_SLOTS, Models, StepInput, StepResult, step_seed
from sealq.metrics import Score
from sealq.vocab import EditStatus, Source, Split

if TYPE_CHECKING:
    from sqlite_utils import Database

__all__ = ["Session", "Scope", "LoopEvents", "run_passages", "units_per_passage"]


class LoopEvents:
    """Progress callbacks (the CLI draws progress from them); the default does nothing."""

    def stage(self, text: str) -> None:
        """A set-up stage begins (loading models, a ReST-EM policy update)."""

    def start(self, n_passages: int, k: int) -> None:
        """The per-passage work begins: ``n_passages`` passages (over all rounds), ``k`` self-edits each."""

    def total(self, n_units: int) -> None:
        """How many inner steps the whole run has (with ``sealq eval``'s other trained conditions)."""

    def self_edit_done(self, passage_idx: int, sample_idx: int, reward: float | None,
                       source: Source = Source.SELF_EDIT) -> None:
        """One inner step is recorded: its contains ``reward``, None when it was skipped."""

    def passage_done(self, passage_idx: int) -> None:
        """Every inner step of a passage is recorded and the best-of-K pick made."""


@dataclass(frozen=True)
class Session:
    """What every passage of one run shares: the database and run, the run's folder, its settings, the
    driver's models (``models.trainer`` is None when workers train), the timing clock, the progress
    callbacks, the teacher completions by passage key, and the executor the work runs on
    (:mod:`sealq.engine.jobs`)."""

    db: Database
    run_id: str
    run_dir: Path
    config: LoopConfig
    models: Models
    clock: Clock
    events: LoopEvents
    teacher: dict[str, list[str]]
    executor: Executor


@dataclass(frozen=True)
class Scope:
    """Where a passage sits in the run: its ReST-EM round and split, and whether its best adapter is kept
    (ReST-EM keeps none: the policy is the product)."""

    round: int = 0
    split: Split = Split.ALL
    keep_best: bool = True


def units_per_passage(config: LoopConfig) -> int:
    """Inner steps per passage: K self-edits, plus passage-only and teacher steps, per repeat."""
    return config.seeds * (config.selfedit.k + int(config.passage_only) + int(bool(config.teacher)))


def run_passages(s: Session, passages: list[Passage], scope: Scope = Scope()) -> None:
    """Baselines, inner steps and best-of-K picks of ``passages`` (indexes 0, 1, ... in ``scope``).

    Work goes to ``s.executor`` as soon as it can start (a passage's steps once its baseline is known),
    up to what the executor can take, passages in order; results are recorded strictly in the order an
    in-process run records them (baseline, steps, best-of-K, passage by passage), so the rows do not
    depend on how many workers ran them or which finished first. Resumable: what is recorded is read
    back, not redone.
    """
    work = [_plan(s, scope, idx, p) for idx, p in enumerate(passages)]
    tickets: dict = {}
    head = 0
    while True:
        while head < len(work) and _commit(s, scope, work[head]):
            s.events.passage_done(work[head].idx)
            head += 1
        if head == len(work):
            return
        _submit_ready(s, scope, work[head: head + s.executor.capacity + 1], tickets)
        ticket, result = s.executor.next_done()
        w, st = tickets.pop(ticket)
        if st is not None:
            st.result = result
        else:
            assert isinstance(result, BaselineResult)  # a ticket without a step is a baseline's
            w.base_result, w.baseline = result, Score.mean(a.score for a in result.base)


@dataclass
class _Step:
    """One inner step of a passage: where it sits (repeat, source, sample index) and how far it got."""

    seed_idx: int
    source: Source
    j: int
    done: Candidate | None = None
    submitted: bool = False
    result: StepResult | None = None


@dataclass
class _Work:
    """One passage's work: its recorded row (or baseline result waiting to be recorded) and its steps in
    the order they are recorded."""

    idx: int
    passage: Passage
    rec: PassageRecord | None
    steps: list
    baseline: Score | None = None
    base_submitted: bool = False
    base_result: BaselineResult | None = None
    committed: int = 0


def _plan(s: Session, scope: Scope, idx: int, passage: Passage) -> _Work:
    """Passage ``idx``'s work, with what a resumed run already recorded read back."""
    c = s.config
    steps = []
    for seed_idx in range(c.seeds):
        steps += [_Step(seed_idx, Source.PASSAGE_ONLY, 0)] if c.passage_only else []
        steps += [_Step(seed_idx, Source.SELF_EDIT, j) for j in range(c.selfedit.k)]
        steps += [_Step(seed_idx, Source.TEACHER, 0)] if c.teacher else []
    rec = record.find_passage(s.db, s.run_id, scope.round, scope.split, idx)
    if rec is not None:
        for st in steps:
            st.done = record.find_step(s.db, rec.id, st.source, st.seed_idx, st.j)
    return _Work(idx, passage, rec, steps, baseline=rec.baseline if rec else None)


def _submit_ready(s: Session, scope: Scope, window: list[_Work], tickets: dict) -> None:
    """Submit the work that can start, earliest first, as much as the executor takes now."""
    for w in window:
        if w.rec is None and not w.base_submitted:
            if s.executor.free() <= 0:
                return
            w.base_submitted = True
            tickets[s.executor.submit(BaselineJob(w.passage, s.config.eval.max_tokens))] = (w, None)
        if w.baseline is None:
            continue
        for st in w.steps:
            if st.done is None and not st.submitted:
                if s.executor.free() <= 0:
                    return
                st.submitted = True
                inp = _step_input(s, scope, w.idx, w.passage, w.baseline, st.seed_idx, st.source, st.j)
                tickets[s.executor.submit(StepJob(inp))] = (w, st)


def _commit(s: Session, scope: Scope, w: _Work) -> bool:
    """Record what is ready of passage ``w``, in order; True once all of it is recorded."""
    if w.rec is None:
        if w.base_result is None:
            return False
        s.clock.rows.extend(w.base_result.timings)
        w.rec = record.record_passage(s.db, s.run_id, w.idx, w.passage, scope.round, scope.split,
                                      w.base_result.base, w.base_result.ceiling, s.clock)
        w.base_result = None
    while w.committed < len(w.steps):
        st = w.steps[w.committed]
        if st.done is None:
            if st.result is None:
                return False
            st.done, st.result = _record_step(s, w, st), None
        w.committed += 1
        if w.committed == len(w.steps) or w.steps[w.committed].seed_idx != st.seed_idx:
            group = [x.done for x in w.steps if x.seed_idx == st.seed_idx and x.source == Source.SELF_EDIT]
            _best_of_k(s, scope, group)
    return True


def _record_step(s: Session, w: _Work, st: _Step) -> Candidate:
    """Record one finished step; conditions that are not best-of-K candidates keep no adapter unless asked."""
    keep = st.source == Source.SELF_EDIT or s.config.keep_adapters
    assert w.rec is not None and st.result is not None  # _commit records the passage first, and waits for the result
    cand = record.record_step(s.db, s.run_id, w.rec, st.seed_idx, st.j, st.result, keep, s.clock)
    ok = st.result.status == EditStatus.OK
    s.events.self_edit_done(w.idx, st.j, st.result.reward.contains if ok else None, st.source)
    return cand


def _adapter_name(s: Session, scope: Scope, idx: int, seed_idx: int, source: Source, j: int) -> str:
    tag = {Source.SELF_EDIT: f"k{j:02d}", Source.PASSAGE_ONLY: "passage", Source.TEACHER: "teacher"}[source]
    name = f"p{idx:03d}-s{seed_idx}-{tag}" if s.config.seeds > 1 else f"p{idx:03d}-{tag}"
    return f"r{scope.round}-{scope.split}-{name}" if s.config.rounds else name


def _step_input(s: Session, scope: Scope, idx: int, passage: Passage, baseline: Score, seed_idx: int,
                source: Source, j: int) -> StepInput:
    slot = j if source == Source.SELF_EDIT else SEED_SLOTS[source]
    inp = StepInput(passage, source, step_seed(s.config.seed, seed_idx, idx, slot), baseline,
                    s.run_dir / "adapters", _adapter_name(s, scope, idx, seed_idx, source, j))
    if source == Source.SELF_EDIT:
        edit_types = s.config.selfedit.edit_types
        return replace(inp, edit_type=edit_types[j % len(edit_types)])
    if source == Source.TEACHER:
        assert s.config.teacher is not None  # a run has teacher steps only with a teacher file
        completions = s.teacher[passage.key]
        return replace(inp, text=completions[seed_idx % len(completions)], prompt=s.config.teacher)
    return inp


def _best_of_k(s: Session, scope: Scope, candidates: list[Candidate]) -> None:
    """Best-of-K: highest contains gain, ties broken by F1 gain, then by sample order. A skipped self-edit
    (model unchanged, reward 0) is a candidate too, so best-of-K never falls below "no update". Adapters
    other than the best are dropped (all of them in ReST-EM), unless the run keeps every adapter."""
    if not candidates:
        return
    best = record.mark_best(s.db, candidates)
    if s.config.keep_adapters:
        return
    for c in candidates:
        if c.adapter_id is not None and (c.adapter_id != best.adapter_id or not scope.keep_best):
            record.drop_adapter(s.db, c)
