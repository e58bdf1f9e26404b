"""Answer grading: SQuAD-normalized exact match, token F1, and *contains*.

**EM and F1** are exactly those of the official SQuAD v1.1 evaluation script (Rajpurkar et al. 2016,
``evaluate-v1.1.py``): :func:`normalize` lower-cases, strips ASCII punctuation (``string.punctuation``),
drops the articles a/an/the and collapses white space; EM compares the normalized strings, F1 counts
shared tokens, and is 0 when no token is shared, so two answers that both normalize to nothing (``"a"``
vs ``"the"``) have EM 1 but F1 0. Neither folds Unicode: ``"1887–1893"`` (en dash) and ``"1887-1893"``
differ under EM and F1, as they do in the official script.

**contains** is the headline metric: SEAL (Zweiger et al. 2025, sec. 4.2) graded answers with an LLM
judge that accepts extra words around a correct answer, and a 135M model rarely answers with the bare
span. It differs from EM/F1 in two ways, so that it never loses a gold answer to normalization:

1. Unicode folding (:func:`fold`) before the SQuAD normalization: NFKC, then every Unicode dash
   (category Pd) and the minus sign U+2212 become ASCII ``-``, curly quotes, guillemets and primes
   become ASCII ``'`` or ``"``; any other Unicode punctuation (category P*) is then dropped, as the SQuAD
   script drops ASCII punctuation. So the gold ``"−31 degrees"`` accepts ``"-31 degrees"`` and
   ``"1887–1893"`` accepts ``"dug in 1887-1893."``.
2. A fallback for golds that normalize to nothing (only articles and punctuation: the grade ``"A"``, the
   word ``"The"``): the gold's folded text without punctuation must occur in the folded prediction
   case-sensitively, as whole words (not joined by a hyphen or apostrophe, so ``"A-levels"`` and
   ``"A's"`` do not count), and not as the first word of a sentence (start of the text, or after
   ``.``/``!``/``?`` and a space) followed by another word, because a sentence-initial ``"A"`` is
   almost always the article. ``"She received the grade A."``, ``"A."`` and ``"A"`` score 1;
   ``"Odile received a B."`` scores 0.
   Known limitations: an answer that starts with the grade (``"A is her grade."``) scores 0; a
   lower-case ``"a"`` never counts for the grade ``"A"``; marks are dropped with the punctuation, so
   gold ``"A+"`` also accepts ``"A-"``. A gold with no word at all (only white space or punctuation)
   scores 0.

As in the SQuAD script, a hyphen joins words and a sign is punctuation: ``"Durrant Hoske"`` does not
match ``"Durrant-Hoske"``, and ``"31 degrees"`` does match ``"−31 degrees"``.

With several gold answers, each metric takes the maximum over them.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from typing import NamedTuple

__all__ = ["normalize", "exact_match", "f1", "fold", "contains", "Score", "METRICS", "score", "copied_ngram_share"]

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")

# Folding table for characters that are not dashes (dashes are found by category, see fold()).
_FOLD = {
    "\u2212": "-",  # minus sign (category Sm, not Pd)
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'",  # curly single quotes
    "\u2039": "'", "\u203a": "'",  # single guillemets
    "\u2032": "'", "\u2035": "'",  # prime, reversed prime (NFKC turns double/triple primes into these)
    "\u02b9": "'", "\u02bc": "'",  # modifier letter prime / apostrophe
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"',  # curly double quotes
    "\u00ab": '"', "\u00bb": '"',  # guillemets
}
# Start of a sentence or line, looking back from a match (over a short window): a sentence end (. ! ?,
# optionally closing quotes/brackets) and white space, or a line break, then only non-word characters
# (opening quotes, list bullets). The start of the text is checked apart (see _sentence_initial).
_SENTENCE_START = re.compile(r"(?:[.!?][\"')\]]*\s+|\n)\W*$")
# After a sentence-initial match: a word on the same line ("A is her grade"), or a label mark ("A: B", "A) B")
_WORD_FOLLOWS = re.compile(r"[^\S\n]*(?:\w|[:)])")
_LOOKBACK = 24


def normalize(text: str) -> str:
    """SQuAD normalization: lower case, no punctuation, no articles, single spaces.

    Source: ``normalize_answer`` of the official SQuAD v1.1 evaluation script; only ASCII punctuation
    (``string.punctuation``) is removed, Unicode is left as is.

    Args:
        text: an answer, predicted or gold.

    Returns:
        The normalized answer; empty when the text holds only articles, punctuation and white space.
    """
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    """Exact match after :func:`normalize` (SQuAD v1.1 ``exact_match_score``, no Unicode folding).

    Args:
        prediction: the model's answer.
        gold: one gold answer.

    Returns:
        1.0 if the normalized strings are equal (also when both are empty), else 0.0.
    """
    return float(normalize(prediction) == normalize(gold))


def f1(prediction: str, gold: str) -> float:
    """Token-overlap F1 between the normalized strings (SQuAD v1.1 ``f1_score``, no Unicode folding).

    Tokens are counted with multiplicity. As in the official script, no shared token gives 0, including
    when both answers normalize to nothing.

    Args:
        prediction: the model's answer.
        gold: one gold answer.

    Returns:
        F1 in [0, 1].
    """
    pred, ref = normalize(prediction).split(), normalize(gold).split()
    common = Counter(pred) & Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def fold(text: str) -> str:
    """Fold Unicode punctuation variants to ASCII, for :func:`contains`.

    NFKC normalization, then every dash (Unicode category Pd: hyphen, non-breaking hyphen, en/em dash,
    ...) and the minus sign U+2212 become ``-``; curly quotes, guillemets and primes become ``'`` or
    ``"``. Case and letters are kept. Not part of the SQuAD v1.1 script (EM and F1 do not use it).

    Args:
        text: an answer, predicted or gold.

    Returns:
        The folded text.
    """
    if text.isascii():
        return text
    text = unicodedata.normalize("NFKC", text)
    return "".join("-" if unicodedata.category(ch) == "Pd" else _FOLD.get(ch, ch) for ch in text)


def _strip_punct(text: str) -> str:
    """Drop ASCII punctuation and every Unicode punctuation character (category P*)."""
    return "".join(ch for ch in text if ch not in _PUNCT and not unicodedata.category(ch).startswith("P"))


def _fallback_contains(prediction: str, gold: str) -> float:
    """The lighter match of :func:`contains` for golds that normalize to nothing (see module docstring)."""
    words = _strip_punct(fold(gold)).split()
    if not words:
        return 0.0
    pred = fold(prediction)
    core = r"\s+".join(map(re.escape, words))
    # whole words; a hyphen or apostrophe between word characters joins words ("A-levels", "A's")
    pattern = re.compile(rf"(?<!\w)(?<!\w[-']){core}(?![-']?\w)")
    first_word = re.search(r"\w", pred)
    for m in pattern.finditer(pred):
        assert first_word is not None  # the gold's words (articles: a, an, the) matched, so pred has a word character
        if not (_sentence_initial(pred, m.start(), first_word.start()) and _WORD_FOLLOWS.match(pred, m.end())):
            return 1.0
    return 0.0


def _sentence_initial(text: str, start: int, first_word: int) -> bool:
    """Whether position ``start`` begins the text's first word, a sentence or a line."""
    if start <= first_word:
        return True
    return _SENTENCE_START.search(text[max(0, start - _LOOKBACK):start]) is not None


