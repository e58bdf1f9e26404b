"""Answer grading: SQuAD-normalized exact match, token F1, and *contains*.

Normalization and EM/F1 follow the official SQuAD v1.1 evaluation script (Rajpurkar et al. 2016):
lower-case, strip punctuation, drop the articles a/an/the, collapse white space. *contains* is true when
the normalized gold answer appears, on word boundaries, inside the normalized prediction; it is the
headline metric because SEAL (Zweiger et al. 2025, sec. 4.2) graded answers with an LLM judge that
accepts extra words around a correct answer, and a 135M model rarely answers with the bare span.
With several gold answers, each metric takes the maximum over them.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass

__all__ = ["normalize", "exact_match", "f1", "contains", "Score", "score"]

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(text: str) -> str:
    """SQuAD normalization: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 if the normalized strings are equal, else 0.0."""
    return float(normalize(prediction) == normalize(gold))


def f1(prediction: str, gold: str) -> float:
    """Token-overlap F1 between the normalized strings, in [0, 1] (SQuAD v1.1 definition)."""
    pred, ref = normalize(prediction).split(), normalize(gold).split()
    common = Counter(pred) & Counter(ref)
    same = sum(common.values())
    if not pred or not ref:
        return float(pred == ref)
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def contains(prediction: str, gold: str) -> float:
    """1.0 if the normalized gold appears as whole words inside the normalized prediction."""
    g = normalize(gold)
    if not g:
        return 0.0
    return float(f" {g} " in f" {normalize(prediction)} ")


@dataclass(frozen=True)
class Score:
    """Grades of one prediction against its gold answers, each in [0, 1]."""

    em: float
    f1: float
    contains: float


def score(prediction: str, golds) -> Score:
    """Grade ``prediction`` against every gold answer and keep the best of each metric.

    Args:
        prediction: the model's answer.
        golds: one gold answer (str) or an iterable of them.
    """
    golds = [golds] if isinstance(golds, str) else list(golds)
    return Score(
        em=max(exact_match(prediction, g) for g in golds),
        f1=max(f1(prediction, g) for g in golds),
        contains=max(contains(prediction, g) for g in golds),
    )
