"""Continual self-edits: many passages learned one after another into one model, the forgetting matrix,
and gated updates (SEAL, Zweiger et al. 2025, sec. 4.3 "catastrophic forgetting"; STABLE 2025 for gates).

Per sequence of L passages, every gate starts from the base model. At step t:

1. the current model (base + the updates its gate accepted so far) answers passage t's questions without
   the passage: its *gate* questions (the step's baseline) and, with every passage before it, its
   *scored* questions (row t of the forgetting matrix);
2. it writes K self-edits for passage t; each LoRA is trained on top of the current model (training side:
   accepted LoRAs merged into the weights) and scored on passage t's gate questions; best-of-K is picked
   on them (:func:`sealq.engine.step.inner_step`);
3. each gate decides on the best self-edit: ``none`` accepts it; ``retention:D`` rejects it when the mean
   gate accuracy on passages 0..t-1 drops by more than D; ``kl:X`` rejects it when the mean per-token
   KL(current || updated) on a fixed probe text exceeds X nats;
4. an accepted update becomes part of the model: merged into the training weights
   (:func:`~sealq.engine.step.merge_into_training_model`) and stacked in llama.cpp
   (:meth:`~sealq.models.llama.LlamaRunner.set_policy`), so the model after t steps is base + accepted
   adapters on both sides. Each new model state's logits are compared between the two sides on the probe
   text (``continual_models.parity_*``).

After the last step, row L scores every passage. A model state is named by its *history* (the steps whose
update was accepted): gates that accepted the same updates share one state, its candidates and answers,
so side-by-side gates cost only where they differ. Each passage's questions are split (seeded) into gate
and scored questions: best-of-K and the gates see only gate questions, the matrix only scored ones.

Everything is recorded as soon as it is complete; a run killed anywhere continues with
:func:`resume_continual` and ends with the rows an uninterrupted run would have.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ulid import ULID

from sealq.analysis.continual import continual_summary, model_updates
from sealq.cores import requested_threads
from sealq.engine import answer as qa
from sealq.engine import record
from sealq.engine.config import ContinualConfig, Gate, LearnConfig
from sealq.engine.dataset import Passage, load_passages
from sealq.engine.loop import clean_orphans, package_versions, record_failure, resolved_config
from sealq.engine.record import Candidate, Clock, PassageRecord, elapsed_since
from sealq.engine.selection import Selection, check_lengths, selection_sha256
from sealq.engine.step import Models, StepInput, inner_step, load_trainer, merge_into_training_model, step_seed
from sealq.errors import SealqError
from sealq.faults import kill_point
from sealq.metrics import Score
from sealq.models.registry import file_sha256, resolve_model
from sealq.store import RunLock, find_run, open_db, resolve_workspace, resume_command, utc_now
from sealq.vocab import Command, GateKind, QuestionRole, RunStatus, Source, Split, UpdateStatus

if TYPE_CHECKING:
    from sqlite_utils import Database

__all__ = ["ContinualEvents", "run_continual", "resume_continual", "draw_sequences", "split_questions",
           "probe_text", "PROBE_POSITIONS"]

#: next-token positions of the probe text at which llama.cpp's and the training model's logits are compared
PROBE_POSITIONS = 8


class ContinualEvents:
    """Progress callbacks of a continual run (the CLI prints them); the default does nothing."""

    def stage(self, text: str) -> None:
        """A set-up stage begins."""

    def step_done(self, sequence: int, step: int, n_sequences: int, length: int, title: str,
                  decisions: list[dict]) -> None:
        """Step ``step`` of ``sequence`` is recorded; ``decisions``: per gate ``{gate, status, measurement}``."""


def probe_text() -> str:
    """The fixed probe text of the KL gate and of the logit parity check (``sealq/data/probe.txt``)."""
    return (Path(__file__).resolve().parent.parent / "data" / "probe.txt").read_text(encoding="utf-8")


def split_questions(passage: Passage, seed: int, fraction: float) -> tuple[list[int], list[int]]:
    """Split a passage's questions (seeded by ``seed`` and the passage key) into gate and scored indexes.

    Returns:
        (gate indexes, scored indexes), each sorted, each non-empty: round(n * fraction) gate questions,
        at least 1 and at most n - 1.

    Raises:
        SealqError: fewer than 2 questions.
    """
    n = len(passage.questions)
    if n < 2:
        raise SealqError(f"passage {passage.title!r}: a continual run needs at least 2 questions per passage")
    order = list(range(n))
    random.Random(f"{seed}:{passage.key}").shuffle(order)
    n_gate = max(1, min(n - 1, round(n * fraction)))
    return sorted(order[:n_gate]), sorted(order[n_gate:])


def draw_sequences(passages: list[Passage], sequences: int, length: int, seed: int) -> list[list[Passage]]:
    """``sequences`` disjoint sequences of ``length`` passages, drawn (seeded) from the passages that have at
    least 2 questions.

    Raises:
        SealqError: not enough such passages.
    """
    usable = [p for p in passages if len(p.questions) >= 2]
    need = sequences * length
    if len(usable) < need:
        fewer = len(passages) - len(usable)
        raise SealqError(f"--sequences {sequences} x --length {length} needs {need} passages with at least 2 "
                         f"questions (one for the gates, one scored); the data has {len(usable)}"
                         + (f" ({fewer} of its {len(passages)} have fewer)" if fewer else ""))
    order = list(range(len(usable)))
    random.Random(seed).shuffle(order)
    return [[usable[i] for i in order[s * length:(s + 1) * length]] for s in range(sequences)]


@dataclass(frozen=True)
class _SeqPassage:
    """Passage ``idx`` of a sequence as recorded: its row, and the passage restricted to its gate and to
    its scored questions (with their question row ids)."""

    idx: int
    row_id: int
    gate: Passage
    gate_qids: list
    scored: Passage
    scored_qids: list


@dataclass
class _Ctx:
    """What every step of a continual run shares."""

    db: Database
    run_id: str
    run_dir: Path
    config: ContinualConfig
    models: Models
    clock: Clock
    events: ContinualEvents
    base_state: dict[str, Any]
    probe_ids: list[int]
    active: int | None = None
    base_logits: tuple | None = None  # (llama.cpp, training model) at the probe positions, base model
    gates: list = field(default_factory=list)
    #: called with (ctx, sequence, passage, model_id, candidates, baseline) after a step's K candidates are
    #: recorded and before best-of-K drops adapters (``sealq learn`` scores them on gold questions there)
    on_candidates: Callable[[_Ctx, int, _SeqPassage, int, list[Candidate], Score], None] | None = None
    #: score every passage seen so far after each step (the full matrix); False: only the passage about to be
    #: learned and the one just learned (the diagonals), and every passage after the last step
    full_matrix: bool = True


# ---- start, resume, execute ------------------------------------------------------------------------

def run_continual(config: ContinualConfig, workspace: str | os.PathLike | None = None,
                  events: ContinualEvents | None = None) -> dict:
    """Run ``config.sequences`` sequences of ``config.length`` passages with every gate (module docstring).

    Returns:
        The run summary (:func:`sealq.analysis.continual.continual_summary`; also in ``runs.summary_json``).

    Raises:
        SealqError: bad data, model or options (nothing is recorded for a run that cannot start).
    """
    from sealq.models.llama import LlamaRunner

    events = events or ContinualEvents()
    ws = resolve_workspace(workspace)
    seqs = draw_sequences(load_passages(config.loop.data), config.sequences, config.length, config.loop.seed)
    model = resolve_model(config.loop.model)
    config = replace(config, loop=resolved_config(config.loop, model))
    events.stage(f"loading {model.name} into llama.cpp")
    lc = config.loop
    runner = LlamaRunner(model, n_ctx=lc.eval.n_ctx, threads=lc.eval.threads, seed=lc.seed)
    check_lengths(runner, [p for s in seqs for p in s], lc)
    db, run_id, lock = _insert_run(ws, Command.CONTINUAL, model, config, lc.data or "(bundled default)", seqs)
    return _execute(db, ws, run_id, config, seqs, runner, model, events, lock, prior_ms=0)


def resume_continual(run: str, workspace: str | os.PathLike | None = None,
                     events: ContinualEvents | None = None, threads: int | None = None) -> dict:
    """Continue an interrupted continual run with its stored settings (``sealq continual --resume RUN``);
    ``threads`` as :func:`sealq.engine.loop.resume_loop`'s.

    Raises:
        SealqError: unknown run, not a continual run, complete, locked, or its data or model changed.
    """
    from sealq.models.llama import LlamaRunner

    events = events or ContinualEvents()
    ws = resolve_workspace(workspace)
    db = open_db(ws)
    run_id = find_run(db, run)
    lock = RunLock(ws, run_id).acquire()
    try:
        row = db.table("runs").get(run_id)
        config, seqs, model = _resumable(run_id, row)
        config = replace(config, loop=config.loop.threads_decided(requested_threads(threads)))
        clean_orphans(db, run_id, ws / "runs" / run_id / "adapters")
        events.stage(f"resuming run {run_id}: loading {model.name} into llama.cpp")
        lc = config.loop
        runner = LlamaRunner(model, n_ctx=lc.eval.n_ctx, threads=lc.eval.threads, seed=lc.seed)
        _mark_resumed(db, run_id, row, config)
    except BaseException:
        lock.release()
        raise
    return _execute(db, ws, run_id, config, seqs, runner, model, events, lock, prior_ms=row["duration_ms"] or 0)


def _insert_run(ws: Path, command: Command, model, config, data_path: str, seqs) -> tuple:
    """Record a new run of ``command`` (status running) under its lock: returns (db, run id, held lock)."""
    db = open_db(ws)
    run_id = str(ULID())
    lock = RunLock(ws, run_id).acquire()
    try:
        db.table("runs").insert({
            "id": run_id, "command": command.value, "status": RunStatus.RUNNING.value, "started_utc": utc_now(),
            "model_name": model.name, "model_path": str(model.path), "model_sha256": file_sha256(model.path),
            "data_path": data_path, "seed": config.loop.seed, "pid": os.getpid(),
            "config_json": json.dumps(config.to_dict()), "versions_json": json.dumps(package_versions()),
            "selection_sha256": _fingerprint(seqs),
        })
    except BaseException:
        lock.release()
        raise
    return db, run_id, lock


def _mark_resumed(db, run_id: str, row: dict, config: ContinualConfig | LearnConfig) -> None:
    """The run is running again in this process (one more resume), with ``config``: the stored settings with
    the thread counts decided for this resume (:meth:`~sealq.engine.config.LoopConfig.threads_decided`)."""
    db["runs"].update(run_id, {"status": RunStatus.RUNNING.value, "pid": os.getpid(),
                               "resumes": (row["resumes"] or 0) + 1, "error": None, "finished_utc": None,
                               "config_json": json.dumps(config.to_dict())})


def _resumable(run_id: str, row: dict):
    if row["command"] != Command.CONTINUAL:
        raise SealqError(f"run {run_id} is a `sealq {row['command']}` run; continue it with "
                         f"`{resume_command(run_id, row['command'])}`")
    if row["status"] == RunStatus.DONE:
        raise SealqError(f"run {run_id} is complete; nothing to resume")
    config = ContinualConfig.from_dict(json.loads(row["config_json"]))
    seqs = draw_sequences(load_passages(config.loop.data), config.sequences, config.length, config.loop.seed)
    if row["selection_sha256"] != _fingerprint(seqs):
        raise SealqError(f"run {run_id}: the passages, questions or answers it uses ({config.loop.data or 'the bundled data'}) "
                         "changed since the run started; cannot resume")
    model = resolve_model(config.loop.model)
    if file_sha256(model.path) != row["model_sha256"]:
        raise SealqError(f"run {run_id}: model file {model.path} changed since the run started; cannot resume")
    return config, seqs, model


def _fingerprint(seqs: list[list[Passage]]) -> str:
    return selection_sha256(Selection([p for s in seqs for p in s], [], {}))


def _execute(db, ws: Path, run_id: str, config: ContinualConfig, seqs, runner, model, events, lock,
             prior_ms: int, command: Command = Command.CONTINUAL, prepare=None, summarize=continual_summary,
             on_candidates=None, full_matrix: bool = True) -> dict:
    """Load the training model, run every sequence, record the summary; on failure record the run as
    failed or interrupted; release the lock in any case.

    ``prepare(ctx, s, passages)`` records sequence ``s`` and returns its :class:`_SeqPassage` list (default:
    :func:`_record_sequence`); ``summarize(db, run_id)`` is the stored summary; ``command`` names the run's
    command in a failure's resume hint (``sealq learn`` passes its own three, a candidates hook, and
    ``full_matrix`` False when gold questions make every row costly)."""
    elapsed_ms = elapsed_since(prior_ms)
    clock = Clock(elapsed_ms)
    try:
        events.stage("loading the training model (dequantized GGUF)")
        trainer = load_trainer(config.loop, model, clock.timer)
        base_state = {k: v.detach().clone() for k, v in trainer.state_dict().items()}
        probe = runner.tokenize(probe_text())[: min(256, runner.n_ctx)]
        c = _Ctx(db, run_id, ws / "runs" / run_id, config, Models(runner, trainer, model.path), clock, events,
                 base_state, probe, gates=config.gate_list, on_candidates=on_candidates, full_matrix=full_matrix)
        c.base_logits = _probe_logits(c)
        for s, passages in enumerate(seqs):
            _run_sequence(c, s, (prepare or _record_sequence)(c, s, passages))
        summary = summarize(db, run_id)
        db["runs"].update(run_id, {"status": RunStatus.DONE.value, "finished_utc": utc_now(),
                                   "duration_ms": elapsed_ms(), "summary_json": json.dumps(summary)})
        return summary
    except BaseException as e:
        record_failure(db, ws, run_id, e, elapsed_ms(), command=command)
        raise
    finally:
        lock.release()


# ---- one sequence ------------------------------------------------------------------------------------

def _record_sequence(c: _Ctx, s: int, passages: list[Passage]) -> list[_SeqPassage]:
    """Sequence ``s``'s passages as rows (written in one transaction the first time, read back after)."""
    lc = c.config.loop
    splits = [split_questions(p, lc.seed, c.config.gate_fraction) for p in passages]
    q = "select id from passages where run_id = ? and round = ? and split = ? and idx = ?"
    with c.db.atomic():
        for t, (p, (gate, _)) in enumerate(zip(passages, splits)):
            if c.db.execute(q, [c.run_id, s, Split.CONTINUAL.value, t]).fetchone():
                continue
            pid = c.db.table("passages").insert({
                "run_id": c.run_id, "idx": t, "key": p.key, "title": p.title, "context": p.context,
                "n_questions": len(p.questions), "round": s, "split": Split.CONTINUAL.value}).last_pk
            c.db.table("questions").insert_all([
                {"passage_id": pid, "idx": j, "question": x.question, "answers_json": json.dumps(list(x.answers)),
                 "role": (QuestionRole.GATE if j in gate else QuestionRole.SCORED).value}
                for j, x in enumerate(p.questions)])
    out = []
    for t, (p, (gate, scored)) in enumerate(zip(passages, splits)):
        pid = c.db.execute(q, [c.run_id, s, Split.CONTINUAL.value, t]).fetchone()[0]
        qids = [r[0] for r in c.db.execute("select id from questions where passage_id = ? order by idx", [pid])]
        out.append(_SeqPassage(t, pid, replace(p, questions=tuple(p.questions[j] for j in gate)), [qids[j] for j in gate],
                               replace(p, questions=tuple(p.questions[j] for j in scored)), [qids[j] for j in scored]))
    return out


