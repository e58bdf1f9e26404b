"""Question answering (sealq.engine.answer): the prompts with and without the passage, and answers graded
with sealq.metrics.score, on a stand-in runner and on the real bundled model."""

from __future__ import annotations

import pytest

from sealq.engine import answer as qa
from sealq.engine.dataset import Passage, Question
from sealq.metrics import Score, score
from sealq.models.llama import Generation

P = Passage("Quellberry", "The quellberry is a purple fruit grown in the Ostrava Range.",
            (Question("What colour is the quellberry?", ("purple", "deep purple")),
             Question("Where is it grown?", ("the Ostrava Range",))))


def test_qa_messages_without_the_passage():
    (msg,) = qa.qa_messages(P, P.questions[0], with_context=False)
    assert msg == {"role": "user",
                   "content": "Answer the question with a short phrase.\nQuestion: What colour is the quellberry?"}
    assert P.context not in msg["content"] and P.title not in msg["content"]


def test_qa_messages_with_the_passage():
    (msg,) = qa.qa_messages(P, P.questions[1], with_context=True)
    assert msg["role"] == "user"
    assert msg["content"] == ("Passage:\nQuellberry\nThe quellberry is a purple fruit grown in the Ostrava Range.\n\n"
                              "Answer the question with a short phrase.\nQuestion: Where is it grown?")
    # the question part is the no-passage prompt, unchanged
    assert msg["content"].endswith(qa.qa_messages(P, P.questions[1], with_context=False)[0]["content"])


class _Scripted:
    """A stand-in for LlamaRunner.chat: replies from a script and records every call."""

    def __init__(self, replies):
        self.replies, self.calls = list(replies), []

    def chat(self, messages, max_tokens, temperature=0.0, **kwargs):
        self.calls.append((messages, max_tokens, temperature, kwargs))
        return Generation(self.replies[len(self.calls) - 1], 5, 0.25)


@pytest.mark.parametrize("with_context", [False, True])
def test_answer_passage_asks_each_question_greedily_and_grades_it(with_context):
    runner = _Scripted(["  It is deep purple.\n", "Ostrava"])
    answers = qa.answer_passage(runner, P, with_context=with_context, max_tokens=17)
    assert [c[0] for c in runner.calls] == [qa.qa_messages(P, q, with_context) for q in P.questions]
    assert all(c[1] == 17 and c[2] == 0.0 for c in runner.calls)  # the budget, greedy
    assert [a.generation for a in answers] == [Generation("  It is deep purple.\n", 5, 0.25), Generation("Ostrava", 5, 0.25)]
    # graded on the stripped text, against every gold answer (best of each metric)
    assert answers[0].score == score("It is deep purple.", ("purple", "deep purple"))
    assert answers[0].score == Score(contains=1.0, em=0.0, f1=pytest.approx(2 / 3))  # P 2/4, R 2/2
    assert answers[1].score == Score(contains=0.0, em=0.0, f1=pytest.approx(2 * 1 * 0.5 / 1.5))


def test_answer_passage_on_the_real_model(runner, passages):
    """Greedy answers of the bundled model: one per question, in order, graded exactly as sealq.metrics.score
    grades the stripped text; the same call gives the same answers."""
    p = passages[0]
    for with_context in (False, True):
        answers = qa.answer_passage(runner, p, with_context=with_context, max_tokens=24)
        assert len(answers) == len(p.questions)
        for a, q in zip(answers, p.questions):
            assert isinstance(a.generation, Generation) and 0 < a.generation.tokens <= 24
            assert a.score == score(a.generation.text.strip(), q.answers)
            direct = runner.chat(qa.qa_messages(p, q, with_context), max_tokens=24, temperature=0.0)
            assert direct.text == a.generation.text
