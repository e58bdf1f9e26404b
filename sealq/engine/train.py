"""Inner-loop update: fit a LoRA adapter to a self-edit's training sequences (PEFT, CPU; fp32, or the frozen
base's matmuls in bf16 where the CPU has native bfloat16, everything trained in fp32).

SEAL (Zweiger et al. 2025, sec. 3.1): the self-edit's generated data is used for supervised
fine-tuning of a LoRA adapter with the self-edit's directive (epochs, learning rate, rank); the adapted
model is then asked the passage's questions without the passage. Sequences arrive already tokenized by
llama.cpp, so the ids trained on are the ids seen at inference.
"""

from __future__ import annotations

import math
import random
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from sealq.cores import training_threads
from sealq.engine.config import Directive, TrainConfig

if TYPE_CHECKING:
    import torch
    from peft import LoraConfig, PeftModel

    from sealq.engine.protocols import TrainingModel

__all__ = ["TrainResult", "PromptCompletion", "lr_at", "make_batches", "train_lora", "threads_for"]


class PromptCompletion(list[int]):
    """A training sequence (token ids) whose first ``n_prompt`` tokens are context only: they are
    forwarded but carry no loss (supervised fine-tuning on a completion, as in ReST-EM's generator update).

    Args:
        ids: prompt ids followed by completion ids.
        n_prompt: how many leading ids are the prompt.
    """

    def __init__(self, ids: Iterable[int], n_prompt: int) -> None:
        super().__init__(ids)
        self.n_prompt = n_prompt


@dataclass(frozen=True)
class TrainResult:
    """What one LoRA training produced.

    Args:
        adapter_dir: PEFT adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``).
        rank: LoRA rank r.
        alpha: LoRA alpha (2r).
        steps: optimizer steps taken.
        tokens_trained: tokens (excluding padding) forwarded, summed over epochs.
        losses: mean loss of each step (nats/token).
        final_loss: mean loss over the last epoch.
        seconds: wall time of the training loop.
        threads: torch intra-op threads it trained with (fewer than the run's count when other processes
            held cores and the count was automatic, :attr:`~sealq.engine.config.TrainConfig.lower_when_busy`).
    """

    adapter_dir: Path
    rank: int
    alpha: float
    steps: int
    tokens_trained: int
    losses: list[float]
    final_loss: float
    seconds: float
    threads: int


def lr_at(step: int, total: int, peak: float, warmup_fraction: float) -> float:
    """Linear warm-up to ``peak`` over the first ``warmup_fraction`` of steps, then linear decay to 0.1 peak."""
    warmup = max(1, math.ceil(total * warmup_fraction)) if warmup_fraction > 0 else 0
    if step < warmup:
        return peak * (step + 1) / warmup
    rest = max(1, total - warmup)
    return peak * (1.0 - 0.9 * (step - warmup) / rest)


#: a training sequence (token ids) as :func:`make_batches` groups it: anything with a length
_Seq = TypeVar("_Seq", bound=Sized)


def make_batches(sequences: Sequence[_Seq], batch_tokens: int, rng: random.Random) -> list[list[_Seq]]:
    """Group sequences of similar length into batches of at most ``batch_tokens`` padded tokens.

    Sequences are shuffled, sorted by length (stable, so equal lengths stay shuffled) and packed greedily:
    a batch grows while ``len(batch) * longest <= batch_tokens``; a sequence longer than the budget
    is a batch of its own. The batch order is shuffled.

    Returns:
        Batches of token-id lists; every input sequence appears exactly once.
    """
    order = list(range(len(sequences)))
    rng.shuffle(order)
    order.sort(key=lambda i: len(sequences[i]))
    batches: list[list[_Seq]]
    current: list[_Seq]
    batches, current = [], []
    for i in order:
        seq = sequences[i]
        if current and (len(current) + 1) * len(seq) > batch_tokens:
            batches.append(current)
            current = []
        current.append(seq)
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