def _run_sequence(c: _Ctx, s: int, passages: list[_SeqPassage]) -> None:
    """Every step of sequence ``s`` for every gate; rows 0..L of the forgetting matrix."""
    base = _model_row(c, s, "", None, None)
    state = {g.spec: base for g in c.gates}
    for t, sp in enumerate(passages):
        for m in _distinct(state):
            _score_row(c, m, passages[: t + 1] if c.full_matrix else passages[max(0, t - 1): t + 1])
        decisions, best = [], {}
        for m in _distinct(state):
            best[m] = _best_candidate(c, s, sp, m)
        for g in c.gates:
            m = state[g.spec]
            state[g.spec], d = _decide(c, s, g, sp, m, best[m], passages[:t])
            decisions.append(d)
        c.events.step_done(s, t, c.config.sequences, c.config.length, sp.gate.title, decisions)
    for m in _distinct(state):
        _score_row(c, m, passages)


def _distinct(state: dict) -> list[int]:
    return list(dict.fromkeys(state.values()))


def _score_row(c: _Ctx, model_id: int, passages: list[_SeqPassage]) -> None:
    """The model state's answers to the scored questions of ``passages`` (a row of the matrix)."""
    for sp in passages:
        _answers(c, model_id, sp.scored, sp.scored_qids)


