"""Question answering with llama.cpp, greedy, with or without the passage in the prompt.

SEAL's knowledge-incorporation evaluation (Zweiger et al. 2025, sec. 4.2) asks the questions *without*
the passage: whatever the adapted model answers right, it answers from its weights. The same questions
*with* the passage in the prompt give the in-context ceiling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sealq.engine.dataset import Passage, Question
from sealq.metrics import Score, score
from sealq.models.llama import Generation

if TYPE_CHECKING:
    from sealq.engine.protocols import Runner

__all__ = ["qa_messages", "Answer", "answer_passage"]

_INSTRUCTION = "Answer the question with a short phrase."


def qa_messages(passage: Passage, question: Question, with_context: bool) -> list[dict]:
    """Chat messages for one question; the passage is included only when ``with_context``."""
    body = f"{_INSTRUCTION}\nQuestion: {question.question}"
    if with_context:
        body = f"Passage:\n{passage.title}\n{passage.context}\n\n{body}"
    return [{"role": "user", "content": body}]


@dataclass(frozen=True)
class Answer:
    """One graded answer: the generation and its EM/F1/contains against the gold answers."""

    generation: Generation
    score: Score


def answer_passage(runner: Runner, passage: Passage, with_context: bool, max_tokens: int) -> list[Answer]:
    """Answer every question of ``passage`` greedily with whatever adapters are attached to ``runner``.

    Returns:
        One :class:`Answer` per question, in question order.
    """
    answers = []
    for q in passage.questions:
        gen = runner.chat(qa_messages(passage, q, with_context), max_tokens=max_tokens, temperature=0.0)
        answers.append(Answer(gen, score(gen.text.strip(), q.answers)))
    return answers
