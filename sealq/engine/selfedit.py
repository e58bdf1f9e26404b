"""Self-edit generation: the model writes its own training data for a passage, plus a directive.

SEAL (Zweiger et al. 2025, sec. 3.2 and appendix B) prompts the model to turn a passage into synthetic
training data, most often a list of *implications* (also a *long* and a *very long* list, appendix Table 6);
sealq also offers a *rewrite* and *self-QA* (question-answer pairs) prompt. Each self-edit is split into items; every item becomes its own training
sequence prefixed with the title, and the passage itself is one more sequence (SEAL's
"passage + self-edit" condition).

The directive (epochs, learning rate, LoRA rank) is asked for in a follow-up turn of the same chat and
decoded under :data:`sealq.engine.directive.DIRECTIVE_GRAMMAR`.
"""

from __future__ import annotations

import re

from sealq.engine.dataset import Passage
from sealq.metrics import copied_ngram_share

__all__ = ["PROMPTS", "DIRECTIVE_PROMPT", "edit_messages", "directive_messages", "split_items", "grounding",
           "training_texts"]

PROMPTS = {
    "implications": (
        "Let's read the following passage and produce a list of implications derived directly or "
        "indirectly from the content. Write one implication per line.\n\n"
        "Passage:\n{title}\n{context}\n\nImplications:"
    ),
    # SEAL's appendix prompts for longer lists (Table 6), with sealq's one-item-per-line request.
    "implications-long": (
        "Let's read the following passage and produce a long list of implications derived directly or "
        "indirectly from the content. Write one implication per line.\n\n"
        "Passage:\n{title}\n{context}\n\nImplications:"
    ),
    "implications-very-long": (
        "Let's read the following passage and produce a very long list of implications derived directly or "
        "indirectly from the content. Write one implication per line.\n\n"
        "Passage:\n{title}\n{context}\n\nImplications:"
    ),
    "rewrite": (
        "Rewrite the following passage in your own words. Keep every name, number and fact, and write "
        "each fact as a short sentence on its own line.\n\nPassage:\n{title}\n{context}\n\nRewrite:"
    ),
    "self-qa": (
        "Read the following passage and write questions about its facts, each followed by its answer, "
        "in the form\nQ: <question>\nA: <answer>\n\nPassage:\n{title}\n{context}\n\nQuestions and answers:"
    ),
}

DIRECTIVE_PROMPT = (
    "Now choose the training settings for memorizing these notes: the number of epochs (1-10), the "
    "learning rate (1e-5 to 3e-3) and the LoRA rank (4, 8, 16 or 32). Answer exactly in the form "
    "epochs=E lr=L rank=R."
)

_BULLET = re.compile(r"^\s*(?:[-*\u2022]+|\(?\d{1,2}[.):])\s+")
_LETTER = re.compile(r"^\s*\(?[a-z][.)]\s+", re.I)  # "a) ..." list letters (not for self-QA: "Q. ...")
_HEADER = re.compile(r"^(implications|rewrite|questions and answers|notes)\s*:?$", re.I)


def edit_messages(passage: Passage, edit_type: str) -> list[dict]:
    """Chat messages that ask for one self-edit of ``edit_type`` (a key of :data:`PROMPTS`)."""
    return [{"role": "user", "content": PROMPTS[edit_type].format(title=passage.title, context=passage.context)}]


def directive_messages(passage: Passage, edit_type: str, self_edit: str) -> list[dict]:
    """The self-edit chat continued with a request for the directive."""
    return edit_messages(passage, edit_type) + [
        {"role": "assistant", "content": self_edit},
        {"role": "user", "content": DIRECTIVE_PROMPT},
    ]


def _clean(line: str, letters: bool) -> str:
    line = _BULLET.sub("", line.strip())
    if letters:
        line = _LETTER.sub("", line)
    return line.replace("**", "").strip()


def grounding(item: str, context: str) -> float:
    """How grounded a self-edit item is in its passage: the share of the item's words (SQuAD-normalized)
    that occur in the passage (:func:`sealq.metrics.copied_ngram_share` with n = 1). A faithful paraphrase
    keeps most names, numbers and nouns; an invented claim brings words the passage does not have.

    Returns:
        A fraction in [0, 1]; 0.0 for an item without words.
    """
    return copied_ngram_share(item, context, n=1)


def split_items(text: str, edit_type: str, max_items: int, context: str = "", min_grounding: float = 0.0) -> list[str]:
    """Split a self-edit into training items.

    implications/rewrite: one item per non-empty line (bullets and numbering removed, headers dropped).
    self-qa: one item per ``Q: ... A: ...`` pair; lines outside a pair are kept as plain items.
    Items under 3 words and repeats are dropped, and with ``min_grounding`` > 0 the items whose
    :func:`grounding` in ``context`` (the passage) is below it; then at most ``max_items`` are kept.

    Returns:
        The items, possibly empty (an empty self-edit is recorded and skipped by the loop).
    """
    lines = [_clean(x, letters=edit_type != "self-qa") for x in text.splitlines()]
    lines = [x for x in lines if x and not _HEADER.match(x)]
    items: list[str] = []
    if edit_type == "self-qa":
        pending_q = None
        for line in lines:
            if re.match(r"^(Q|Question)\s*\d*\s*[:.]", line, re.I):
                pending_q = re.sub(r"^(Q|Question)\s*\d*\s*[:.]\s*", "", line, flags=re.I)
            elif re.match(r"^(A|Answer)\s*\d*\s*[:.]", line, re.I) and pending_q:
                answer = re.sub(r"^(A|Answer)\s*\d*\s*[:.]\s*", "", line, flags=re.I)
                items.append(f"Q: {pending_q}\nA: {answer}")
                pending_q = None
            else:
                items.append(line)
    else:
        items = lines
    seen, kept = set(), []
    for item in items:
        norm = " ".join(item.lower().split())
        if len(item.split()) < 3 or norm in seen or (min_grounding > 0 and grounding(item, context) < min_grounding):
            continue
        seen.add(norm)
        kept.append(item)
    return kept[:max_items]


def training_texts(passage: Passage, items: list[str], with_passage: bool = True) -> list[str]:
    """SEAL's training sequences (sec. 3.2): title + each self-edit item, then title + passage.

    Args:
        with_passage: False leaves out title + passage (``--train-on items``); it is kept when there are
            no items (the passage-only row), so the result is never empty.
    """
    texts = [f"{passage.title}\n{item}" for item in items]
    return texts + [f"{passage.title}\n{passage.context}"] if with_passage or not items else texts