# ---- model states --------------------------------------------------------------------------------------

def _model_row(c: _Ctx, s: int, history: str, parent: int | None, update: int | None) -> int:
    """The id of sequence ``s``'s model state ``history`` (inserted the first time)."""
    row = c.db.execute("select id from continual_models where run_id = ? and sequence = ? and history = ?",
                       [c.run_id, s, history]).fetchone()
    if row:
        return row[0]
    # the ignore: sqlite_utils types last_pk as Optional (None before any insert); here it is the new row's id
    return c.db.table("continual_models").insert({"run_id": c.run_id, "sequence": s, "history": history,  # type: ignore[return-value]
                                                  "parent_id": parent, "update_self_edit_id": update}).last_pk


def _updates(c: _Ctx, model_id: int) -> list[tuple[str, str]]:
    """The (PEFT folder, GGUF) of the updates that make ``model_id``, oldest first."""
    return model_updates(c.db, model_id)


def _activate(c: _Ctx, model_id: int) -> None:
    """Make ``model_id`` the live model on both sides: the training weights reset to the base and the
    accepted LoRAs merged in order; the same adapters stacked in llama.cpp. A new state's logit parity
    is measured and recorded the first time."""
    if c.active == model_id:
        return
    updates = _updates(c, model_id)
    assert c.models.trainer is not None  # a continual run trains in this process (_execute loads it)
    c.models.trainer.load_state_dict(c.base_state)
    for peft_dir, _ in updates:
        merge_into_training_model(c.models.trainer, peft_dir)
    runner = c.models.runner
    before = [p for p, _ in runner.policy]
    runner.set_policy([(g, 1.0) for _, g in updates], validate=False)
    for p in set(before) - {q for q, _ in runner.policy}:  # another state's adapters: free their memory
        runner.free_adapter(p)
    c.active = model_id
    row = c.db.table("continual_models").get(model_id)
    if updates and row["parity_corr"] is None:
        c.db.table("continual_models").update(model_id, _parity(c))


