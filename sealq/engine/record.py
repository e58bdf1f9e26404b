"""The recorder: writes what the execution produced to ``runs.db``, one result per transaction, after its
files are complete; and reads back what a resumed run already recorded.

A row exists only for complete work: a passage's row with its baseline and ceiling answers, a step's
self-edit row with its adapter and answers, a policy with its lineage, each in one transaction. Files
come first (see :func:`sealq.engine.step.train_and_convert`), so a row never names a missing file.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sealq.engine.dataset import Passage
from sealq.engine.step import StepResult, Timer, TrainedAdapter
from sealq.faults import kill_point
from sealq.metrics import Score
from sealq.models.registry import file_sha256
from sealq.vocab import Condition, PolicyStatus, Source, Split

if TYPE_CHECKING:
    from sqlite_utils import Database

    from sealq.engine.answer import Answer

__all__ = ["Clock", "PassageRecord", "Candidate", "find_passage", "record_passage", "find_step", "record_step",
           "mark_best", "drop_adapter", "find_policy", "record_policy"]


@dataclass
class Clock:
    """Timings waiting to be written (``timings`` rows) and the run's duration so far: each flush (inside
    a result's transaction) also records ``runs.duration_ms``, so a run killed later keeps it."""

    elapsed_ms: Callable[[], int] | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def timer(self) -> Timer:
        """A :class:`~sealq.engine.step.Timer` that adds its rows to this clock's."""
        return Timer(self.rows)

    def time(self, stage: str) -> AbstractContextManager[None]:
        """A context manager that times ``stage`` into :attr:`rows`."""
        return self.timer(stage)

    def flush(self, db: Database, run_id: str, passage_id: int | None = None, self_edit_id: int | None = None) -> None:
        for row in self.rows:
            db.table("timings").insert({"run_id": run_id, "passage_id": passage_id, "self_edit_id": self_edit_id, **row})
        self.rows.clear()
        if self.elapsed_ms is not None:
            db.table("runs").update(run_id, {"duration_ms": self.elapsed_ms()})


@dataclass(frozen=True)
class PassageRecord:
    """A recorded passage: its row id, its question ids (in order) and its mean no-context score."""

    id: int
    question_ids: list[int]
    baseline: Score


@dataclass(frozen=True)
class Candidate:
    """A recorded step, as best-of-K sees it: its reward, sample index, rows and adapter files."""

    reward: Score
    sample_idx: int
    self_edit_id: int
    adapter_id: int | None
    peft_dir: Path | None
    gguf_path: Path | None

    @property
    def rank_key(self) -> tuple[float, float, int]:
        """Best-of-K order: contains gain, then F1 gain, then the earlier sample."""
        return (self.reward.contains, self.reward.f1, -self.sample_idx)


def _answer_rows(run_id: str, qids: list[int], answers: list[Answer], condition: Condition,
                 self_edit_id: int | None = None) -> list[dict[str, Any]]:
    return [
        {"run_id": run_id, "question_id": qid, "condition": condition.value, "self_edit_id": self_edit_id,
         "prediction": a.generation.text, "em": a.score.em, "f1": a.score.f1, "contains": a.score.contains,
         "tokens": a.generation.tokens, "seconds": a.generation.seconds}
        for qid, a in zip(qids, answers)
    ]


def find_passage(db: Database, run_id: str, round_: int, split: Split, idx: int) -> PassageRecord | None:
    """The recorded passage ``idx`` of one round and split, with its baseline read back (resume)."""
    row = db.execute("select id from passages where run_id = ? and round = ? and split = ? and idx = ?",
                     [run_id, round_, split.value, idx]).fetchone()
    if row is None:
        return None
    qids = [r[0] for r in db.execute("select id from questions where passage_id = ? order by idx", [row[0]])]
    by_q = {r["question_id"]: Score(r["contains"], r["em"], r["f1"]) for r in db.query(
        "select a.* from answers a join questions q on q.id = a.question_id where q.passage_id = ? and a.condition = ?",
        [row[0], Condition.NO_CONTEXT.value])}
    return PassageRecord(row[0], qids, Score.mean(by_q[q] for q in qids))


