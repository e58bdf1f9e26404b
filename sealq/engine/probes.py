"""Probe questions: the model's own questions about a passage, the reward of ``sealq learn``.

A plain document has no gold questions, so the model writes them, with the passage in view (greedy):

1. for each sentence of the passage (in order), the model writes one quiz question about it
   (:data:`QUESTION_PROMPT` after the two worked examples of :data:`QUESTION_SHOTS` as earlier chat turns;
   the sentence alone is in view). Measured with SmolLM2-135M on 8 passages: with the whole passage in the
   prompt the model mostly loops on "What is the answer to the question: ...", 1 usable probe in 35
   sentences; with the sentence alone 12 in 35 (bundled and SQuAD passages), and on 9 other passages 6
   in 36 without the examples, 12 in 36 with them;
2. the model answers its question with the passage in the prompt (the in-context answer, as the ceiling
   of :mod:`sealq.engine.answer`);
3. the probe's answer is the span of that answer that is *grounded*: the longest run of its words that
   occurs in the sentence the question was written about and says something the question does not
   (:func:`grounded_span`), cut to :data:`MAX_ANSWER_WORDS` words.

A candidate is kept only with a question (one line ending in ``?``, 3-40 words, sharing a word of 3+
letters, not a stop word, with its sentence; not a repeat) and a grounded answer that is more than the
passage title; every candidate is recorded with why it was dropped (``probes.reason``). The probes are
scored like gold questions (``contains``) without the passage; they are never shown to the self-edit
prompt. A small model writes few usable questions (SmolLM2-135M: about one sentence in three).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sealq.engine.answer import qa_messages
from sealq.engine.dataset import Passage, Question
from sealq.engine.document import sentences
from sealq.metrics import fold, normalize
from sealq.vocab import ProbeReason

__all__ = ["QUESTION_PROMPT", "QUESTION_SHOTS", "MAX_ANSWER_WORDS", "question_messages", "ProbeCandidate", "grounded_span", "write_probes"]

QUESTION_PROMPT = "Sentence: {sentence}\n\nWrite a quiz question about this sentence. Reply with the question only."

#: two invented worked examples, given as earlier chat turns before every question request
QUESTION_SHOTS = (("The Orlen Bridge opened in 1923 and is 410 metres long.", "When did the Orlen Bridge open?"),
                  ("Mara Vell wrote her first novel in a lighthouse near Kestrel Point.",
                   "Where did Mara Vell write her first novel?"))

#: the most words a probe answer keeps (a long span is hard to reproduce word for word)
MAX_ANSWER_WORDS = 6

#: words that never start or end a probe answer
_STOP = frozenset("a an the of in on at to for by with from and or but is are was were be been it its this that "
                  "which who whom whose as into than then there their they he she his her called named".split())


@dataclass(frozen=True)
class ProbeCandidate:
    """One written probe: the sentence it was asked about, the question and in-context answer as the model
    wrote them, the grounded span (the probe's gold answer), and :class:`~sealq.vocab.ProbeReason`."""

    sentence: str
    question: str
    answer_text: str
    answer: str
    reason: ProbeReason
    seconds: float

    @property
    def kept(self) -> bool:
        return self.reason == ProbeReason.KEPT


def _words(text: str) -> list[str]:
    return normalize(fold(text)).split()


def grounded_span(question: str, answer: str, source: str, max_words: int = MAX_ANSWER_WORDS,
                  known: str = "") -> str:
    """The part of ``answer`` a probe can be scored on: the longest run of its (SQuAD-normalized) words
    that occurs in ``source`` (the sentence asked about) and holds a word that neither the question nor
    ``known`` (the passage title: every answer about the passage may name it) has; stop words and question
    words trimmed from both ends (again after cutting it to its first ``max_words`` words). A one-word span must name
    something (capitalized inside the sentence, or a number). Empty when no such run exists.

    Example: question "Who built the lighthouse?", answer "The lighthouse was built by Tomas Oberlin in
    1887." over the sentence "It was built by the engineer Tomas Oberlin in 1887." -> ``"tomas oberlin in 1887"``.
    """
    q, a, k = set(_words(question)), _words(answer), set(_words(known))
    ctx = f" {' '.join(_words(source))} "
    best: list[str] = []
    for i in range(len(a)):
        for j in range(len(a), i + len(best), -1):
            run = a[i:j]
            if f" {' '.join(run)} " in ctx and any(w not in q and w not in k and w not in _STOP for w in run):
                best = run
                break
    while best and (best[0] in _STOP or best[0] in q):
        best = best[1:]
    best = best[:max_words]
    while best and (best[-1] in _STOP or best[-1] in q):
        best = best[:-1]
    if len(best) == 1 and best[0] not in _specific(source):  # "city", "one": any answer might say it
        return ""
    return " ".join(best)


def _specific(sentence: str) -> set[str]:
    """Normalized words of ``sentence`` that name something: capitalized after its first word, or with a digit."""
    toks = sentence.split()
    return {w for i, t in enumerate(toks) for w in _words(t)
            if any(ch.isdigit() for ch in t) or (i > 0 and t[:1].isupper())}


def question_messages(sentence: str) -> list[dict]:
    """The chat that asks for one quiz question about ``sentence``: the worked examples, then the request."""
    msgs = []
    for s, q in QUESTION_SHOTS:
        msgs += [{"role": "user", "content": QUESTION_PROMPT.format(sentence=s)}, {"role": "assistant", "content": q}]
    return msgs + [{"role": "user", "content": QUESTION_PROMPT.format(sentence=sentence)}]


def _question(text: str) -> str:
    line = text.strip().split("\n")[0].strip().strip('"').strip()
    return re.sub(r"^(question|q)\s*\d*\s*[:.]\s*", "", line, flags=re.I).strip()


def _candidate(runner, passage: Passage, sentence: str, seen: set, max_tokens: int) -> ProbeCandidate:
    g = runner.chat(question_messages(sentence), max_tokens=48, temperature=0.0)
    q, secs = _question(g.text), g.seconds
    shared = {w for w in _words(q) if len(w) > 2 and w not in _STOP} & set(_words(sentence))
    if not q.endswith("?") or not 3 <= len(q.split()) <= 40 or "answer to" in q.lower() or not shared:
        return ProbeCandidate(sentence, q, "", "", ProbeReason.NO_QUESTION, secs)
    if normalize(q) in seen:
        return ProbeCandidate(sentence, q, "", "", ProbeReason.DUPLICATE, secs)
    seen.add(normalize(q))
    a = runner.chat(qa_messages(passage, Question(q, ("",)), with_context=True), max_tokens=max_tokens, temperature=0.0)
    span = grounded_span(q, a.text, sentence, known=passage.title)
    return ProbeCandidate(sentence, q, a.text.strip(), span, ProbeReason.KEPT if span else ProbeReason.UNGROUNDED,
                          secs + a.seconds)


def write_probes(runner, passage: Passage, n: int, max_tokens: int = 32) -> list[ProbeCandidate]:
    """The model's probe candidates for ``passage`` (module docstring), sentence by sentence, until ``n``
    are kept or the sentences run out (greedy decoding with whatever adapters ``runner`` has attached;
    ``sealq learn`` writes them with the base model).

    Args:
        runner: a :class:`~sealq.models.llama.LlamaRunner`.
        passage: the passage (its questions are ignored).
        n: probes wanted.
        max_tokens: budget of each in-context answer.

    Returns:
        Every candidate written, kept or not, in sentence order (at most ``n`` kept).
    """
    out: list[ProbeCandidate]
    seen: set[str]
    out, seen = [], set()
    for s in sentences(passage.context):
        if sum(c.kept for c in out) >= n:
            break
        if len(s.split()) < 4:
            continue
        out.append(_candidate(runner, passage, s, seen, max_tokens))
    return out