def _probe_logits(c: _Ctx):
    """Logits of the live model on both sides at :data:`PROBE_POSITIONS` prefixes of the probe text:
    (llama.cpp, training model), float64 arrays of shape (positions, n_vocab)."""
    import numpy as np
    import torch

    n = len(c.probe_ids)
    ends = sorted({max(1, round(n * (i + 1) / PROBE_POSITIONS)) for i in range(PROBE_POSITIONS)})
    llama = np.stack([c.models.runner.next_token_logits(c.probe_ids[:e]) for e in ends]).astype(np.float64)
    assert c.models.trainer is not None  # as in _activate
    with torch.no_grad():
        hf = c.models.trainer(torch.tensor([c.probe_ids])).logits[0].float().numpy().astype(np.float64)
    return llama, hf[[e - 1 for e in ends]]


def _parity(c: _Ctx) -> dict:
    """How llama.cpp's stacked adapters compare with the merged training model: correlation and relative
    size of the two logit changes from the base, and their largest absolute difference."""
    import numpy as np

    assert c.base_logits is not None  # measured by _execute before the first step
    (l0, h0), (l1, h1) = c.base_logits, _probe_logits(c)
    dl, dh = (l1 - l0).ravel(), (h1 - h0).ravel()
    return {"parity_corr": float(np.corrcoef(dl, dh)[0, 1]), "parity_scale": float(np.linalg.norm(dl) / np.linalg.norm(dh)),
            "parity_max_abs": float(np.abs(dl - dh).max())}


