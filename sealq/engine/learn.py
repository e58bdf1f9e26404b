"""Learning a plain document (``sealq learn``): the model's own probe questions as the reward.

SEAL's reward needs gold questions; a document has none. Here the document is split into passages
(:mod:`sealq.engine.document`), the base model writes probe questions for each passage with the passage in
view (:mod:`sealq.engine.probes`), and the document is learned as one continual sequence
(:mod:`sealq.engine.continual`): at passage t the current model writes K self-edits, each LoRA is trained
on top of it and rewarded on passage t's probes *without* the passage, the best-of-K goes to the gate, and
an accepted update becomes part of the document model (merged for training, stacked in llama.cpp).
``sealq ask --run`` answers with that model and ``sealq export`` writes it as one adapter.

Probes are the gate questions (``questions.role = gate``): best-of-K and the gates see only them. Passages
from a ``.json`` file keep their gold questions as *scored* questions, never seen by the learner: the
forgetting matrix is then on gold questions, every candidate is also scored on them, and a LoRA on the
passage alone is trained at each step for comparison (the validation of docs/learn.md); only the matrix's
two diagonals (before and right after each step) and its last row are scored. A plain document's full
matrix is scored on its probes (the reward's own questions: an optimistic measure).

A passage whose sentences yield no usable probe is still learned: its K rewards are all 0 and best-of-K
takes the first sample (the gate still decides).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

from sealq.analysis.learn import learn_summary
from sealq.cores import requested_threads
from sealq.engine import record
from sealq.engine.config import LearnConfig
from sealq.engine.continual import (
    ContinualEvents,
    _activate,
    _answers,
    _execute,
    _fingerprint,
    _insert_run,
    _mark_resumed,
    _SeqPassage,
)
from sealq.engine.dataset import Passage, Question, load_passages
from sealq.engine.document import read_document, split_document
from sealq.engine.loop import clean_orphans, resolved_config
from sealq.engine.probes import write_probes
from sealq.engine.record import PassageRecord
from sealq.engine.selection import check_lengths
from sealq.engine.step import StepInput, inner_step, step_seed
from sealq.errors import SealqError
from sealq.faults import kill_point
from sealq.models.registry import file_sha256, resolve_model
from sealq.store import RunLock, find_run, open_db, resolve_workspace, resume_command
from sealq.vocab import Command, QuestionRole, RunStatus, Source, Split

__all__ = ["run_learn", "resume_learn", "learn_passages"]


def learn_passages(config: LearnConfig, count) -> list[Passage]:
    """The passages of ``config.files`` in order: documents split (``count``: tokens of a text), ``.json``
    files read with their gold questions; the first ``config.passages`` of them.

    Raises:
        SealqError: a file cannot be read, or nothing to learn.
    """
    out: list[Passage] = []
    for f in config.files:
        if Path(f).suffix.lower() == ".json":
            out.extend(load_passages(f))
        else:
            title, text = read_document(f)
            out.extend(split_document(text, title, count, config.max_passage_tokens,
                                      markdown=Path(f).suffix.lower() != ".txt"))
    out = out[: config.passages] if config.passages else out
    if not out:
        raise SealqError(f"{', '.join(config.files)}: no text to learn")
    if len(out) > 100:
        raise SealqError(f"{len(out)} passages: a learn run takes at most 100 (use --passages N, or split the documents)")
    return out


def _absolute(files) -> tuple[str, ...]:
    """The files as absolute paths (a run is resumable from any folder).

    Raises:
        SealqError: a path that cannot be resolved (a symlink loop).
    """
    out = []
    for f in files:
        try:
            out.append(str(Path(f).resolve()))
        except (OSError, RuntimeError) as e:
            raise SealqError(f"{f}: cannot resolve the path ({e})") from None
    return tuple(out)


def _start(config: LearnConfig, runner) -> tuple[LearnConfig, list[Passage]]:
    passages = learn_passages(config, lambda t: len(runner.tokenize(t)))
    check_lengths(runner, passages, config.loop)
    return replace(config, length=len(passages)), passages


def run_learn(config: LearnConfig, workspace: str | os.PathLike | None = None,
              events: ContinualEvents | None = None) -> dict:
    """Learn ``config.files`` (module docstring).

    Returns:
        The run summary (:func:`sealq.analysis.learn.learn_summary`; also in ``runs.summary_json``).

    Raises:
        SealqError: bad files, model or options (nothing is recorded for a run that cannot start).
    """
    from sealq.models.llama import LlamaRunner

    events = events or ContinualEvents()
    ws = resolve_workspace(workspace)
    config = replace(config, files=_absolute(config.files))
    learn_passages(config, lambda t: len(t.split()))  # bad files refused before the model loads (words ~ tokens)
    model = resolve_model(config.loop.model)
    config = replace(config, loop=resolved_config(config.loop, model))
    events.stage(f"loading {model.name} into llama.cpp")
    lc = config.loop
    runner = LlamaRunner(model, n_ctx=lc.eval.n_ctx, threads=lc.eval.threads, seed=lc.seed)
    config, passages = _start(config, runner)
    db, run_id, lock = _insert_run(ws, Command.LEARN, model, config, ", ".join(config.files), [passages])
    return _run(db, ws, run_id, config, passages, runner, model, events, lock, 0)


def resume_learn(run: str, workspace: str | os.PathLike | None = None, events: ContinualEvents | None = None,
                 threads: int | None = None) -> dict:
    """Continue an interrupted learn run with its stored settings (``sealq learn --resume RUN``); ``threads``
    as :func:`sealq.engine.loop.resume_loop`'s.

    Raises:
        SealqError: unknown run, not a learn run, complete, locked, or its files or model changed.
    """
    from sealq.models.llama import LlamaRunner

    events = events or ContinualEvents()
    ws = resolve_workspace(workspace)
    db = open_db(ws)
    run_id = find_run(db, run)
    lock = RunLock(ws, run_id).acquire()
    try:
        row = db.table("runs").get(run_id)
        if row["command"] != Command.LEARN:
            raise SealqError(f"run {run_id} is a `sealq {row['command']}` run, not a learn run; continue it with "
                             f"`{resume_command(run_id, row['command'])}`")
        if row["status"] == RunStatus.DONE:
            raise SealqError(f"run {run_id} is complete; nothing to resume")
        config = LearnConfig.from_dict(json.loads(row["config_json"]))
        config = replace(config, loop=config.loop.threads_decided(requested_threads(threads)))
        model = resolve_model(config.loop.model)
        if file_sha256(model.path) != row["model_sha256"]:
            raise SealqError(f"run {run_id}: model file {model.path} changed since the run started; cannot resume")
        events.stage(f"resuming run {run_id}: loading {model.name} into llama.cpp")
        lc = config.loop
        runner = LlamaRunner(model, n_ctx=lc.eval.n_ctx, threads=lc.eval.threads, seed=lc.seed)
        _, passages = _start(config, runner)
        if row["selection_sha256"] != _fingerprint([passages]):
            raise SealqError(f"run {run_id}: its files ({', '.join(config.files)}) changed since the run started; "
                             "cannot resume")
        clean_orphans(db, run_id, ws / "runs" / run_id / "adapters")
        _mark_resumed(db, run_id, row, config)
    except BaseException:
        lock.release()
        raise
    return _run(db, ws, run_id, config, passages, runner, model, events, lock, row["duration_ms"] or 0)


def _run(db, ws, run_id, config, passages, runner, model, events, lock, prior_ms) -> dict:
    """The document as one continual sequence; with gold questions only the matrix's diagonals and last row
    are scored (every row would answer every earlier passage's gold questions again)."""
    return _execute(db, ws, run_id, config, [passages], runner, model, events, lock, prior_ms,
                    command=Command.LEARN, prepare=_record_document, summarize=learn_summary,
                    on_candidates=_score_on_gold, full_matrix=not any(p.questions for p in passages))


# ---- the document's passages and probes ----------------------------------------------------------------

def _passage_id(c, t: int) -> int | None:
    row = c.db.execute("select id from passages where run_id = ? and round = 0 and split = ? and idx = ?",
                       [c.run_id, Split.CONTINUAL.value, t]).fetchone()
    return row[0] if row else None


def _record_document(c, s: int, passages: list[Passage]) -> list[_SeqPassage]:
    """The document's passages with their gold questions (scored; one transaction), then each passage's
    probes (written by the base model, one transaction per passage); read back as the sequence."""
    with c.db.atomic():
        for t, p in enumerate(passages):
            if _passage_id(c, t) is not None:
                continue
            pid = c.db["passages"].insert({
                "run_id": c.run_id, "idx": t, "key": p.key, "title": p.title, "context": p.context,
                "n_questions": len(p.questions), "round": 0, "split": Split.CONTINUAL.value}).last_pk
            c.db["questions"].insert_all([
                {"passage_id": pid, "idx": j, "question": x.question, "answers_json": json.dumps(list(x.answers)),
                 "role": QuestionRole.SCORED.value} for j, x in enumerate(p.questions)])
    for t, p in enumerate(passages):
        pid = _passage_id(c, t)
        assert pid is not None  # every passage was recorded above
        if c.db["passages"].get(pid)["n_probes"] is None:
            c.events.stage(f"probe questions for passage {t + 1}/{len(passages)} ({p.title[:40]})")
            _record_probes(c, pid, p)
    return [_read_passage(c, t) for t in range(len(passages))]


def _record_probes(c, pid: int, p: Passage) -> None:
    lc = c.config
    with c.clock.time("probes"):
        cands = write_probes(c.models.runner, Passage(p.title, p.context), lc.probes_per_passage,
                             max_tokens=lc.loop.eval.max_tokens)
    kill_point("probes")
    with c.db.atomic():
        n_gold = len(p.questions)
        kept = [x for x in cands if x.kept]
        qids = {id(x): c.db["questions"].insert({
            "passage_id": pid, "idx": n_gold + i, "question": x.question, "answers_json": json.dumps([x.answer]),
            "role": QuestionRole.GATE.value}).last_pk for i, x in enumerate(kept)}
        c.db["probes"].insert_all([
            {"run_id": c.run_id, "passage_id": pid, "idx": i, "sentence": x.sentence, "question": x.question,
             "answer_text": x.answer_text, "answer": x.answer, "reason": x.reason.value,
             "question_id": qids.get(id(x)), "seconds": x.seconds} for i, x in enumerate(cands)])
        c.db["passages"].update(pid, {"n_probes": len(kept)})
        c.clock.flush(c.db, c.run_id, passage_id=pid)


def _read_passage(c, t: int) -> _SeqPassage:
    """Passage ``t`` as recorded: probes as the gate questions; gold questions as the scored ones (a plain
    document's: its probes again)."""
    row = c.db["passages"].get(_passage_id(c, t))
    qs = list(c.db.query("select * from questions where passage_id = ? order by idx", [row["id"]]))

    def part(role):
        rows = [q for q in qs if q["role"] == role.value]
        return (Passage(row["title"], row["context"], tuple(Question(q["question"], tuple(json.loads(q["answers_json"])))
                                                            for q in rows)), [q["id"] for q in rows])

    gate, gate_qids = part(QuestionRole.GATE)
    scored, scored_qids = part(QuestionRole.SCORED)
    if not scored_qids:
        scored, scored_qids = gate, gate_qids
    return _SeqPassage(t, row["id"], gate, gate_qids, scored, scored_qids)


# ---- validation on gold questions ------------------------------------------------------------------------

def _score_on_gold(c, s: int, sp: _SeqPassage, model_id: int, cands: list, baseline) -> None:
    """With gold questions: every candidate's answers to them (its adapter on the current model), and a LoRA
    on the passage alone trained on the current model and scored on them too. Nothing here decides."""
    if sp.scored_qids == sp.gate_qids:
        return
    for x in cands:
        if x.adapter_id is not None:
            _answers(c, model_id, sp.scored, sp.scored_qids, x)
    lc = c.config.loop
    po = record.find_step(c.db, sp.row_id, Source.PASSAGE_ONLY, 0, 0, continual_model_id=model_id)
    if po is None:
        _activate(c, model_id)
        inp = StepInput(sp.gate, Source.PASSAGE_ONLY, step_seed(lc.seed, s, sp.idx, lc.selfedit.k), baseline,
                        c.run_dir / "adapters", f"s{s:02d}-t{sp.idx:02d}-m{model_id}-passage")
        po = record.record_step(c.db, c.run_id, PassageRecord(sp.row_id, sp.gate_qids, baseline), 0, 0,
                                inner_step(inp, c.models, lc), True, c.clock, continual_model_id=model_id)
    _answers(c, model_id, sp.scored, sp.scored_qids, po)
    if not lc.keep_adapters and po.peft_dir and po.peft_dir.exists():
        record.drop_adapter(c.db, po)