def contains(prediction: str, gold: str) -> float:
    """Whether the gold answer appears, as whole words, inside the prediction.

    Both are folded (:func:`fold`), stripped of any Unicode punctuation and SQuAD-normalized
    (:func:`normalize`); the normalized gold must occur on word boundaries in the normalized prediction.
    A gold that normalizes to nothing (the grade ``"A"``) falls back to a case-sensitive match outside
    sentence-initial position; see the module docstring for the rule and its limitations. Not part of
    the SQuAD v1.1 script: a stand-in for SEAL's LLM judge.

    Args:
        prediction: the model's answer.
        gold: one gold answer.

    Returns:
        1.0 if the gold is found, else 0.0; 0.0 for a gold with no word at all.
    """
    g = normalize(_strip_punct(fold(gold)))
    if not g:
        return _fallback_contains(prediction, gold)
    return float(f" {g} " in f" {normalize(_strip_punct(fold(prediction)))} ")


class Score(NamedTuple):
    """Grades in [0, 1] by name: of one prediction against its gold answers, or a mean or a gain (a
    difference of means, in [-1, 1]) over several. Read by field name, never by position."""

    contains: float
    em: float
    f1: float

    @classmethod
    def mean(cls, scores) -> Score:
        """Per-metric mean of ``scores`` (zeros for none)."""
        scores = list(scores)
        n = len(scores) or 1
        return cls(*(sum(getattr(s, m) for s in scores) / n for m in cls._fields))

    def minus(self, other: Score) -> Score:
        """Per-metric difference ``self - other`` (a gain over a baseline)."""
        return Score(*(getattr(self, m) - getattr(other, m) for m in self._fields))


#: Metric names in table order: the fields of :class:`Score`.
METRICS = Score._fields


def score(prediction: str, golds) -> Score:
    """Grade ``prediction`` against every gold answer and keep the best of each metric.

    As ``metric_max_over_ground_truths`` of the SQuAD v1.1 script, for EM, F1 and contains.

    Args:
        prediction: the model's answer.
        golds: one gold answer (str) or an iterable of them.

    Returns:
        A :class:`Score` with the maximum EM, F1 and contains over the gold answers.
    """
    golds = [golds] if isinstance(golds, str) else list(golds)
    return Score(
        em=max(exact_match(prediction, g) for g in golds),
        f1=max(f1(prediction, g) for g in golds),
        contains=max(contains(prediction, g) for g in golds),
    )


def copied_ngram_share(text: str, context: str, n: int = 5) -> float:
    """How much of a self-edit is copied from its passage: the share of the self-edit's word n-grams
    (SQuAD-normalized words, :func:`sealq.metrics.normalize`) that also occur in the passage.

    Returns:
        A fraction in [0, 1]; 0.0 when the self-edit has fewer than ``n`` words. 1.0 means every
        n-word span is verbatim from the passage; a paraphrase or new claims lower it.
    """
    def grams(x: str) -> list[tuple[str, ...]]:
        w = normalize(x).split()
        return list(zip(*(w[i:] for i in range(n))))

    mine = grams(text)
    if not mine:
        return 0.0
    theirs = set(grams(context))
    return sum(g in theirs for g in mine) / len(mine)