# ---- answers, candidates, gates --------------------------------------------------------------------

def _answers(c: _Ctx, model_id: int, passage: Passage, qids: list, candidate: Candidate | None = None) -> list[Score]:
    """Model state ``model_id``'s scores on ``passage``'s questions (no passage in the prompt), with the
    candidate's adapter on top when given; answered and recorded (one transaction) the first time."""
    cid = candidate.self_edit_id if candidate else None
    rows = {r["question_id"]: Score(r["contains"], r["em"], r["f1"]) for r in c.db.query(
        f"select * from continual_answers where model_id = ? and candidate_id is ? and question_id in "
        f"({','.join('?' * len(qids))})", [model_id, cid, *qids])}
    if len(rows) == len(qids):
        return [rows[q] for q in qids]
    _activate(c, model_id)
    runner = c.models.runner
    with c.clock.time("continual_answers"):
        if candidate is not None:
            assert candidate.gguf_path is not None  # a candidate scored here has an adapter
            runner.set_adapters([(candidate.gguf_path, 1.0)], validate=False)
        try:
            answers = qa.answer_passage(runner, passage, with_context=False, max_tokens=c.config.loop.eval.max_tokens)
        finally:
            runner.set_adapters(None)
            if candidate is not None:
                assert candidate.gguf_path is not None  # as above
                runner.free_adapter(candidate.gguf_path)  # never part of the live state (it sits on top of it)
    with c.db.atomic():
        c.db.table("continual_answers").insert_all([
            {"run_id": c.run_id, "model_id": model_id, "candidate_id": cid, "question_id": q,
             "prediction": a.generation.text, "em": a.score.em, "f1": a.score.f1, "contains": a.score.contains,
             "tokens": a.generation.tokens, "seconds": a.generation.seconds} for q, a in zip(qids, answers)])
        c.clock.flush(c.db, c.run_id)
    return [a.score for a in answers]


