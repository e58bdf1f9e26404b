"""One passage of a run (SEAL, Zweiger et al. 2025, sec. 3, Algorithm 1): baseline and ceiling answers,
then per repeat (``--seeds``) the inner steps (LoRA on the passage alone, K sampled self-edits, a teacher
self-edit: whichever the run trains), each recorded as it finishes, then the best-of-K pick.

Resumable step by step: what is recorded is read back, not redone; what is not is run with the seed an
uninterrupted run would have used.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from sealq.engine import answer as qa
from sealq.engine import record
from sealq.engine.config import LoopConfig
from sealq.engine.dataset import Passage
from sealq.engine.record import Candidate, Clock, PassageRecord
from sealq.engine.step import SEED_SLOTS, Models, StepInput, inner_step, step_seed
from sealq.vocab import EditStatus, Source, Split

__all__ = ["Session", "Scope", "LoopEvents", "run_passage", "units_per_passage"]


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
    live models, the timing clock, the progress callbacks and the teacher completions by passage key."""

    db: object
    run_id: str
    run_dir: Path
    config: LoopConfig
    models: Models
    clock: Clock
    events: LoopEvents
    teacher: dict


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


def run_passage(s: Session, idx: int, passage: Passage, scope: Scope = Scope()) -> None:
    """Baseline, inner steps and best-of-K for passage ``idx`` (module docstring), recorded as they finish."""
    rec = record.find_passage(s.db, s.run_id, scope.round, scope.split, idx) or _baseline(s, idx, passage, scope)
    k = s.config.selfedit.k
    for seed_idx in range(s.config.seeds):
        if s.config.passage_only:
            _unit(s, scope, idx, passage, rec, seed_idx, Source.PASSAGE_ONLY, 0)
        candidates = [_unit(s, scope, idx, passage, rec, seed_idx, Source.SELF_EDIT, j) for j in range(k)]
        if s.config.teacher:
            _unit(s, scope, idx, passage, rec, seed_idx, Source.TEACHER, 0)
        _best_of_k(s, scope, candidates)


def _baseline(s: Session, idx: int, passage: Passage, scope: Scope) -> PassageRecord:
    """Answer the passage's questions without the passage and with it (greedy: once per passage)."""
    runner, budget = s.models.runner, s.config.eval.max_tokens
    runner.set_adapters(None)
    with s.clock.time("baseline"):
        base = qa.answer_passage(runner, passage, with_context=False, max_tokens=budget)
    with s.clock.time("ceiling"):
        ceiling = qa.answer_passage(runner, passage, with_context=True, max_tokens=budget)
    return record.record_passage(s.db, s.run_id, idx, passage, scope.round, scope.split, base, ceiling, s.clock)


def _adapter_name(s: Session, scope: Scope, idx: int, seed_idx: int, source: Source, j: int) -> str:
    tag = {Source.SELF_EDIT: f"k{j:02d}", Source.PASSAGE_ONLY: "passage", Source.TEACHER: "teacher"}[source]
    name = f"p{idx:03d}-s{seed_idx}-{tag}" if s.config.seeds > 1 else f"p{idx:03d}-{tag}"
    return f"r{scope.round}-{scope.split}-{name}" if s.config.rounds else name


def _step_input(s: Session, scope: Scope, idx: int, passage: Passage, rec: PassageRecord, seed_idx: int,
                source: Source, j: int) -> StepInput:
    slot = j if source == Source.SELF_EDIT else SEED_SLOTS[source]
    inp = StepInput(passage, source, step_seed(s.config.seed, seed_idx, idx, slot), rec.baseline,
                    s.run_dir / "adapters", _adapter_name(s, scope, idx, seed_idx, source, j))
    if source == Source.SELF_EDIT:
        edit_types = s.config.selfedit.edit_types
        return replace(inp, edit_type=edit_types[j % len(edit_types)])
    if source == Source.TEACHER:
        completions = s.teacher[passage.key]
        return replace(inp, text=completions[seed_idx % len(completions)], prompt=s.config.teacher)
    return inp


def _unit(s: Session, scope: Scope, idx: int, passage: Passage, rec: PassageRecord, seed_idx: int,
          source: Source, j: int) -> Candidate:
    """One inner step, recorded; a step already recorded (resume) is read back instead of redone."""
    done = record.find_step(s.db, rec.id, source, seed_idx, j)
    if done is not None:
        return done
    result = inner_step(_step_input(s, scope, idx, passage, rec, seed_idx, source, j), s.models, s.config)
    # conditions that are not best-of-K candidates keep no adapter unless asked
    keep = source == Source.SELF_EDIT or s.config.keep_adapters
    cand = record.record_step(s.db, s.run_id, rec, seed_idx, j, result, keep, s.clock)
    s.events.self_edit_done(idx, j, result.reward.contains if result.status == EditStatus.OK else None, source)
    return cand


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
