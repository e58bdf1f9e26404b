"""The units of work a run hands to an executor, and the in-process executor.

A run's passages need two kinds of work from live models: a passage's *baseline* (its questions answered
without and with the passage, SEAL sec. 4.2) and *inner steps* (:func:`sealq.engine.step.inner_step`).
:mod:`sealq.engine.passage` submits them as :class:`BaselineJob` and :class:`StepJob` to an executor and
records the results in a fixed order; the executor decides where the work runs:

* :class:`LocalExecutor` runs each job in this process, one at a time (the default);
* :class:`sealq.engine.workers.RayPool` runs them on Ray actors, several at once (``--workers N``).

Both also train the ReST-EM policy adapter (:meth:`LocalExecutor.train_adapter`) and make a trained
policy part of the model (:meth:`LocalExecutor.add_policy`). An executor never touches ``runs.db``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sealq.engine import answer as qa
from sealq.engine.config import Directive, LoopConfig, TrainConfig
from sealq.engine.dataset import Passage
from sealq.engine.step import (
    Models,
    StepInput,
    StepResult,
    Timer,
    TrainedAdapter,
    inner_step,
    merge_into_training_model,
    train_and_convert,
)

__all__ = ["BaselineJob", "BaselineResult", "StepJob", "Job", "run_job", "Executor", "LocalExecutor"]


@dataclass(frozen=True)
class BaselineJob:
    """Answer ``passage``'s questions with the round's model and no knowledge adapter, without the passage
    in the prompt (baseline) and with it (ceiling), greedily, ``max_tokens`` per answer."""

    passage: Passage
    max_tokens: int


@dataclass(frozen=True)
class BaselineResult:
    """The graded answers of a :class:`BaselineJob` (question order) and its timings."""

    base: list[qa.Answer]
    ceiling: list[qa.Answer]
    timings: list[dict[str, Any]]


@dataclass(frozen=True)
class StepJob:
    """One inner step (:func:`sealq.engine.step.inner_step`); ``inp.out_dir`` is where the driver wants
    the adapter (a worker trains into its own folder and the driver writes the files there)."""

    inp: StepInput


Job = BaselineJob | StepJob


def run_job(job: Job, models: Models, config: LoopConfig) -> BaselineResult | StepResult:
    """Run one job on ``models`` (whatever policy adapters are attached stay attached).

    Raises:
        SealqError: as :func:`sealq.engine.step.inner_step`.
    """
    if isinstance(job, StepJob):
        return inner_step(job.inp, models, config)
    runner, timer = models.runner, Timer()
    runner.set_adapters(None)
    with timer("baseline"):
        base = qa.answer_passage(runner, job.passage, with_context=False, max_tokens=job.max_tokens)
    with timer("ceiling"):
        ceiling = qa.answer_passage(runner, job.passage, with_context=True, max_tokens=job.max_tokens)
    return BaselineResult(base, ceiling, timer.rows)


class Executor(Protocol):
    """Where a run's baselines and inner steps run: in this process (:class:`LocalExecutor`) or on Ray
    actors (:class:`~sealq.engine.workers.RayPool`); a structural protocol, neither names it.

    The driver (:func:`sealq.engine.passage.run_passages`) submits jobs while :meth:`free` allows and takes
    results back with :meth:`next_done`, in whatever order they finish; it records them, the executor never
    touches ``runs.db``. Results are the same whichever executor ran them (same seeds).
    """

    @property
    def capacity(self) -> int:
        """Jobs it runs at once."""
        ...

    @property
    def models(self) -> Models:
        """The driver's models: its runner tokenizes (ReST-EM policy data); ``trainer`` is None when the
        training happens elsewhere (Ray workers)."""
        ...

    def free(self) -> int:
        """How many more jobs may be submitted now (0 or less: none until a result is taken)."""
        ...

    def submit(self, job: Job) -> int:
        """Queue one job; returns its ticket (1, 2, ... in submission order)."""
        ...

    def next_done(self) -> tuple[int, BaselineResult | StepResult]:
        """Wait for a submitted job to finish; returns (its ticket, its result). A step's adapter files are
        in the job's ``inp.out_dir`` by then.

        Raises:
            SealqError: the job failed (as :func:`run_job`), or workers keep dying.
        """
        ...

    def train_adapter(self, sequences: Sequence[list[int]], directive: Directive, config: TrainConfig, folder: Path,
                      name: str, seed: int, timer: Timer, train_stage: str, convert_stage: str) -> TrainedAdapter:
        """Train a LoRA on ``sequences`` (token ids; a :class:`~sealq.engine.train.PromptCompletion` has loss
        on its completion only) and convert it to GGUF, into ``folder/name`` and ``folder/name.gguf``
        (:func:`sealq.engine.step.train_and_convert`); the seconds go to ``timer`` as ``train_stage`` and
        ``convert_stage``.

        Raises:
            SealqError: the adapter cannot be trained, converted or written.
        """
        ...

    def add_policy(self, peft_dir: str, gguf_path: str) -> None:
        """Make a trained policy adapter part of every model it runs jobs on: merged into the training
        weights and attached in llama.cpp on top of the policies added before (ReST-EM)."""
        ...

    def close(self) -> None:
        """Release what it started (Ray workers, a local cluster); the driver's models stay the caller's."""
        ...


class LocalExecutor:
    """Runs jobs in this process on ``models``, one at a time, each when the driver asks for the next
    result: the order of work is exactly the order of submission.

    :class:`Executor` (shared with :class:`sealq.engine.workers.RayPool`): :meth:`free` says how many jobs may be
    submitted now, :meth:`submit` queues one and returns its ticket, :meth:`next_done` returns a finished
    ``(ticket, result)``.
    """

    #: jobs this executor runs at once
    capacity = 1

    def __init__(self, models: Models, config: LoopConfig):
        self.models, self.config = models, config
        self._queue: deque[tuple[int, Job]] = deque()
        self._tickets = 0
        self._policies: list[str] = []

    def free(self) -> int:
        return 0 if self._queue else 1

    def submit(self, job: Job) -> int:
        self._tickets += 1
        self._queue.append((self._tickets, job))
        return self._tickets

    def next_done(self) -> tuple[int, BaselineResult | StepResult]:
        ticket, job = self._queue.popleft()
        return ticket, run_job(job, self.models, self.config)

    def train_adapter(self, sequences: Sequence[list[int]], directive: Directive, config: TrainConfig, folder: Path, name: str,
                      seed: int, timer: Timer, train_stage: str, convert_stage: str) -> TrainedAdapter:
        """Train and convert an adapter into ``folder/name`` (:func:`sealq.engine.step.train_and_convert`)."""
        return train_and_convert(self.models, sequences, directive, config, folder, name, seed, timer,
                                 train_stage, convert_stage)

    def add_policy(self, peft_dir: str, gguf_path: str) -> None:
        """Make a trained policy adapter part of the model: merged into the training weights, attached in
        llama.cpp on top of the policies added before (ReST-EM, :mod:`sealq.engine.restem`)."""
        assert self.models.trainer is not None  # a local executor's models always have it (it trains)
        merge_into_training_model(self.models.trainer, peft_dir)
        self._policies.append(gguf_path)
        self.models.runner.set_policy([(g, 1.0) for g in self._policies], validate=False)

    def close(self) -> None:
        """Nothing to release: the models belong to the caller."""