def _best_candidate(c: _Ctx, s: int, sp: _SeqPassage, model_id: int) -> Candidate:
    """K self-edits for passage ``sp`` written and trained on model state ``model_id``, rewarded on the
    gate questions; the best-of-K (:func:`sealq.engine.passage`'s rule: a skipped self-edit, reward 0,
    is a candidate too). Adapters other than the best are dropped unless the run keeps them all."""
    lc = c.config.loop
    baseline = Score.mean(_answers(c, model_id, sp.gate, sp.gate_qids))
    rec = PassageRecord(sp.row_id, sp.gate_qids, baseline)
    cands = []
    for j in range(lc.selfedit.k):
        found = record.find_step(c.db, sp.row_id, Source.SELF_EDIT, 0, j, continual_model_id=model_id)
        if found is None:
            _activate(c, model_id)
            edit_types = lc.selfedit.edit_types
            inp = StepInput(sp.gate, Source.SELF_EDIT, step_seed(lc.seed, s, sp.idx, j), baseline,
                            c.run_dir / "adapters", f"s{s:02d}-t{sp.idx:02d}-m{model_id}-k{j:02d}",
                            edit_type=edit_types[j % len(edit_types)])
            result = inner_step(inp, c.models, lc)
            found = record.record_step(c.db, c.run_id, rec, 0, j, result, True, c.clock, continual_model_id=model_id)
        cands.append(found)
    if c.on_candidates is not None:
        c.on_candidates(c, s, sp, model_id, cands, baseline)
    best = record.mark_best(c.db, cands)
    if not lc.keep_adapters:
        for x in cands:
            if x.adapter_id is not None and x.adapter_id != best.adapter_id and x.peft_dir and x.peft_dir.exists():
                record.drop_adapter(c.db, x)
    return best


