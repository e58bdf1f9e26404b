"""The inference side: one llama.cpp model per run, with LoRA adapters hot-swapped in and out.

Adapters are attached with llama.cpp's low-level API (``llama_adapter_lora_init`` +
``llama_set_adapters_lora``), so the base weights are loaded once. After every change of adapters the
KV cache is cleared (``Llama.reset()`` plus ``llama_memory_clear``): llama-cpp-python reuses cached
keys/values for a matching token prefix, and keys computed under another adapter would be stale.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sealq.cores import default_threads
from sealq.errors import SealqError
from sealq.models.registry import ResolvedModel

if TYPE_CHECKING:
    import numpy as np
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    from llama_cpp.llama_types import ChatCompletionRequestMessage
    from numpy.typing import NDArray

__all__ = ["LlamaRunner", "Generation"]


@dataclass(frozen=True)
class Generation:
    """One completion: its text, tokens generated, wall seconds."""

    text: str
    tokens: int
    seconds: float


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence llama.cpp's C-level logging (it writes to fd 2 directly)."""
    try:
        fd = os.dup(2)
    except OSError:
        yield
        return
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(fd, 2)
            os.close(fd)


class LlamaRunner:
    """A loaded llama.cpp model with chat generation, tokenization and adapter hot-swap.

    Args:
        model: the resolved GGUF base.
        n_ctx: context window in tokens.
        threads: CPU threads (0: ``SEALQ_THREADS``, else one per core this process may use, :func:`sealq.cores.default_threads`).
        seed: sampling seed.
        logits_all: keep the logits of every prompt position (needed by :meth:`prompt_logits`).

    Raises:
        SealqError: llama.cpp cannot load the file.
    """

    def __init__(self, model: ResolvedModel, n_ctx: int = 2048, threads: int = 0, seed: int = 0,
                 logits_all: bool = False):
        import llama_cpp

        self._lc = llama_cpp
        self.model = model
        n = threads or default_threads()
        try:
            with _quiet_stderr():
                self.llm = llama_cpp.Llama(
                    model_path=str(model.path), n_ctx=n_ctx, n_threads=n, n_threads_batch=n, seed=seed,
                    logits_all=logits_all, verbose=False,
                )
        except (ValueError, RuntimeError) as e:
            raise SealqError(f"{model.path}: llama.cpp cannot load this model ({e})") from None
        except Exception as e:  # noqa: BLE001  (llama-cpp-python compiles the GGUF's chat template: jinja2 errors)
            import jinja2

            what = "the GGUF's tokenizer.chat_template cannot format a chat" if isinstance(e, jinja2.TemplateError) \
                else "llama-cpp-python cannot load this model"
            raise SealqError(f"{model.path}: {what} ({type(e).__name__}: {e})") from None
        self._formatter = self._chat_formatter()
        # every chat goes through this one formatter: llama-cpp-python would otherwise pick a built-in
        # format by matching the template text (chatml, llama-3, ...) or fall back to llama-2's
        self.llm.chat_handler = self._formatter.to_chat_handler()
        self._loaded: dict[str, ctypes._Pointer[ctypes.c_void_p]] = {}  # path -> llama_adapter_lora_p
        self.active: tuple[tuple[str, float], ...] = ()  # (resolved path, scale) attached now
        self.policy: tuple[tuple[str, float], ...] = ()  # always attached under the others (ReST-EM)

    # -- tokens ---------------------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[int]:
        """Token ids exactly as llama.cpp tokenizes a prompt (BOS added if the model's vocab asks for it)."""
        return self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)

    @property
    def n_ctx(self) -> int:
        """The context window in tokens."""
        return self.llm.n_ctx()

    def next_token_logits(self, ids: list[int]) -> NDArray[np.float32]:
        """Logits after the prompt ``ids``, evaluated from an empty KV cache with the attached adapters.

        Returns:
            float32 numpy array, shape ``(n_vocab,)``.
        """
        import numpy as np

        self.clear_cache()
        self.llm.eval(ids)
        ptr = self._lc.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        out = np.ctypeslib.as_array(ptr, shape=(self.llm.n_vocab(),)).copy()
        self.clear_cache()
        return out

    def prompt_logits(self, ids: list[int]) -> NDArray[np.float32]:
        """Next-token logits at every position of ``ids`` (runner made with ``logits_all=True``).

        Returns:
            float32 numpy array, shape ``(len(ids), n_vocab)``.
        """
        self.clear_cache()
        self.llm.eval(ids)
        out = self.llm.scores[: len(ids)].copy()
        self.clear_cache()
        return out

    def _chat_formatter(self) -> Jinja2ChatFormatter:
        """The one chat formatter of this model: the GGUF's ``tokenizer.chat_template`` (Jinja), its EOS and
        BOS texts, generation stopped at EOS (llama-cpp-python's own ``chat_template.default`` handler).

        Raises:
            SealqError: the GGUF has no chat template (older converters, base models). sealq does not guess
                one: a wrong format makes a chat model answer nonsense without any error.
        """
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        llm = self.llm
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise SealqError(f"{self.model.path}: the GGUF has no tokenizer.chat_template; sealq formats every "
                             "prompt with the model's own chat template (use an instruct/chat GGUF that has one)")
        eos, bos = llm.token_eos(), llm.token_bos()
        texts: dict[str, Any] = dict(eos_token=llm._model.token_get_text(eos) if eos != -1 else "",
                                     bos_token=llm._model.token_get_text(bos) if bos != -1 else "")
        try:
            self.end_of_turn = self._end_of_turn(Jinja2ChatFormatter(template=template, **texts))
            formatter = Jinja2ChatFormatter(template=template, **texts, add_generation_prompt=True,
                                            stop_token_ids=sorted({eos, self.end_of_turn}))
            # the conversations sealq builds: a user turn, and user / assistant / user (the directive turn)
            probes: list[list[ChatCompletionRequestMessage]] = [
                [{"role": "user", "content": "Question: 1?"}],
                [{"role": "user", "content": "a b"}, {"role": "assistant", "content": "c d"},
                 {"role": "user", "content": "e f"}]]
            rendered = [formatter(messages=m).prompt for m in probes]
        except Exception as e:  # noqa: BLE001  (jinja2 raises TemplateSyntaxError, UndefinedError, TemplateError...)
            raise SealqError(f"{self.model.path}: the GGUF's tokenizer.chat_template cannot format a chat "
                             f"({type(e).__name__}: {e})") from None
        if any("Question: 1?" not in r for r in rendered[:1]) or any("e f" not in r for r in rendered[1:]):
            raise SealqError(f"{self.model.path}: the GGUF's tokenizer.chat_template leaves the user's message out "
                             "of the prompt; sealq cannot use it")
        return formatter

    _REPLY = "sealq-reply-probe"

    def _end_of_turn(self, formatter: Jinja2ChatFormatter) -> int:
        """The token the chat template puts after an assistant reply: ``<|im_end|>`` (chatml), ``<|eot_id|>``
        (llama-3), ``<end_of_turn>`` (gemma), ... It ends every training target and stops generation. It is
        read from the template because the vocabulary's own EOS/EOT ids need not be it: gemma's EOS is
        ``<eos>``, and llama.cpp guesses SmolLM2's EOT as ``<|endoftext|>``. A template that puts no special
        token there falls back to the EOS token."""
        lc, vocab, eos = self._lc, self.llm._model.vocab, self.llm.token_eos()
        messages: list[ChatCompletionRequestMessage] = [{"role": "user", "content": "a"},
                                                        {"role": "assistant", "content": self._REPLY}]
        prompt = formatter(messages=messages).prompt
        after = prompt[prompt.rindex(self._REPLY) + len(self._REPLY):] if self._REPLY in prompt else ""
        ids = self.llm.tokenize(after.encode("utf-8"), add_bos=False, special=True)
        if ids and (lc.llama_vocab_is_eog(vocab, ids[0]) or lc.llama_vocab_is_control(vocab, ids[0])):
            return int(ids[0])
        return eos

    def chat_prompt_ids(self, messages: list[dict]) -> list[int]:
        """Token ids of ``messages`` rendered with the model's chat template plus the assistant header,
        exactly the prompt :meth:`chat` evaluates (same formatter, same special-token handling)."""
        try:
            out = self._formatter(messages=messages)  # type: ignore[arg-type]  # as in chat()
            prompt = out.prompt.encode("utf-8")
        except UnicodeEncodeError as e:
            raise SealqError(f"the text is not valid Unicode ({e.reason} at character {e.start})") from None
        except Exception as e:  # noqa: BLE001  (the template may refuse a chat the load-time probes did not cover)
            raise SealqError(f"{self.model.path}: the GGUF's tokenizer.chat_template cannot format this chat "
                             f"({type(e).__name__}: {e})") from None
        return self.llm.tokenize(prompt, add_bos=not out.added_special, special=True)

    def check_fits(self, messages: list[dict], max_tokens: int) -> int:
        """Tokens ``messages`` need with ``max_tokens`` to generate; raises if over the context window.

        Raises:
            SealqError: prompt + budget exceeds :attr:`n_ctx` (llama.cpp would raise mid-generation).
        """
        need = len(self.chat_prompt_ids(messages)) + max_tokens
        if need > self.n_ctx:
            raise SealqError(f"the prompt needs {need} tokens ({max_tokens} to generate) but the context window "
                             f"is {self.n_ctx}: shorten it")
        return need

    def completion_ids(self, text: str) -> list[int]:
        """Token ids of an assistant reply ``text`` followed by the template's end-of-turn token
        (:attr:`end_of_turn`; for SFT targets)."""
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False) + [self.end_of_turn]

    # -- generation -----------------------------------------------------------------------------------
    def chat(self, messages: list[dict], max_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
             seed: int | None = None, grammar: str | None = None) -> Generation:
        """One chat completion with the model's own chat template (from the GGUF).

        Args:
            messages: OpenAI-style ``[{"role", "content"}]``.
            max_tokens: generation budget in tokens.
            temperature: 0 for greedy decoding.
            top_p: nucleus threshold (ignored when greedy).
            seed: sampling seed for this call.
            grammar: optional GBNF grammar constraining the output.

        Every call starts from an empty KV cache, so its output depends only on its arguments and the
        attached adapters, never on what was evaluated before (a resumed run reproduces it exactly).
        """
        self.clear_cache()
        kwargs: dict[str, Any] = {}
        if grammar is not None:
            kwargs["grammar"] = self._lc.LlamaGrammar.from_string(grammar, verbose=False)
        if temperature <= 0:
            kwargs.update(temperature=0.0, top_k=1, top_p=1.0)
        else:
            kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
        if seed is not None:
            kwargs["seed"] = seed
        t0 = time.perf_counter()
        with _quiet_stderr():
            # ignore: llama_cpp types messages as its TypedDicts; these are plain dicts with the same keys
            out = self.llm.create_chat_completion(messages=messages, max_tokens=max_tokens, **kwargs)  # type: ignore[arg-type]
        seconds = time.perf_counter() - t0
        # ignore: llama_cpp's return type includes the stream=True iterator (not overloaded on stream); this is a dict
        return Generation(out["choices"][0]["message"]["content"] or "", out["usage"]["completion_tokens"], seconds)  # type: ignore[index]

    # -- adapters -------------------------------------------------------------------------------------
    def _adapter(self, path: str | Path, validate: bool) -> tuple[str, ctypes._Pointer[ctypes.c_void_p]]:
        key = str(Path(path).resolve())
        if key not in self._loaded:
            if not Path(key).is_file():
                raise SealqError(f"{path}: adapter file not found")
            if validate:
                from sealq.models.gguf_meta import validate_adapter

                validate_adapter(key, self.model.path)
            with _quiet_stderr():
                ptr = self._lc.llama_adapter_lora_init(self.llm._model.model, key.encode("utf-8"))
            if not ptr:
                raise SealqError(f"{path}: llama.cpp rejected the adapter (not a LoRA GGUF for {self.model.name}?)")
            self._loaded[key] = ptr
        return key, self._loaded[key]

    def set_policy(self, adapters: list[tuple[str | Path, float]] | None, validate: bool = True) -> None:
        """Make these adapters part of the model: from now on they stay attached under whatever
        :meth:`set_adapters` attaches (ReST-EM: base + policy adapters = the round's model).

        Raises:
            SealqError: as :meth:`set_adapters`.
        """
        resolved = tuple((self._adapter(p, validate)[0], float(s)) for p, s in (adapters or []))
        self.policy = resolved
        self.set_adapters(None)

    def set_adapters(self, adapters: list[tuple[str | Path, float]] | None, validate: bool = True) -> None:
        """Attach exactly these adapters (path, scale), on top of the policy adapters if any (see
        :meth:`set_policy`) - none to return to the base (+ policy) - and clear the KV cache.

        Args:
            adapters: (GGUF LoRA adapter path, scale) pairs; None or [] detaches all.
            validate: check each newly loaded file against the base first (~30 ms with gguf-py's reader);
                the loop skips it for adapters its converter has just checked against the same base.

        Raises:
            SealqError: a file is missing or llama.cpp rejects it (wrong base, wrong format).
        """
        policy = {p for p, _ in self.policy}
        adapters = list(self.policy) + [(p, s) for p, s in (adapters or []) if str(Path(p).resolve()) not in policy]
        resolved = [(self._adapter(p, validate), s) for p, s in adapters]
        n = len(resolved)
        arr = (self._lc.llama_adapter_lora_p_ctypes * max(n, 1))(*[ptr for (_, ptr), _ in resolved])
        scales = (ctypes.c_float * max(n, 1))(*[s for _, s in resolved])
        rc = self._lc.llama_set_adapters_lora(self.llm._ctx.ctx, arr if n else None, n, scales if n else None)
        if rc != 0:
            raise SealqError(f"llama.cpp could not attach adapters ({rc})")
        self.active = tuple((k, s) for (k, _), s in resolved)
        self.clear_cache()

    def clear_cache(self) -> None:
        """Forget all cached keys/values so the next prompt is evaluated from scratch."""
        self.llm.reset()
        mem = self._lc.llama_get_memory(self.llm._ctx.ctx)
        if mem is not None:
            self._lc.llama_memory_clear(mem, True)

    def free_adapter(self, path: str | Path) -> None:
        """Detach (if attached) and free one adapter's memory."""
        key = str(Path(path).resolve())
        if any(p == key for p, _ in self.policy):
            self.policy = tuple((p, s) for p, s in self.policy if p != key)
        if any(p == key for p, _ in self.active):
            self.set_adapters([(p, s) for p, s in self.active if p != key])
        ptr = self._loaded.pop(key, None)
        if ptr is not None:
            self._lc.llama_adapter_lora_free(ptr)

    @contextlib.contextmanager
    def adapter(self, path: str | Path, scale: float = 1.0, validate: bool = True) -> Iterator[None]:
        """Context manager: attach one adapter, yield, then detach and free it."""
        try:
            self.set_adapters([(path, scale)], validate=validate)
            yield
        finally:
            self.set_adapters(None)
            self.free_adapter(path)
