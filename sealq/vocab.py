"""One vocabulary for every module: the names stored in ``runs.db`` and shown by the views, defined once.

Every name is a ``str`` enum whose value is what ``runs.db`` stores, so a member can be written to SQLite,
JSON or a format string as it is (``f"{Source.SELF_EDIT}"`` is ``"self_edit"``).

* :class:`Source`: what an adapter was trained on (``self_edits.source``). SEAL sec. 3.2 (a sampled
  self-edit), sec. 4.2 Table 2 (the passage alone; passage + a teacher-written self-edit).
* :class:`Condition`: how a question was answered (``answers.condition``): the base model without or with
  the passage in the prompt, or adapted by one adapter (the adapter's :class:`Source`).
* :class:`Row`: the rows of every results table: the answer conditions, with sampled self-edits
  aggregated as their mean and their best-of-K pick.
* :class:`Split`, :class:`EditStatus`, :class:`RunStatus`, :class:`PolicyStatus`.
* Continual self-edits (``sealq continual``): :class:`QuestionRole` (``questions.role``), :class:`GateKind`,
  :class:`UpdateStatus` (``continual_decisions.status``).
* Learning a document (``sealq learn``): :class:`ProbeReason` (``probes.reason``).
"""

from __future__ import annotations

from enum import Enum

__all__ = ["Name", "Source", "Condition", "Row", "Split", "EditStatus", "RunStatus", "PolicyStatus", "ROW_LABELS",
           "CORE_ROWS", "LINEAR_TARGETS", "RESUMABLE", "QuestionRole", "ProbeReason", "GateKind", "UpdateStatus", "Command"]


class Name(str, Enum):
    """A stored name: compares, hashes, formats and serializes as its value."""

    __str__ = str.__str__
    __format__ = str.__format__  # type: ignore[assignment]  # typeshed: str's takes a str self, Enum's an Enum (a Name is both)

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(m.value for m in cls)


class Source(Name):
    """What an adapter's training data came from (``self_edits.source``)."""

    SELF_EDIT = "self_edit"  # sampled from the model (SEAL's self-edit)
    PASSAGE_ONLY = "passage_only"  # the passage alone (SEAL's "train on passage")
    TEACHER = "teacher"  # passage + a teacher-written self-edit read from a file


class Condition(Name):
    """How a question was answered (``answers.condition``); adapted answers carry their adapter's source."""

    NO_CONTEXT = "no_context"  # base model, no passage in the prompt (the baseline)
    WITH_CONTEXT = "with_context"  # base model, passage in the prompt (the ceiling)
    SELF_EDIT = Source.SELF_EDIT.value
    PASSAGE_ONLY = Source.PASSAGE_ONLY.value
    TEACHER = Source.TEACHER.value


class Row(Name):
    """The rows of a results table (``sealq loop``'s summary, ``sealq eval``, the report, ReST-EM rounds)."""

    NO_CONTEXT = Condition.NO_CONTEXT.value
    WITH_CONTEXT = Condition.WITH_CONTEXT.value
    PASSAGE_ONLY = Condition.PASSAGE_ONLY.value
    MEAN_SELF_EDIT = "mean_self_edit"  # every sampled self-edit, averaged per question
    BEST_OF_K = "best_of_k"  # per passage (and seed), the self-edit with the highest reward (an oracle pick)
    TEACHER = Condition.TEACHER.value


#: Table labels, in table order.
ROW_LABELS = {
    Row.NO_CONTEXT: "baseline (no passage)",
    Row.WITH_CONTEXT: "ceiling (passage in prompt)",
    Row.PASSAGE_ONLY: "LoRA on the passage only",
    Row.MEAN_SELF_EDIT: "mean self-edit",
    Row.BEST_OF_K: "best-of-K (oracle pick)",
    Row.TEACHER: "teacher self-edit",
}

#: Rows every run has; passage-only and teacher rows exist only in runs that trained them.
CORE_ROWS = (Row.NO_CONTEXT, Row.WITH_CONTEXT, Row.MEAN_SELF_EDIT, Row.BEST_OF_K)


class Split(Name):
    """Which side of a run a passage is on (``passages.split``)."""

    ALL = "all"  # no ReST-EM rounds
    TRAIN = "train"  # ReST-EM: its best self-edits train the policy
    HOLDOUT = "holdout"  # ReST-EM: only evaluated
    CONTINUAL = "continual"  # `sealq continual`: passage ``idx`` of sequence ``round``


class EditStatus(Name):
    """``self_edits.status``."""

    OK = "ok"  # trained, converted, answered
    SKIPPED = "skipped"  # no usable training item: nothing trained, reward 0 (the model is unchanged)


class Command(Name):
    """``runs.command``: what made a run."""

    LOOP = "loop"  # sealq loop
    EVAL = "eval"  # sealq eval
    RESTEM = "restem"  # sealq loop --rounds R
    CONTINUAL = "continual"  # sealq continual (its own tables; resumed by `sealq continual --resume`)
    LEARN = "learn"  # sealq learn: a document learned as one continual sequence, its probes as the reward


class RunStatus(Name):
    """``runs.status``; ``DEAD`` is derived (recorded as running, but no process holds the run's lock)."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    DEAD = "dead"


#: Statuses a run can be continued from with ``sealq loop --resume``.
RESUMABLE = (RunStatus.FAILED, RunStatus.INTERRUPTED, RunStatus.DEAD)


class PolicyStatus(Name):
    """``policies.status`` (ReST-EM generator updates)."""

    TRAINED = "trained"
    NO_DATA = "no_data"  # no self-edit with a positive reward fit: the model is unchanged


#: The linear modules that get a LoRA (llama names; every knowledge and policy adapter).
LINEAR_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class QuestionRole(Name):
    """``questions.role`` in a continual run: each passage's questions are split (seeded) in two, so the
    gate never sees a question the forgetting matrix scores."""

    GATE = "gate"  # seen by best-of-K and the gates
    SCORED = "scored"  # only ever scored for the forgetting matrix


class GateKind(Name):
    """How a continual run decides whether an update is accepted (``--gate``)."""

    NONE = "none"  # accept every update (SEAL's continual experiment)
    RETENTION = "retention"  # reject when mean gate accuracy on earlier passages drops by more than D
    KL = "kl"  # reject when KL(current || updated) on a fixed probe text exceeds X nats/token (as STABLE)


class UpdateStatus(Name):
    """``continual_decisions.status``: what a gate did with a step's best self-edit."""

    ACCEPTED = "accepted"  # the update is part of the model from now on
    REJECTED = "rejected"  # the gate refused it: the model is unchanged
    NO_UPDATE = "no_update"  # no self-edit had a usable item: nothing to accept


class ProbeReason(Name):
    """Why a probe candidate was kept or dropped (``probes.reason``; :mod:`sealq.engine.probes`)."""

    KEPT = "kept"  # a question with an answer grounded in the passage
    NO_QUESTION = "no_question"  # not one question about its sentence (no "?", too short or long, a loop, no shared word)
    DUPLICATE = "duplicate"  # the same question as an earlier probe of the passage
    UNGROUNDED = "ungrounded"  # the in-context answer says nothing the passage says and the question does not