def _decide(c: _Ctx, s: int, gate: Gate, sp: _SeqPassage, model_id: int, best: Candidate,
            earlier: list[_SeqPassage]) -> tuple[int, dict]:
    """Gate ``gate``'s decision on step ``sp.idx``'s best self-edit (recorded once); returns the model state
    after the step and the decision as reported."""
    q = "select * from continual_decisions where run_id = ? and sequence = ? and gate = ? and step = ?"
    rows = list(c.db.query(q, [c.run_id, s, gate.spec, sp.idx]))
    if not rows:
        status, measurement = _judge(c, gate, model_id, best, earlier)
        nxt = model_id
        if status == UpdateStatus.ACCEPTED:
            parent = c.db.table("continual_models").get(model_id)["history"]
            history = f"{parent},{sp.idx}" if parent else str(sp.idx)
            nxt = _model_row(c, s, history, model_id, best.self_edit_id)
        kill_point("continual_decision")
        c.db.table("continual_decisions").insert({
            "run_id": c.run_id, "sequence": s, "gate": gate.spec, "step": sp.idx, "model_id": model_id,
            "self_edit_id": best.self_edit_id, "status": status.value, "measurement": measurement,
            "threshold": gate.threshold, "next_model_id": nxt})
        rows = list(c.db.query(q, [c.run_id, s, gate.spec, sp.idx]))
    r = rows[0]
    return r["next_model_id"], {"gate": gate.spec, "status": r["status"], "measurement": r["measurement"],
                                "reward": best.reward.contains}


def _judge(c: _Ctx, gate: Gate, model_id: int, best: Candidate, earlier: list[_SeqPassage]):
    """(status, measurement): the gate's verdict on ``best`` over model state ``model_id``."""
    if best.adapter_id is None:
        return UpdateStatus.NO_UPDATE, None
    if gate.kind == GateKind.NONE:
        return UpdateStatus.ACCEPTED, None
    if gate.kind == GateKind.RETENTION:
        if not earlier:  # nothing learned before: nothing to lose
            return UpdateStatus.ACCEPTED, None
        value = _measure(c, model_id, best, GateKind.RETENTION, lambda: _retention(c, model_id, best, earlier))
    else:
        value = _measure(c, model_id, best, GateKind.KL, lambda: (None, None, _kl(c, model_id, best)))
    return (UpdateStatus.ACCEPTED if value <= gate.threshold + 1e-12 else UpdateStatus.REJECTED), value


def _measure(c: _Ctx, model_id: int, best: Candidate, kind: GateKind, compute) -> float:
    """A gate measurement of ``best`` on ``model_id`` (shared by every gate of that kind; recorded once)."""
    q = "select value from continual_measures where model_id = ? and self_edit_id = ? and kind = ?"
    row = c.db.execute(q, [model_id, best.self_edit_id, kind.value]).fetchone()
    if row:
        return row[0]
    before, after, value = compute()
    c.db.table("continual_measures").insert({"run_id": c.run_id, "model_id": model_id, "self_edit_id": best.self_edit_id,
                                             "kind": kind.value, "before": before, "after": after, "value": value})
    return value


def _retention(c: _Ctx, model_id: int, best: Candidate, earlier: list[_SeqPassage]) -> tuple[float, float, float]:
    """Mean contains accuracy on the earlier passages' gate questions (passages weigh equally) without and
    with the candidate; the value is the drop (before - after)."""
    before = sum(Score.mean(_answers(c, model_id, p.gate, p.gate_qids)).contains for p in earlier) / len(earlier)
    after = sum(Score.mean(_answers(c, model_id, p.gate, p.gate_qids, best)).contains for p in earlier) / len(earlier)
    return before, after, before - after


def _kl(c: _Ctx, model_id: int, best: Candidate) -> float:
    """Mean per-token KL(current || current + candidate) over the probe text, nats (training model: the
    candidate's PEFT adapter on the merged weights, which equal llama.cpp's stack; see ``parity_*``)."""
    import warnings

    import torch
    from peft import PeftModel

    _activate(c, model_id)
    trainer, ids = c.models.trainer, torch.tensor([c.probe_ids])
    assert trainer is not None  # as in _activate
    with torch.no_grad():
        p = trainer(ids).logits[0].float().log_softmax(-1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            wrapped = PeftModel.from_pretrained(trainer, str(best.peft_dir))
        try:
            q = wrapped(ids).logits[0].float().log_softmax(-1)
        finally:
            wrapped.unload()
            if hasattr(trainer, "peft_config"):
                del trainer.peft_config
    return float((p.exp() * (p - q)).sum(-1).mean())