def record_passage(db: Database, run_id: str, idx: int, passage: Passage, round_: int, split: Split, base: list[Answer],
                   ceiling: list[Answer], clock: Clock) -> PassageRecord:
    """Write a passage, its questions, and its baseline (no passage) and ceiling answers in one transaction."""
    with db.atomic():
        pid = db.table("passages").insert(
            {"run_id": run_id, "idx": idx, "key": passage.key, "title": passage.title, "context": passage.context,
             "n_questions": len(passage.questions), "round": round_, "split": split.value}).last_pk
        assert pid is not None  # set by insert()
        # the ignore: sqlite_utils types last_pk as Optional (None before any insert); here each is the new row's id
        qids: list[int] = [db.table("questions").insert({"passage_id": pid, "idx": j, "question": q.question,  # type: ignore[misc]
                                              "answers_json": json.dumps(list(q.answers))}).last_pk
                           for j, q in enumerate(passage.questions)]
        db.table("answers").insert_all(_answer_rows(run_id, qids, base, Condition.NO_CONTEXT))
        db.table("answers").insert_all(_answer_rows(run_id, qids, ceiling, Condition.WITH_CONTEXT))
        clock.flush(db, run_id, passage_id=pid)
    return PassageRecord(pid, qids, Score.mean(a.score for a in base))


def find_step(db: Database, passage_id: int, source: Source, seed_idx: int, sample_idx: int,
              continual_model_id: int = 0) -> Candidate | None:
    """The recorded step of a passage with this source, repeat and sample index (resume), or None; in a
    continual run, the one written on model state ``continual_model_id``."""
    row = db.execute(
        """select s.id, s.reward, s.reward_em, s.reward_f1, a.id, a.peft_path, a.gguf_path from self_edits s
           left join adapters a on a.self_edit_id = s.id
           where s.passage_id = ? and s.source = ? and s.seed_idx = ? and s.sample_idx = ?
             and s.continual_model_id = ?""",
        [passage_id, source.value, seed_idx, sample_idx, continual_model_id]).fetchone()
    if row is None:
        return None
    se_id, reward, reward_em, reward_f1, ad_id, peft, gguf = row
    return Candidate(Score(reward, reward_em, reward_f1), sample_idx, se_id, ad_id,
                     Path(peft) if peft else None, Path(gguf) if gguf else None)


def _self_edit_row(run_id: str, p: PassageRecord, seed_idx: int, sample_idx: int, r: StepResult) -> dict[str, Any]:
    e = r.edit
    return {
        "run_id": run_id, "passage_id": p.id, "sample_idx": sample_idx, "seed_idx": seed_idx, "source": r.source.value,
        "edit_type": e.edit_type, "prompt": e.prompt, "text": e.text, "items_json": json.dumps(e.items),
        "n_items": len(e.items), "gen_tokens": e.gen_tokens, "directive_raw": e.directive_raw,
        "directive_json": json.dumps(e.directive.__dict__), "directive_fallback_json": json.dumps(e.fallbacks),
        "status": r.status.value, "skip_reason": r.skip_reason, "accuracy": r.accuracy.contains,
        "reward": r.reward.contains, "reward_em": r.reward.em, "reward_f1": r.reward.f1, "is_best": 0,
    }


def _loss_curve(a: TrainedAdapter) -> str:
    """An adapter's per-step training losses as stored (``loss_curve_json``, 5 decimals)."""
    return json.dumps([round(x, 5) for x in a.train.losses])


def _adapter_row(run_id: str, se_id: int, a: TrainedAdapter, keep: bool) -> dict[str, Any]:
    return {
        "run_id": run_id, "self_edit_id": se_id, "peft_path": str(a.peft_dir), "gguf_path": str(a.gguf_path),
        "gguf_sha256": file_sha256(a.gguf_path), "rank": a.train.rank, "alpha": a.train.alpha,
        "epochs": a.directive.epochs, "lr": a.directive.lr, "n_sequences": a.n_sequences,
        "tokens_trained": a.train.tokens_trained, "final_loss": a.train.final_loss,
        "loss_curve_json": _loss_curve(a), "train_seconds": a.train.seconds,
        "convert_seconds": a.convert_seconds, "kept": int(keep), "threads": a.train.threads,
    }


