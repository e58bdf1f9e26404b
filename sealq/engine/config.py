"""Settings of each stage of the loop, one dataclass each (stored with the run as JSON).

Bad values are rejected in ``__post_init__`` with :class:`sealq.errors.SealqError` (a ``ValueError``
would be a bug; a bad option is the user's error and gets a one-line message).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from sealq.cores import bf16_supported, training_threads
from sealq.errors import SealqError
from sealq.vocab import LINEAR_TARGETS, GateKind

__all__ = ["EDIT_TYPES", "DEFAULT_EDIT_TYPES", "PAPER_EDIT_TYPES", "PAPER_TEMPERATURE", "PRECISIONS", "resolve_precision", "Directive", "DirectiveBounds", "SelfEditConfig", "TrainConfig", "EvalConfig", "PolicyConfig",
           "LoopConfig", "ScaleConfig", "Gate", "ContinualConfig", "LearnConfig"]

#: Training precisions; ``auto`` resolves to ``bf16`` where the CPU has native bfloat16, else ``fp32``.
PRECISIONS = ("auto", "fp32", "bf16")


def resolve_precision(precision: str) -> str:
    """``auto`` -> ``bf16`` on a CPU with native bfloat16 (:func:`sealq.cores.bf16_supported`), else ``fp32``;
    any other value is returned as it is (checked by :class:`TrainConfig`)."""
    if precision == "auto":
        return "bf16" if bf16_supported() else "fp32"
    return precision


#: Self-edit types: the keys of :data:`sealq.engine.selfedit.PROMPTS`. SEAL sec. 3.2 uses "implications"; the
#: long and very-long lists, rewrite and self-QA are the prompts of the paper's appendix (Table 6).
EDIT_TYPES = ("implications", "implications-long", "implications-very-long", "rewrite", "self-qa")

#: The default self-edit prompt of ``sealq loop`` and ``sealq eval`` (with :attr:`SelfEditConfig.temperature`'s
#: default), chosen on the dev sweep of the self-edit recipe (docs/notes/2026-12-02-what-self-edit-recipe-teaches-best.md): close rewrites of the passage taught the 135M
#: model more than its implications or self-QA, which invent facts when sampled warm.
DEFAULT_EDIT_TYPES = ("rewrite",)

#: SEAL's own prompt and temperature (sec. 3.2): the defaults of ``sealq continual`` and ``sealq learn``, whose
#: documented results were measured with them (the dev sweep covered single-passage knowledge incorporation only).
PAPER_EDIT_TYPES = ("implications",)
PAPER_TEMPERATURE = 0.8

#: What a self-edit's LoRA trains on (``--train-on``): SEAL's "items+passage" (sec. 3.2: each item and the
#: passage, each prefixed with the title) or the items alone. A passage-only row trains on the passage either way.
TRAIN_ON = ("items+passage", "items")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise SealqError(message)


@dataclass(frozen=True)
class Directive:
    """The training settings a self-edit asks for (SEAL sec. 3.1: the self-edit's optimization directive).

    Args:
        epochs: passes over the self-edit's training sequences.
        lr: peak learning rate of AdamW (linear warm-up then linear decay).
        rank: LoRA rank r; alpha is always 2r, so the adapter scale alpha/r stays 2.
    """

    epochs: int = 8
    lr: float = 2e-3
    rank: int = 16


@dataclass(frozen=True)
class DirectiveBounds:
    """Hard bounds on a model-written directive; a value outside them falls back to the default."""

    epochs: tuple[int, int] = (1, 10)
    lr: tuple[float, float] = (1e-5, 3e-3)
    ranks: tuple[int, ...] = (4, 8, 16, 32)


@dataclass(frozen=True)
class SelfEditConfig:
    """How self-edits are sampled (SEAL sec. 3.2, "Self-edit generation").

    Args:
        k: self-edits sampled per passage (best-of-K).
        edit_types: which prompts to use; the K samples cycle through them in order.
        temperature: sampling temperature of the self-edit text.
        top_p: nucleus sampling threshold.
        max_tokens: token budget of one self-edit.
        max_items: training items kept from one self-edit (lines / Q-A pairs / rewrite paragraphs).
        directives: "model" lets the model write each directive; "off" uses the default for all.
        min_grounding: drop a model-written item when less than this share of its words occur in the
            passage (:func:`sealq.engine.selfedit.grounding`); 0 keeps every item. Teacher texts are
            not filtered.
        train_on: one of :data:`TRAIN_ON`: train a self-edit's (and a teacher text's) LoRA on its items and
            the passage (SEAL), or on its items alone.
    """

    k: int = 3
    edit_types: tuple[str, ...] = DEFAULT_EDIT_TYPES
    temperature: float = 0.3
    top_p: float = 0.95
    max_tokens: int = 256
    max_items: int = 12
    directives: str = "model"
    min_grounding: float = 0.0
    train_on: str = TRAIN_ON[0]

    @property
    def trains_on_passage(self) -> bool:
        """Whether a self-edit's LoRA also trains on title + passage (SEAL's ``items+passage``)."""
        return self.train_on == TRAIN_ON[0]

    def __post_init__(self):
        object.__setattr__(self, "edit_types", tuple(self.edit_types))  # a list from JSON or click
        _check(self.k >= 0, f"--k must be at least 1, got {self.k}")
        _check(len(self.edit_types) > 0, "--edit-type: at least one edit type is needed")
        for t in self.edit_types:
            _check(t in EDIT_TYPES, f"--edit-type: unknown edit type {t!r} (choose from {', '.join(EDIT_TYPES)})")
        _check(0 <= self.temperature <= 5, f"--temperature must be in [0, 5], got {self.temperature}")
        _check(0 < self.top_p <= 1, f"--top-p must be in (0, 1], got {self.top_p}")
        _check(self.max_tokens >= 16, f"self-edit max_tokens must be >= 16, got {self.max_tokens}")
        _check(0 <= self.min_grounding <= 1, f"--min-grounding must be in [0, 1], got {self.min_grounding}")
        _check(self.train_on in TRAIN_ON, f"--train-on must be one of {', '.join(TRAIN_ON)}, got {self.train_on!r}")
        _check(self.directives in ("model", "off"), f"--directives must be 'model' or 'off', got {self.directives!r}")


@dataclass(frozen=True)
class TrainConfig:
    """LoRA training of one knowledge adapter (SEAL sec. 3.1, the inner loop's update).

    Args:
        default: the directive used when the model's is missing, unparseable or out of bounds.
        bounds: hard bounds on model-written directives.
        batch_tokens: padded tokens per optimizer step; short sequences of similar length share a step.
        targets: linear modules that get a LoRA (llama names).
        max_seq_tokens: longest training sequence in tokens; longer ones are cut.
        warmup_fraction: share of steps with linear warm-up.
        threads: torch intra-op threads of every training; 0 until the run starts, when it is resolved
            once and stored (:meth:`LoopConfig.with_threads`: ``--threads N`` or ``SEALQ_THREADS``, else the
            cores other processes leave free then).
        lower_when_busy: a training may use fewer than ``threads`` when other processes hold cores at its
            start (:func:`sealq.cores.training_threads`; each adapter row records the count it used). Set
            for an automatic count; a count the user gave is used exactly, so runs are reproducible.
        precision: ``fp32``, or ``bf16``: the frozen base's matmuls in bfloat16
            (:func:`sealq.engine.train.frozen_linears_in_bf16`; LoRA weights, gradients, optimizer state,
            norms, attention and the loss stay fp32); only on a CPU with native bf16
            (:func:`sealq.cores.bf16_supported`). ``--precision auto`` picks it where the CPU has it.
    """

    default: Directive = field(default_factory=Directive)
    bounds: DirectiveBounds = field(default_factory=DirectiveBounds)
    batch_tokens: int = 192
    targets: tuple[str, ...] = LINEAR_TARGETS
    max_seq_tokens: int = 512
    warmup_fraction: float = 0.1
    threads: int = 0
    precision: str = "fp32"
    lower_when_busy: bool = False

    def __post_init__(self):
        d, b = self.default, self.bounds
        _check(self.threads >= 0, f"--threads must be at least 1, got {self.threads}")
        _check(b.epochs[0] <= d.epochs <= b.epochs[1], f"--epochs must be in {b.epochs[0]}-{b.epochs[1]}, got {d.epochs}")
        _check(b.lr[0] <= d.lr <= b.lr[1], f"--lr must be in {b.lr[0]:g}-{b.lr[1]:g}, got {d.lr:g}")
        _check(d.rank in b.ranks, f"--rank must be one of {', '.join(map(str, b.ranks))}, got {d.rank}")
        _check(self.batch_tokens >= 16, f"batch_tokens must be >= 16, got {self.batch_tokens}")
        _check(self.max_seq_tokens >= 16, f"max_seq_tokens must be >= 16, got {self.max_seq_tokens}")
        _check(0 <= self.warmup_fraction < 1, f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        _check(self.precision in PRECISIONS[1:], f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        _check(self.precision != "bf16" or bf16_supported(),
               "--precision bf16: this CPU has no native bfloat16 (no avx512_bf16 or amx_bf16 flag); use fp32")


@dataclass(frozen=True)
class EvalConfig:
    """Question answering with llama.cpp (greedy).

    Args:
        max_tokens: answer length budget in tokens.
        n_ctx: llama.cpp context window in tokens.
        threads: llama.cpp threads; 0 until the run starts, then resolved with the training threads
            (:meth:`LoopConfig.with_threads`).
    """

    max_tokens: int = 24
    n_ctx: int = 2048
    threads: int = 0


@dataclass(frozen=True)
class PolicyConfig:
    """The ReST-EM generator update: SFT of a *policy* LoRA on (self-edit prompt -> kept self-edit) pairs
    (SEAL sec. 3.1 / appendix: 2 epochs, lr 3e-4, LoRA r 64, alpha 128 on Qwen2.5-7B; scaled here for a
    135M model and a few dozen pairs on a CPU).

    Args:
        epochs: passes over the pairs.
        lr: peak learning rate.
        rank: LoRA rank (alpha = 2r).
        max_seq_tokens: longest prompt + completion in tokens (longer ones are cut from the end).
    """

    epochs: int = 2
    lr: float = 1e-3
    rank: int = 16
    max_seq_tokens: int = 1024

    def __post_init__(self):
        _check(1 <= self.epochs <= 20, f"--policy-epochs must be in 1-20, got {self.epochs}")
        _check(1e-6 <= self.lr <= 1e-2, f"--policy-lr must be in 1e-06-0.01, got {self.lr:g}")
        _check(self.rank in (4, 8, 16, 32, 64), f"--policy-rank must be one of 4, 8, 16, 32, 64, got {self.rank}")

    def train_config(self, knowledge: TrainConfig) -> TrainConfig:
        """The LoRA training settings of the generator update (targets and threads as the knowledge LoRAs')."""
        return TrainConfig(default=Directive(self.epochs, self.lr, self.rank), max_seq_tokens=self.max_seq_tokens,
                           bounds=DirectiveBounds((1, 20), (1e-6, 1e-2), (4, 8, 16, 32, 64)),
                           targets=knowledge.targets, threads=knowledge.threads, precision=knowledge.precision,
                           lower_when_busy=knowledge.lower_when_busy)


@dataclass(frozen=True)
class LoopConfig:
    """Everything one ``sealq loop`` / ``sealq eval`` run depends on (stored as ``runs.config_json``).

    Args:
        model: known model name or path to a GGUF of a supported architecture (:mod:`sealq.models.arch`).
        data: dataset path (None: the bundled default set).
        passages: use only the first N passages (after the teacher filter).
        seed: base seed of self-edit sampling and LoRA initialization.
        keep_adapters: keep every adapter, not only each passage's best.
        seeds: repeats of every trained condition with seeds ``seed, seed+1, ...`` (``sealq eval --seeds``).
        passage_only: also train a LoRA on the passage alone (SEAL's "train on passage" row).
        teacher: a JSON file of teacher self-edits (``completions`` per passage); when set, only passages
            with completions are used and one more adapter per passage and seed is trained on
            passage + completion number ``seed index`` (SEAL's "passage + GPT-4.1 synthetic data" row).
        rounds: ReST-EM rounds (0: no outer loop). Each round samples self-edits on the training
            passages, keeps the best one per passage if its reward is positive, and fine-tunes a policy
            adapter on them; the held-out passages are evaluated before the first and after every round.
        holdout: a data file of held-out passages (titles also in the training data are dropped).
        holdout_fraction: else, hold out whole titles of ``data`` (seeded order) until about this share
            of its passages is held out.
        holdout_passages: use only the first N held-out passages.
        policy: the generator update's settings.
    """

    model: str = "smollm2-135m"
    data: str | None = None
    passages: int | None = None
    seed: int = 0
    keep_adapters: bool = False
    seeds: int = 1
    passage_only: bool = False
    teacher: str | None = None
    rounds: int = 0
    holdout: str | None = None
    holdout_fraction: float | None = None
    holdout_passages: int | None = None
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    selfedit: SelfEditConfig = field(default_factory=SelfEditConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self):
        _check(self.selfedit.k >= 1 or self.passage_only or bool(self.teacher),
               f"--k must be at least 1, got {self.selfedit.k} (0: only with passage-only or teacher steps)")
        _check(self.passages is None or self.passages >= 1, f"--passages must be at least 1, got {self.passages}")
        _check(self.seeds >= 1, f"--seeds must be at least 1, got {self.seeds}")
        _check(0 <= self.rounds <= 100, f"--rounds must be in 0-100, got {self.rounds}")
        _check(self.holdout_fraction is None or 0 < self.holdout_fraction < 1,
               f"--holdout-fraction must be in (0, 1), got {self.holdout_fraction}")
        _check(self.holdout_passages is None or self.holdout_passages >= 1,
               f"--holdout-passages must be at least 1, got {self.holdout_passages}")
        _check(not (self.holdout and self.holdout_fraction), "give --holdout or --holdout-fraction, not both")
        _check(self.rounds == 0 or bool(self.holdout or self.holdout_fraction),
               "--rounds needs held-out passages: --holdout FILE or --holdout-fraction F")
        _check(self.rounds == 0 or not (self.passage_only or self.teacher), "--rounds is a `sealq loop` option")
        restem_only = [opt for opt, given in (
            ("--holdout", self.holdout), ("--holdout-fraction", self.holdout_fraction),
            ("--holdout-passages", self.holdout_passages), ("--policy-epochs", self.policy.epochs != PolicyConfig.epochs),
            ("--policy-lr", self.policy.lr != PolicyConfig.lr), ("--policy-rank", self.policy.rank != PolicyConfig.rank))
            if given]
        _check(self.rounds > 0 or not restem_only,
               f"{', '.join(restem_only)}: only used by the ReST-EM outer loop; add --rounds R")

    def to_dict(self) -> dict:
        """The config as plain JSON-able data."""
        return asdict(self)

    def with_threads(self, n: int | None) -> LoopConfig:
        """The config with its thread counts decided (once per run start or resume, then stored): ``n``
        torch threads for every training and ``n`` llama.cpp threads, exactly; None: the cores other
        processes leave free now (:func:`sealq.cores.training_threads`), and a training may lower it if they
        become busy later (``lower_when_busy``)."""
        lower = n is None
        n = training_threads() if n is None else n
        return replace(self, train=replace(self.train, threads=n, lower_when_busy=lower),
                       eval=replace(self.eval, threads=n))

    def threads_decided(self, requested: int | None) -> LoopConfig:
        """The config a run executes with: ``requested`` threads if given (``--threads N`` or ``SEALQ_THREADS``,
        :func:`sealq.cores.requested_threads`); else the counts already set (stored with the run, or given in
        Python); else an automatic count (:meth:`with_threads`)."""
        if requested is not None:
            return self.with_threads(requested)
        if self.train.threads:
            return replace(self, eval=replace(self.eval, threads=self.eval.threads or self.train.threads))
        return self.with_threads(None)

    @classmethod
    def from_dict(cls, d: dict) -> LoopConfig:
        """Rebuild a config stored by :meth:`to_dict` (``sealq loop --resume``).

        Raises:
            SealqError: the stored config is not a sealq config (unknown or missing fields).
        """
        try:
            d = dict(d)
            se = SelfEditConfig(**d.pop("selfedit"))
            tr = dict(d.pop("train"))
            tr["default"] = Directive(**tr["default"])
            b = tr["bounds"]
            tr["bounds"] = DirectiveBounds(tuple(b["epochs"]), tuple(b["lr"]), tuple(b["ranks"]))
            tr["targets"] = tuple(tr["targets"])
            ev = EvalConfig(**d.pop("eval"))
            policy = PolicyConfig(**d.pop("policy", {}))
            return cls(**d, selfedit=se, train=TrainConfig(**tr), eval=ev, policy=policy)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise SealqError(f"stored run config is not readable by this sealq version ({e})") from None


@dataclass(frozen=True)
class ScaleConfig:
    """Where a run's inner steps execute (``--workers``): not stored with the run's settings, so a run can
    be resumed with or without workers. With the same threads per training the rows are the same whatever
    ``workers`` is (see docs/scale-out.md for what changes when thread counts differ).

    Args:
        workers: Ray actors running inner steps and baselines in parallel (0: in this process, Ray is
            not imported).
        threads_per_worker: torch, OpenMP and llama.cpp threads of each worker (0: the usable cores
            divided by ``workers``, at least 1).
        ray_address: join this running Ray cluster (``ray start --head`` printed it) instead of starting a
            local one on 127.0.0.1.
    """

    workers: int = 0
    threads_per_worker: int = 0
    ray_address: str | None = None

    def __post_init__(self):
        _check(0 <= self.workers <= 4096, f"--workers must be in 1-4096, got {self.workers}")
        _check(self.threads_per_worker >= 0, f"--threads-per-worker must be at least 1, got {self.threads_per_worker}")
        _check(self.workers > 0 or not (self.threads_per_worker or self.ray_address),
               "--threads-per-worker and --ray-address need --workers N")
        _check(self.ray_address is None or bool(self.ray_address.strip()), "--ray-address must not be empty")

    def threads(self, cores: int) -> int:
        """Threads per worker: as given, else ``cores // workers`` (at least 1)."""
        return self.threads_per_worker or max(1, cores // max(1, self.workers))


@dataclass(frozen=True)
class Gate:
    """A continual run's update gate (``--gate``): ``none``, ``retention:D`` or ``kl:X``.

    Args:
        kind: :class:`~sealq.vocab.GateKind`.
        threshold: retention: the largest accepted drop of mean contains accuracy on earlier passages'
            gate questions (0-1); kl: the largest accepted mean KL(current || updated) on the probe text,
            nats per token (> 0); none: 0.

    Source: SEAL (Zweiger et al. 2025) sec. 4.3 accepts every update; STABLE (2025) gates each merge on a
    measured drop (exact match on earlier data, KL).
    """

    kind: GateKind
    threshold: float = 0.0

    @property
    def spec(self) -> str:
        """The gate as written on the command line (``retention:0.05``); its name in ``runs.db``."""
        return str(self.kind) if self.kind == GateKind.NONE else f"{self.kind}:{self.threshold:g}"

    @classmethod
    def parse(cls, spec: str) -> Gate:
        """``none`` | ``retention:D`` (0 <= D <= 1) | ``kl:X`` (X > 0).

        Raises:
            SealqError: anything else, in one line naming the forms.
        """
        forms = "none, retention:D (0 <= D <= 1) or kl:X (X > 0)"
        kind, sep, value = str(spec).strip().partition(":")
        if kind == GateKind.NONE and not sep:
            return cls(GateKind.NONE)
        _check(kind in (GateKind.RETENTION, GateKind.KL) and bool(value), f"--gate {spec!r}: expected {forms}")
        try:
            x = float(value)
        except ValueError:
            raise SealqError(f"--gate {spec!r}: {value!r} is not a number; expected {forms}") from None
        ok = 0 <= x <= 1 if kind == GateKind.RETENTION else 0 < x < float("inf")
        _check(ok, f"--gate {spec!r}: threshold out of range; expected {forms}")
        return cls(GateKind(kind), x + 0.0)  # -0 is 0: one spelling per gate


@dataclass(frozen=True)
class ContinualConfig:
    """Everything one ``sealq continual`` run depends on (stored as ``runs.config_json``).

    SEAL sec. 4.3 (continual self-edits): per sequence of ``length`` passages, start from the base; at step
    t the current model writes K self-edits for passage t, each LoRA is trained on top of the current model,
    the best-of-K (on passage t's gate questions) goes to each gate, an accepted update becomes part of the
    model; after every step every passage seen so far is scored on its scored questions.

    Args:
        loop: model, data, seed, self-edit sampling (``k``, edit types, directives), training and answering
            settings, as for ``sealq loop``.
        sequences: independent sequences (drawn without overlap from the data's passages, seeded).
        length: passages per sequence.
        gates: gate specs compared side by side on the same sequences (:meth:`Gate.parse`).
        gate_fraction: share of each passage's questions the gates see (at least one each side).
    """

    loop: LoopConfig = field(default_factory=LoopConfig)
    sequences: int = 2
    length: int = 4
    gates: tuple[str, ...] = ("none",)
    gate_fraction: float = 0.5

    def __post_init__(self):
        object.__setattr__(self, "gates", tuple(Gate.parse(g).spec for g in self.gates))
        _check(self.sequences >= 1, f"--sequences must be at least 1, got {self.sequences}")
        _check(1 <= self.length <= 100, f"--length must be in 1-100, got {self.length}")
        _check(len(self.gates) >= 1, "--gate: at least one gate is needed")
        _check(len(set(self.gates)) == len(self.gates), f"--gate: a gate is given twice ({', '.join(self.gates)})")
        _check(0 < self.gate_fraction < 1, f"--gate-fraction must be in (0, 1), got {self.gate_fraction}")
        _check(self.loop.selfedit.k >= 1, f"--k must be at least 1, got {self.loop.selfedit.k}")
        lc = self.loop
        _check(not (lc.rounds or lc.passage_only or lc.teacher or lc.seeds != 1 or lc.passages),
               "a continual run takes no ReST-EM, eval or --passages settings")

    @property
    def gate_list(self) -> list[Gate]:
        return [Gate.parse(g) for g in self.gates]

    def to_dict(self) -> dict:
        return {"loop": self.loop.to_dict(), "sequences": self.sequences, "length": self.length,
                "gates": list(self.gates), "gate_fraction": self.gate_fraction}

    @classmethod
    def from_dict(cls, d: dict) -> ContinualConfig:
        """Rebuild a stored config (``sealq continual --resume``).

        Raises:
            SealqError: not a continual config of this sealq version.
        """
        try:
            d = dict(d)
            return cls(loop=LoopConfig.from_dict(d.pop("loop")), **d)
        except (KeyError, TypeError) as e:
            raise SealqError(f"stored run config is not a continual config readable by this sealq version ({e})") from None
        except SealqError as e:  # a stored value this version refuses: say it is the stored one, not an option
            raise SealqError(f"stored run config: {e}") from None


@dataclass(frozen=True)
class LearnConfig:
    """Everything one ``sealq learn`` run depends on (stored as ``runs.config_json``).

    A document is learned as one continual sequence (:class:`ContinualConfig` with one sequence of all its
    passages): at each passage the model's own probe questions (:mod:`sealq.engine.probes`) are the gate
    questions, best-of-K and the gates see them, and accepted updates accumulate into one document model.

    Args:
        loop: model, seed, self-edit sampling, training and answering settings, as for ``sealq loop``.
        files: the documents (``.txt``/``.md``) and passage files (``.json``, SQuAD formats: their questions
            are hidden from the learner and only scored), in order.
        probes_per_passage: probe questions kept per passage at most.
        gates: gate specs (:meth:`Gate.parse`); ``sealq ask``/``export`` use the first one's model.
        max_passage_tokens: the most tokens of one passage of a document (the model's tokenizer).
        passages: learn only the first N passages (of all files, in order).
        length: passages learned (set when the run starts).
    """

    loop: LoopConfig = field(default_factory=LoopConfig)
    files: tuple[str, ...] = ()
    probes_per_passage: int = 5
    gates: tuple[str, ...] = ("none",)
    max_passage_tokens: int = 256
    passages: int | None = None
    length: int = 0

    def __post_init__(self):
        object.__setattr__(self, "gates", tuple(Gate.parse(g).spec for g in self.gates))
        object.__setattr__(self, "files", tuple(self.files))
        _check(len(self.files) >= 1, "sealq learn needs at least one FILE (.txt, .md or a .json passage file)")
        _check(1 <= self.probes_per_passage <= 50, f"--probes-per-passage must be in 1-50, got {self.probes_per_passage}")
        _check(64 <= self.max_passage_tokens <= 1024, f"--max-passage-tokens must be in 64-1024, got {self.max_passage_tokens}")
        _check(self.passages is None or self.passages >= 1, f"--passages must be at least 1, got {self.passages}")
        _check(len(self.gates) >= 1, "--gate: at least one gate is needed")
        _check(len(set(self.gates)) == len(self.gates), f"--gate: a gate is given twice ({', '.join(self.gates)})")
        _check(1 <= self.loop.selfedit.k <= 64, f"--k must be in 1-64, got {self.loop.selfedit.k}")
        lc = self.loop
        _check(not (lc.rounds or lc.passage_only or lc.teacher or lc.seeds != 1 or lc.passages or lc.data),
               "a learn run takes no ReST-EM, eval, --data or loop --passages settings")

    @property
    def sequences(self) -> int:
        """One sequence: the document."""
        return 1

    @property
    def gate_list(self) -> list[Gate]:
        return [Gate.parse(g) for g in self.gates]

    def to_dict(self) -> dict:
        """As stored; ``sequences`` and ``length`` make it readable by the continual analysis."""
        return {"loop": self.loop.to_dict(), "files": list(self.files), "probes_per_passage": self.probes_per_passage,
                "gates": list(self.gates), "max_passage_tokens": self.max_passage_tokens, "passages": self.passages,
                "length": self.length, "sequences": 1}

    @classmethod
    def from_dict(cls, d: dict) -> LearnConfig:
        """Rebuild a stored config (``sealq learn --resume``).

        Raises:
            SealqError: not a learn config of this sealq version, or a value it refuses.
        """
        try:
            d = dict(d)
            d.pop("sequences", None)
            return cls(loop=LoopConfig.from_dict(d.pop("loop")), **d)
        except (KeyError, TypeError) as e:
            raise SealqError(f"stored run config is not a learn config readable by this sealq version ({e})") from None
        except SealqError as e:
            raise SealqError(f"stored run config: {e}") from None
