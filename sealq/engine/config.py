"""Settings of each stage of the loop, one dataclass each (stored with the run as JSON).

Bad values are rejected in ``__post_init__`` with :class:`sealq.errors.SealqError` (a ``ValueError``
would be a bug; a bad option is the user's error and gets a one-line message).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from sealq.errors import SealqError

__all__ = ["EDIT_TYPES", "Directive", "DirectiveBounds", "SelfEditConfig", "TrainConfig", "EvalConfig", "LoopConfig"]

#: Self-edit types (SEAL sec. 3.2 uses "implications"; rewrite and self-QA are the paper's appendix variants).
EDIT_TYPES = ("implications", "rewrite", "self-qa")


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


@dataclass
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
    """

    k: int = 3
    edit_types: tuple[str, ...] = EDIT_TYPES
    temperature: float = 0.8
    top_p: float = 0.95
    max_tokens: int = 256
    max_items: int = 12
    directives: str = "model"

    def __post_init__(self):
        self.edit_types = tuple(self.edit_types)
        _check(self.k >= 1, f"--k must be at least 1, got {self.k}")
        _check(len(self.edit_types) > 0, "--edit-type: at least one edit type is needed")
        for t in self.edit_types:
            _check(t in EDIT_TYPES, f"--edit-type: unknown edit type {t!r} (choose from {', '.join(EDIT_TYPES)})")
        _check(0 <= self.temperature <= 5, f"--temperature must be in [0, 5], got {self.temperature}")
        _check(0 < self.top_p <= 1, f"--top-p must be in (0, 1], got {self.top_p}")
        _check(self.max_tokens >= 16, f"self-edit max_tokens must be >= 16, got {self.max_tokens}")
        _check(self.directives in ("model", "off"), f"--directives must be 'model' or 'off', got {self.directives!r}")


@dataclass
class TrainConfig:
    """LoRA training of one knowledge adapter (SEAL sec. 3.1, the inner loop's update).

    Args:
        default: the directive used when the model's is missing, unparseable or out of bounds.
        bounds: hard bounds on model-written directives.
        batch_tokens: padded tokens per optimizer step; short sequences of similar length share a step.
        targets: linear modules that get a LoRA (llama names).
        max_seq_tokens: longest training sequence in tokens; longer ones are cut.
        warmup_fraction: share of steps with linear warm-up.
        threads: torch intra-op threads (0: all cores).
    """

    default: Directive = field(default_factory=Directive)
    bounds: DirectiveBounds = field(default_factory=DirectiveBounds)
    batch_tokens: int = 192
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    max_seq_tokens: int = 512
    warmup_fraction: float = 0.1
    threads: int = 0

    def __post_init__(self):
        d, b = self.default, self.bounds
        _check(b.epochs[0] <= d.epochs <= b.epochs[1], f"--epochs must be in {b.epochs[0]}-{b.epochs[1]}, got {d.epochs}")
        _check(b.lr[0] <= d.lr <= b.lr[1], f"--lr must be in {b.lr[0]:g}-{b.lr[1]:g}, got {d.lr:g}")
        _check(d.rank in b.ranks, f"--rank must be one of {', '.join(map(str, b.ranks))}, got {d.rank}")
        _check(self.batch_tokens >= 16, f"batch_tokens must be >= 16, got {self.batch_tokens}")
        _check(self.max_seq_tokens >= 16, f"max_seq_tokens must be >= 16, got {self.max_seq_tokens}")
        _check(0 <= self.warmup_fraction < 1, f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")


@dataclass
class EvalConfig:
    """Question answering with llama.cpp (greedy).

    Args:
        max_tokens: answer length budget in tokens.
        n_ctx: llama.cpp context window in tokens.
        threads: llama.cpp threads (0: all cores).
    """

    max_tokens: int = 24
    n_ctx: int = 2048
    threads: int = 0


@dataclass
class LoopConfig:
    """Everything one ``sealq loop`` run depends on (stored as ``runs.config_json``)."""

    model: str = "smollm2-135m"
    data: str | None = None
    passages: int | None = None
    seed: int = 0
    keep_adapters: bool = False
    selfedit: SelfEditConfig = field(default_factory=SelfEditConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self):
        _check(self.passages is None or self.passages >= 1, f"--passages must be at least 1, got {self.passages}")

    def to_dict(self) -> dict:
        """The config as plain JSON-able data."""
        return asdict(self)
