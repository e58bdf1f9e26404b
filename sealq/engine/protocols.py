"""The engine's model seams, as types: what the engine calls on the llama.cpp model (:class:`Runner`) and
the model LoRAs are trained on (:data:`TrainingModel`). Where the work runs is the other seam:
:class:`sealq.engine.jobs.Executor` (it is defined next to the jobs it runs, which name these models).

The protocol is structural: :class:`sealq.models.llama.LlamaRunner` is a :class:`Runner` without naming it.
This module is for type checking only (imported under ``TYPE_CHECKING``): nothing here runs, and it
imports no other engine module.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeAlias

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray
    from transformers import PreTrainedModel

    from sealq.models.llama import Generation

__all__ = ["Runner", "TrainingModel"]

#: The training model (``Models.trainer``): a frozen transformers causal LM on the CPU, dequantized from the
#: run's GGUF (:func:`sealq.models.hf.load_training_model`). Not a protocol: PEFT (``get_peft_model``,
#: ``PeftModel.from_pretrained``) takes a ``torch.nn.Module``, and sealq also calls it, reads and loads its
#: ``state_dict``; the concrete class is what every caller needs.
TrainingModel: TypeAlias = "PreTrainedModel"


class Runner(Protocol):
    """The inference model (:class:`sealq.models.llama.LlamaRunner`): one llama.cpp model with its chat
    template, tokenizer and hot-swapped GGUF LoRA adapters.

    Adapters come in two layers: the *policy* (:meth:`set_policy`, ReST-EM policies or a continual run's
    accepted updates), always attached, and on top of it whatever :meth:`set_adapters` attaches. Every
    generation starts from an empty KV cache, so its output depends only on its arguments and the attached
    adapters. Token counts are llama.cpp tokens of this model's vocabulary.
    """

    @property
    def n_ctx(self) -> int:
        """The context window, in tokens."""
        ...

    @property
    def policy(self) -> tuple[tuple[str, float], ...]:
        """The policy adapters attached under every other: (resolved GGUF path, scale), in order."""
        ...

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` as llama.cpp tokenizes a prompt (BOS added if the vocabulary asks for it,
        special-token texts not parsed)."""
        ...

    def chat_prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of ``messages`` (``[{"role", "content"}]``) rendered with the model's chat template
        plus the assistant header: exactly the prompt :meth:`chat` evaluates.

        Raises:
            SealqError: the text is not valid Unicode, or the chat template refuses the chat.
        """
        ...

    def completion_ids(self, text: str) -> list[int]:
        """Token ids of an assistant reply ``text`` followed by the template's end-of-turn token (a
        supervised fine-tuning target)."""
        ...

    def check_fits(self, messages: list[dict[str, str]], max_tokens: int) -> int:
        """Tokens ``messages`` need with ``max_tokens`` more to generate (prompt + budget).

        Raises:
            SealqError: that exceeds :attr:`n_ctx`, or as :meth:`chat_prompt_ids`.
        """
        ...

    def chat(self, messages: list[dict[str, str]], max_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
             seed: int | None = None, grammar: str | None = None) -> Generation:
        """One chat completion with the model's own chat template.

        Args:
            messages: OpenAI-style ``[{"role", "content"}]``.
            max_tokens: the generation budget, in tokens.
            temperature: 0 (or below) for greedy decoding.
            top_p: nucleus threshold (ignored when greedy).
            seed: the sampling seed of this call (None: the model's).
            grammar: a GBNF grammar the output must follow (None: free text).

        Returns:
            The text, the tokens generated and the wall seconds.
        """
        ...

    def next_token_logits(self, ids: list[int]) -> NDArray[np.float32]:
        """The next-token logits after the prompt ``ids`` with the attached adapters, evaluated from an
        empty KV cache: float32, shape ``(n_vocab,)``."""
        ...

    def set_policy(self, adapters: list[tuple[str | Path, float]] | None, validate: bool = True) -> None:
        """Make these (GGUF adapter path, scale) pairs the policy, replacing the previous one (None or []:
        no policy); detaches every other adapter and clears the KV cache.

        Args:
            validate: check each newly loaded file against the base first (skipped for files the converter
                has just checked).

        Raises:
            SealqError: a file is missing or llama.cpp rejects it (wrong base, wrong format).
        """
        ...

    def set_adapters(self, adapters: list[tuple[str | Path, float]] | None, validate: bool = True) -> None:
        """Attach exactly these (GGUF adapter path, scale) pairs on top of the policy (None or []: the
        policy alone) and clear the KV cache; ``validate`` as :meth:`set_policy`.

        Raises:
            SealqError: a file is missing or llama.cpp rejects it.
        """
        ...

    def free_adapter(self, path: str | Path) -> None:
        """Detach one adapter (from the policy too) if attached, and free its memory."""
        ...

    def adapter(self, path: str | Path, scale: float = 1.0, validate: bool = True) -> AbstractContextManager[None]:
        """A context manager: attach one adapter (:meth:`set_adapters`), then detach and free it on exit.

        Raises:
            SealqError: as :meth:`set_adapters`.
        """
        ...