def train_lora(base_model: TrainingModel, sequences: Sequence[list[int]], directive: Directive, config: TrainConfig,
               out_dir: Path, seed: int, pad_id: int = 0) -> TrainResult:
    """Train a fresh LoRA adapter on ``sequences`` and save it (PEFT format) to ``out_dir``.

    The base model is wrapped with PEFT for the duration of the call and unwrapped again
    (``PeftModel.unload``), so one loaded base serves every self-edit of a run.

    Args:
        base_model: a frozen transformers causal LM (see :func:`sealq.models.hf.load_training_model`).
        sequences: token id lists, each at most ``config.max_seq_tokens`` long (longer ones are cut); a
            :class:`PromptCompletion` gets loss on its completion tokens only.
        directive: epochs, peak learning rate, LoRA rank (alpha = 2 * rank).
        config: batch token budget, target modules, warm-up.
        out_dir: adapter folder to write.
        seed: seeds the LoRA initialization and the batch order.
        pad_id: padding token id (masked out of the loss and attention).

    Raises:
        ValueError: no sequence has at least 2 tokens.
    """
    import torch
    from peft import LoraConfig

    seqs = [PromptCompletion(s[: config.max_seq_tokens], getattr(s, "n_prompt", 0)) for s in sequences
            if len(s) >= 2]
    seqs = [s for s in seqs if s.n_prompt < len(s)]
    if not seqs:
        raise ValueError("no training sequences of at least 2 tokens (with a completion after the prompt)")
    threads = threads_for(config)
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    lora = LoraConfig(
        r=directive.rank, lora_alpha=2 * directive.rank, lora_dropout=0.0, bias="none",
        target_modules=list(config.targets), task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():
        # transformers 5 deprecation noise from inside PEFT (is_gradient_checkpointing), not ours to fix
        warnings.simplefilter("ignore", FutureWarning)
        return _train(base_model, seqs, directive, config, out_dir, pad_id, lora, rng, threads)


def threads_for(config: TrainConfig) -> int:
    """Torch threads of one training: ``config.threads`` exactly, or, when the count is automatic
    (``lower_when_busy``, or 0 when no run resolved it), the cores other processes leave free now, at most
    ``config.threads`` (:func:`sealq.cores.training_threads`)."""
    if config.threads and not config.lower_when_busy:
        return config.threads
    return training_threads(config.threads)


@contextmanager
def frozen_linears_in_bf16(model: torch.nn.Module) -> Iterator[int]:
    """Within the block, every frozen ``nn.Linear`` of ``model`` multiplies in bfloat16: its weight (out, in)
    is cast once on entry, each call casts the input (..., in) to bf16 and the output (..., out) back to the
    input's dtype. Trainable linears (the LoRA A/B), norms, attention, the loss and the optimizer stay fp32;
    the fp32 weights are not touched, and the plain forwards come back on exit.

    Why not ``torch.autocast``: measured on a 2-core AMX Xeon (docs/notes/2026-12-01-what-bounds-lora-training.md), autocast casts the
    frozen weights again on every call (the tied 49k x 576 output layer: 18 ms a step) and runs the tiny LoRA
    matmuls and the CPU's flash attention in bf16, where they are 2-6x slower than in fp32; so autocast
    trained at 0.89-0.95x fp32, this at ~1.2x.

    Yields:
        how many linears were switched.
    """
    import torch
    import torch.nn.functional as F

    def bf16_forward(m: torch.nn.Linear) -> Callable[[torch.Tensor], torch.Tensor]:
        weight = m.weight.detach().to(torch.bfloat16)
        bias = None if m.bias is None else m.bias.detach().to(torch.bfloat16)
        return lambda x: F.linear(x.to(torch.bfloat16), weight, bias).to(x.dtype)

    switched = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and not m.weight.requires_grad]
    for m in switched:
        # an instance attribute: nn.Module.__call__ finds it before the class's (the ignore: mypy forbids it on purpose)
        m.forward = bf16_forward(m)  # type: ignore[method-assign, assignment]
    try:
        yield len(switched)
    finally:
        for m in switched:
            del m.forward  # the class's forward again


def _train(base_model: TrainingModel, sequences: list[PromptCompletion], directive: Directive, config: TrainConfig,
           out_dir: Path, pad_id: int, lora: LoraConfig, rng: random.Random, threads: int) -> TrainResult:
    import torch
    from peft import get_peft_model

    model = get_peft_model(base_model, lora)
    params = [p for p in model.parameters() if p.requires_grad]
    # fused: one kernel for all LoRA tensors' AdamW update (measured ~8% faster under bf16, within noise in fp32)
    optimizer = torch.optim.AdamW(params, lr=directive.lr, weight_decay=0.0, fused=True)
    n_batches = len(make_batches(sequences, config.batch_tokens, random.Random(0)))
    total = directive.epochs * n_batches
    t0 = time.perf_counter()
    model.train()
    try:
        with frozen_linears_in_bf16(model) if config.precision == "bf16" else nullcontext():
            losses, tokens, step = _epochs(model, optimizer, sequences, directive, config, pad_id, rng, total)
        seconds = time.perf_counter() - t0
        model.eval()
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(out_dir), save_embedding_layers=False)
    finally:
        model.unload()
        if hasattr(base_model, "peft_config"):
            del base_model.peft_config
    last = losses[-n_batches:]
    return TrainResult(out_dir, directive.rank, float(2 * directive.rank), step, tokens, losses,
                       sum(last) / len(last), seconds, threads)


def _epochs(model: PeftModel, optimizer: torch.optim.Optimizer, sequences: list[PromptCompletion], directive: Directive,
            config: TrainConfig, pad_id: int, rng: random.Random, total: int) -> tuple[list[float], int, int]:
    """The optimizer steps of one training: returns (losses per step, tokens trained, steps)."""
    import torch

    losses: list[float]
    losses, tokens, step = [], 0, 0
    for _epoch in range(directive.epochs):
        for batch in make_batches(sequences, config.batch_tokens, rng):
            # -- batch: right-pad to the longest sequence; padding is masked out of attention and loss
            width = max(len(s) for s in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)  # (B, T)
            mask = torch.zeros((len(batch), width), dtype=torch.long)  # (B, T)
            for i, s in enumerate(batch):
                ids[i, : len(s)] = torch.tensor(s)
                mask[i, : len(s)] = 1
            labels = ids.masked_fill(mask == 0, -100)  # (B, T)
            for i, s in enumerate(batch):
                labels[i, : s.n_prompt] = -100  # prompt tokens: context only, no loss
            # -- forward: mean next-token cross-entropy over real tokens
            out = model(input_ids=ids, attention_mask=mask, labels=labels)
            # -- backward and step, with the scheduled learning rate
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total, directive.lr, config.warmup_fraction)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            # -- log
            losses.append(float(out.loss.detach()))
            tokens += int(mask.sum())
            step += 1
    return losses, tokens, step
