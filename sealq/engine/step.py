"""The inner step of SEAL (Zweiger et al. 2025, sec. 3.1, Algorithm 1, inner loop) for one passage and
one training source: write a self-edit (or take a given text) and its directive, train a LoRA adapter
on it, convert it to a GGUF adapter, hot-load it into llama.cpp, answer the passage's questions without
the passage, and score the answers against the baseline.

:func:`inner_step` touches no database: it returns a :class:`StepResult` (texts, items, directive,
adapter files, answers, scores, timings) that :mod:`sealq.engine.record` writes in one transaction. It
is the unit the loop runs per self-edit, the ReST-EM rounds run per round, and that a worker or a
continual-learning run can call on its own.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sealq.engine import answer as qa
from sealq.engine.config import Directive, LoopConfig, TrainConfig
from sealq.engine.dataset import Passage
from sealq.engine.directive import DIRECTIVE_GRAMMAR, parse_directive
from sealq.engine.selfedit import directive_messages, edit_messages, split_items, training_texts
from sealq.engine.train import TrainResult, train_lora
from sealq.faults import kill_point
from sealq.metrics import Score
from sealq.store import utc_now
from sealq.vocab import EditStatus, Source

if TYPE_CHECKING:
    from sealq.engine.protocols import Runner, TrainingModel
    from sealq.models.registry import ResolvedModel

__all__ = ["Models", "StepInput", "StepResult", "SelfEdit", "TrainedAdapter", "Timer", "inner_step", "train_and_convert", "load_models",
           "load_trainer", "merge_into_training_model",
           "DIRECTIVE_TOKENS", "SEED_SLOTS", "step_seed"]

#: token budget of a model-written directive (``epochs=.. lr=.. rank=..``)
DIRECTIVE_TOKENS = 24

#: The seed slot of the trained conditions that are not sampled self-edits: beyond any sample index, so
#: their seeds never equal a sampled self-edit's of the same passage (see :func:`step_seed`).
SEED_SLOTS = {Source.PASSAGE_ONLY: 900, Source.TEACHER: 901}


def step_seed(base_seed: int, seed_idx: int, passage_idx: int, slot: int) -> int:
    """The seed of one inner step (self-edit sampling and LoRA initialization): distinct per repeat
    (``seed_idx``), passage and slot (a self-edit's sample index, or :data:`SEED_SLOTS`)."""
    return (base_seed + seed_idx) * 1_000_003 + passage_idx * 1009 + slot


@dataclass(frozen=True)
class Models:
    """The live models an inner step uses.

    Args:
        runner: the llama.cpp model (:class:`sealq.models.llama.LlamaRunner`): writes self-edits,
            answers questions, hot-loads adapters.
        trainer: the dequantized transformers model LoRAs are trained on (torch, CPU, frozen); None in the
            driver of a run whose workers train (:class:`sealq.engine.workers.RayPool`).
        base_gguf: the base GGUF file, the converter's reference for tensor names and shapes.
    """

    runner: Runner
    trainer: TrainingModel | None
    base_gguf: Path


@dataclass
class Timer:
    """Per-stage wall-clock timings (``{"stage", "seconds", "started_utc"}`` rows, the ``timings`` table)."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        started, t0 = utc_now(), time.perf_counter()
        try:
            yield
        finally:
            self.rows.append({"stage": stage, "seconds": time.perf_counter() - t0, "started_utc": started})


def load_trainer(config: LoopConfig, model: ResolvedModel, timer: Timer | None = None) -> TrainingModel:
    """The training model of ``model`` (a :class:`~sealq.models.registry.ResolvedModel`): its GGUF
    dequantized into a transformers model (cached on disk), torch threads set from ``config.train``."""
    from sealq.models.hf import default_cache_root, load_training_model, set_torch_threads

    set_torch_threads(config.train.threads)
    with (timer or Timer())("load_training_model"):
        trainer, _hit = load_training_model(model, default_cache_root())
    return trainer


def load_models(config: LoopConfig) -> Models:
    """Load ``config.model`` into llama.cpp and as a training model: what :func:`inner_step` needs.

    Raises:
        SealqError: unknown or unreadable model (:func:`sealq.models.registry.resolve_model`).
    """
    from sealq.models.llama import LlamaRunner
    from sealq.models.registry import resolve_model

    model = resolve_model(config.model)
    runner = LlamaRunner(model, n_ctx=config.eval.n_ctx, threads=config.eval.threads, seed=config.seed)
    return Models(runner, load_trainer(config, model), model.path)


@dataclass(frozen=True)
class StepInput:
    """What one inner step works on.

    Args:
        passage: the passage (its title and text are trained on, its questions answered).
        source: what the adapter is trained on: a sampled self-edit, the passage alone, or a given
            teacher text.
        seed: seeds self-edit sampling and LoRA initialization (:func:`step_seed`).
        baseline: the passage's mean no-context score; rewards are gains over it.
        out_dir: the folder the adapter (PEFT folder ``name`` and ``name.gguf``) is written to.
        name: the adapter's file stem.
        edit_type: the self-edit prompt (:data:`sealq.engine.config.EDIT_TYPES`; ``source`` self-edit).
        text: a given self-edit text (``source`` teacher), split into items as implications.
        prompt: recorded as the prompt of a given text (the teacher file).
    """

    passage: Passage
    source: Source
    seed: int
    baseline: Score
    out_dir: Path
    name: str
    edit_type: str = ""
    text: str = ""
    prompt: str = ""


@dataclass(frozen=True)
class TrainedAdapter:
    """A trained and converted adapter: the PEFT folder, the GGUF file, the directive it was trained with,
    the training result, the conversion's seconds and the number of training sequences."""

    peft_dir: Path
    gguf_path: Path
    directive: Directive
    train: TrainResult
    convert_seconds: float
    n_sequences: int


@dataclass(frozen=True)
class SelfEdit:
    """The training text of one step and its settings.

    Args:
        edit_type, prompt, text: the self-edit (``passage-only`` / ``teacher`` for those sources).
        items: the training items taken from the text (lines, Q-A pairs, paragraphs).
        gen_tokens: tokens the model generated for the self-edit (0 for a given text).
        directive: the training settings used; ``directive_raw`` the model's text (None when none was
            asked for) and ``fallbacks`` which fields fell back to the default and why.
    """

    edit_type: str
    prompt: str
    text: str
    items: list[str]
    gen_tokens: int
    directive: Directive
    directive_raw: str | None
    fallbacks: dict[str, str]


@dataclass(frozen=True)
class StepResult:
    """Everything one inner step produced (nothing is recorded yet).

    Args:
        source: what the adapter was trained on.
        edit: the self-edit (text, items, directive).
        status: ``ok`` or ``skipped`` (no usable item: nothing trained, the model unchanged).
        adapter: the trained adapter's files (None when skipped).
        answers: the adapted model's graded answers, no passage in the prompt (empty when skipped).
        accuracy: their mean score (the baseline when skipped); ``reward`` = accuracy - baseline.
        timings: ``{"stage", "seconds", "started_utc"}`` per stage.
    """

    source: Source
    edit: SelfEdit
    status: EditStatus
    adapter: TrainedAdapter | None
    answers: list[qa.Answer]
    accuracy: Score
    reward: Score
    timings: list[dict[str, Any]]

    @property
    def skip_reason(self) -> str | None:
        return "no usable items" if self.status == EditStatus.SKIPPED else None


def inner_step(inp: StepInput, models: Models, config: LoopConfig) -> StepResult:
    """Run one inner step (module docstring): self-edit, directive, LoRA, GGUF, hot-load, answers, reward.

    Args:
        inp: the passage, source, seed, baseline and where the adapter goes.
        models: the llama.cpp runner (any ReST-EM policy stays attached), the training model, the base.
        config: ``selfedit`` (sampling), ``train`` (LoRA training, default directive and bounds) and
            ``eval`` (answer budget) settings.

    Returns:
        A :class:`StepResult`; a self-edit with no usable item is ``skipped`` (reward 0), not an error.

    Raises:
        SealqError: the adapter cannot be written or converted (a full disk, a bad base).
    """
    timer = Timer()
    w = _write(inp, models.runner, config, timer)
    if not w.items and inp.source != Source.PASSAGE_ONLY:  # bad model output is data: recorded, reward 0
        return StepResult(inp.source, edit=w, status=EditStatus.SKIPPED, adapter=None, answers=[],
                          accuracy=inp.baseline, reward=Score(0.0, 0.0, 0.0), timings=timer.rows)
    with timer("tokenize"):
        texts = training_texts(inp.passage, w.items, config.selfedit.trains_on_passage)
        seqs = [models.runner.tokenize(t) for t in texts]
    adapter = train_and_convert(models, seqs, w.directive, config.train, inp.out_dir, inp.name, inp.seed, timer)
    with timer("evaluate"):
        with models.runner.adapter(adapter.gguf_path, validate=False):  # the converter checked it against the base
            answers = qa.answer_passage(models.runner, inp.passage, with_context=False,
                                        max_tokens=config.eval.max_tokens)
    accuracy = Score.mean(a.score for a in answers)
    return StepResult(inp.source, edit=w, status=EditStatus.OK, adapter=adapter, answers=answers,
                      accuracy=accuracy, reward=accuracy.minus(inp.baseline), timings=timer.rows)


def _write(inp: StepInput, runner: Runner, config: LoopConfig, timer: Timer) -> SelfEdit:
    """The training text of a step: a model-written self-edit and directive, the passage alone (no items),
    or a given teacher text; the last two train with the default directive."""
    sc, tc = config.selfedit, config.train
    fixed = {"all": "fixed settings (not a model self-edit)"}
    if inp.source == Source.PASSAGE_ONLY:
        return SelfEdit("passage-only", "", "", [], 0, tc.default, None, fixed)
    if inp.source == Source.TEACHER:
        return SelfEdit("teacher", inp.prompt, inp.text, split_items(inp.text, "implications", sc.max_items), 0,
                        tc.default, None, fixed)
    messages = edit_messages(inp.passage, inp.edit_type)
    with timer("generate_self_edit"):
        gen = runner.chat(messages, max_tokens=sc.max_tokens, temperature=sc.temperature, top_p=sc.top_p, seed=inp.seed)
    kill_point("generate")
    items = split_items(gen.text, inp.edit_type, sc.max_items, inp.passage.context, sc.min_grounding)
    raw = None
    if sc.directives == "model" and items:
        with timer("generate_directive"):
            raw = runner.chat(directive_messages(inp.passage, inp.edit_type, gen.text), max_tokens=DIRECTIVE_TOKENS,
                              temperature=sc.temperature, top_p=sc.top_p, seed=inp.seed, grammar=DIRECTIVE_GRAMMAR).text
    parsed = parse_directive(raw, tc.default, tc.bounds)
    fallbacks = parsed.fallbacks if sc.directives == "model" else {"all": "--directives off"}
    return SelfEdit(inp.edit_type, messages[0]["content"], gen.text, items, gen.tokens, parsed.directive, raw, fallbacks)


def train_and_convert(models: Models, sequences: Sequence[list[int]], directive: Directive, config: TrainConfig, folder: Path,
                      name: str, seed: int, timer: Timer, train_stage: str = "train",
                      convert_stage: str = "convert") -> TrainedAdapter:
    """Train a LoRA on ``sequences`` and convert it to a GGUF adapter, crash-safely: the PEFT folder is
    written under a temporary name, fsynced and renamed to ``folder/name``; the GGUF (``folder/name.gguf``)
    is written to a temporary file and renamed by the converter. A process killed at any point leaves
    complete files or temporary ones (which ``--resume`` deletes), never a half-written adapter under its
    final name.

    Args:
        models: the training model and the base GGUF.
        sequences: token id lists (:func:`sealq.engine.train.train_lora`).
        directive: epochs, learning rate, rank.
        config: batch budget, targets, warm-up.
        folder, name: where the adapter goes.
        seed: LoRA initialization and batch order.
        timer: gets the ``train_stage`` and ``convert_stage`` timings.

    Raises:
        SealqError: the adapter cannot be converted or written.
    """
    from sealq.convert import convert_peft_to_gguf

    peft_dir, tmp_dir = folder / name, folder / f".tmp-{name}"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    assert models.trainer is not None  # only a Ray driver's models have none, and a driver trains nothing
    with timer(train_stage):
        result = train_lora(models.trainer, sequences, directive, config, tmp_dir, seed=seed)
    kill_point("train")
    _fsync_tree(tmp_dir)
    shutil.rmtree(peft_dir, ignore_errors=True)
    os.replace(tmp_dir, peft_dir)
    gguf_path = folder / f"{name}.gguf"
    with timer(convert_stage):
        conv = convert_peft_to_gguf(peft_dir, gguf_path, models.base_gguf)
    kill_point("convert")
    return TrainedAdapter(peft_dir, gguf_path, directive, result, conv.seconds, len(sequences))


def merge_into_training_model(hf_model: TrainingModel, peft_dir: str) -> None:
    """Add a LoRA's update to the training model's weights in place (W <- W + scale * B A)."""
    import warnings

    from peft import PeftModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        wrapped = PeftModel.from_pretrained(hf_model, peft_dir)
        wrapped.merge_and_unload()
    if hasattr(hf_model, "peft_config"):
        del hf_model.peft_config


def _fsync_tree(folder: Path) -> None:
    for f in folder.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