def record_step(db: Database, run_id: str, p: PassageRecord, seed_idx: int, sample_idx: int, r: StepResult, keep: bool,
                clock: Clock, continual_model_id: int = 0) -> Candidate:
    """Write one step (self-edit row, adapter row, adapted answers, timings) in one transaction. An adapter
    not kept is recorded as not kept, and its files deleted after the transaction (a crash in between
    leaves files that ``--resume`` deletes). ``continual_model_id``: the continual model state the step
    ran on (``sealq continual``; 0 otherwise)."""
    clock.rows.extend(r.timings)
    a = r.adapter
    with db.atomic():
        row = {**_self_edit_row(run_id, p, seed_idx, sample_idx, r), "continual_model_id": continual_model_id}
        se_id = db.table("self_edits").insert(row).last_pk
        assert se_id is not None  # set by insert()
        ad_id = None
        if a is not None:
            kill_point("db_write")
            ad_id = db.table("adapters").insert(_adapter_row(run_id, se_id, a, keep)).last_pk
            db.table("answers").insert_all(_answer_rows(run_id, p.question_ids, r.answers, Condition(r.source.value), se_id))
        clock.flush(db, run_id, passage_id=p.id, self_edit_id=se_id)
    if a is not None and not keep:
        _remove(a.peft_dir, a.gguf_path)
    return Candidate(r.reward, sample_idx, se_id, ad_id, a.peft_dir if a else None, a.gguf_path if a else None)


def mark_best(db: Database, candidates: list[Candidate]) -> Candidate:
    """Best-of-K (:attr:`Candidate.rank_key`): set ``is_best`` on the best, clear it on the others, in one
    transaction. Idempotent (a resumed run may redo it)."""
    best = max(candidates, key=lambda c: c.rank_key)
    with db.atomic():
        for c in candidates:
            db.table("self_edits").update(c.self_edit_id, {"is_best": int(c.self_edit_id == best.self_edit_id)})
    return best


def drop_adapter(db: Database, c: Candidate) -> None:
    """Record an adapter as not kept, then delete its files."""
    # callers drop only candidates with an adapter, and an adapter row names both files
    assert c.adapter_id is not None and c.peft_dir is not None and c.gguf_path is not None
    with db.atomic():
        db.table("adapters").update(c.adapter_id, {"kept": 0})
    _remove(c.peft_dir, c.gguf_path)


def _remove(peft_dir: Path, gguf_path: Path) -> None:
    shutil.rmtree(peft_dir, ignore_errors=True)
    gguf_path.unlink(missing_ok=True)


def find_policy(db: Database, run_id: str, round_: int) -> dict[str, Any] | None:
    """The recorded policy (ReST-EM generator update) that creates round ``round_``'s model, or None."""
    rows = list(db.query("select * from policies where run_id = ? and round = ?", [run_id, round_]))
    return rows[0] if rows else None


def record_policy(db: Database, run_id: str, round_: int, pairs: list[dict[str, Any]], adapter: TrainedAdapter | None,
                  clock: Clock) -> None:
    """Write policy ``round_`` with its lineage (which self-edits trained it) in one transaction; without
    an adapter, a ``no_data`` row (no usable self-edit: the model is unchanged)."""
    with db.atomic():
        if adapter is None:
            db.table("policies").insert({"run_id": run_id, "round": round_, "status": PolicyStatus.NO_DATA.value, "n_pairs": 0})
            return
        t = adapter.train
        pid = db.table("policies").insert({
            "run_id": run_id, "round": round_, "status": PolicyStatus.TRAINED.value, "n_pairs": len(pairs),
            "peft_path": str(adapter.peft_dir), "gguf_path": str(adapter.gguf_path),
            "gguf_sha256": file_sha256(adapter.gguf_path), "rank": t.rank, "alpha": t.alpha,
            "epochs": adapter.directive.epochs, "lr": adapter.directive.lr, "tokens_trained": t.tokens_trained,
            "final_loss": t.final_loss, "loss_curve_json": _loss_curve(adapter),
            "train_seconds": t.seconds, "threads": t.threads,
        }).last_pk
        db.table("policy_pairs").insert_all([{"policy_id": pid, "self_edit_id": p["self_edit_id"]} for p in pairs])
        clock.flush(db, run_id)


def elapsed_since(prior_ms: int) -> Callable[[], int]:
    """A clock of a run's duration: ``prior_ms`` (recorded before a resume) plus the time since now."""
    t0 = time.perf_counter()
    return lambda: prior_ms + int(1000 * (time.perf_counter() - t0))
