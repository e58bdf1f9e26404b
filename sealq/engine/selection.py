"""Which passages a run uses (the data side of a run): the training and held-out passages, teacher
completions, a fingerprint of all of it (``--resume`` refuses changed data), and the check that every
prompt the run will build fits the model's context window.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sealq.engine import answer as qa
from sealq.engine.config import LoopConfig
from sealq.engine.dataset import Passage, load_passages, load_teacher
from sealq.engine.selfedit import directive_messages, edit_messages
from sealq.engine.step import DIRECTIVE_TOKENS
from sealq.errors import SealqError

__all__ = ["Selection", "select_passages", "selection_sha256", "check_lengths"]


#: the self-edit is re-tokenized inside the directive turn's prompt; allow for a few more tokens than generated
_RETOKENIZE_MARGIN = 16


def _short(text: str, n: int = 60) -> str:
    return repr(text if len(text) <= n else text[: n - 3] + "...")


def check_lengths(runner, passages: list[Passage], config: LoopConfig) -> None:
    """Refuse, before anything is recorded, every prompt the run would build that cannot fit the context
    window together with its generation budget: the self-edit prompt (plus the self-edit and the directive
    turn when the model writes directives) for every edit type, and every question's answer prompt with the
    passage (the ceiling, the longest answer prompt; the no-passage prompts are shorter). The ReST-EM
    policy's training pairs (self-edit prompt + self-edit) are no longer than the directive turn.

    Raises:
        SealqError: naming the passage (and question) and the token counts.
    """
    sc = config.selfedit
    for i, p in enumerate(passages):
        for edit_type in sc.edit_types:
            if sc.directives == "model":
                messages, budget = directive_messages(p, edit_type, ""), sc.max_tokens + _RETOKENIZE_MARGIN + DIRECTIVE_TOKENS
            else:
                messages, budget = edit_messages(p, edit_type), sc.max_tokens
            try:
                runner.check_fits(messages, budget)
            except SealqError as e:
                raise SealqError(f"passage {i} ({_short(p.title)}), {edit_type} self-edit: {e} "
                                 "(the passage, its title or the self-edit budget)") from None
        for j, q in enumerate(p.questions):
            try:
                runner.check_fits(qa.qa_messages(p, q, with_context=True), config.eval.max_tokens)
            except SealqError as e:
                raise SealqError(f"passage {i} ({_short(p.title)}), question {j} ({_short(q.question)}), "
                                 f"answer prompt with the passage: {e} (the question, passage or title)") from None


@dataclass
class Selection:
    """The passages of a run: ``train`` (all of them without ReST-EM rounds), ``holdout`` (rounds only),
    and teacher completions by passage key (empty without ``--teacher``)."""

    train: list[Passage]
    holdout: list[Passage]
    teacher: dict


def select_passages(config: LoopConfig) -> Selection:
    """The passages a run uses.

    With a teacher file only passages that have a completion are kept, then the first
    ``config.passages`` are taken. With ReST-EM rounds the held-out passages come from
    ``config.holdout`` (passages whose title is also in the training data are dropped) or from a seeded
    split of ``config.data`` by title (whole titles, in a seeded order, until about ``holdout_fraction``
    of the passages are held out, so no topic is on both sides);
    each side is ordered round-robin over its titles (every title's first passage, then every title's
    second, ...) and its first ``passages`` / ``holdout_passages`` are used, so a small run still spans
    many topics.

    Raises:
        SealqError: bad data or teacher file, no passage with a teacher completion, or an empty side.
    """
    import random

    passages = load_passages(config.data)
    teacher = load_teacher(config.teacher) if config.teacher else {}
    if config.teacher:
        passages = [p for p in passages if p.key in teacher]
        if not passages:
            raise SealqError(f"{config.teacher}: no passage of the data set has a teacher completion "
                             "(records are matched on title and context)")
    holdout: list[Passage] = []
    if config.rounds:
        if config.holdout:
            titles: set[str] | list[str] = {p.title for p in passages}
            holdout = [p for p in load_passages(config.holdout) if p.title not in titles]
            where = f"{config.holdout}: every held-out passage's title is also in the training data"
        else:
            titles = list(dict.fromkeys(p.title for p in passages))
            random.Random(config.seed).shuffle(titles)
            assert config.holdout_fraction is not None  # --rounds without --holdout needs it (LoopConfig checks)
            target, held, n = config.holdout_fraction * len(passages), set(), 0
            for t in titles:
                if n >= target:
                    break
                held.add(t)
                n += sum(p.title == t for p in passages)
            holdout = [p for p in passages if p.title in held]
            passages = [p for p in passages if p.title not in held]
            where = (f"{config.data or 'the bundled data'}: --holdout-fraction {config.holdout_fraction:g} holds out "
                     f"every title ({len(titles)}); nothing is left to train on: lower it, or give --holdout FILE")
        if not holdout or not passages:
            raise SealqError(where)
        passages, holdout = _interleave(passages), _interleave(holdout)
        if config.holdout_passages is not None:
            holdout = holdout[: config.holdout_passages]
    if config.passages is not None:
        passages = passages[: config.passages]
    return Selection(passages, holdout, teacher)


def selection_sha256(sel: Selection) -> str:
    """A fingerprint of everything a run reads from its data: passages (both sides, in order), their
    questions and gold answers, and the teacher completions of the passages used."""
    import hashlib

    h = hashlib.sha256()
    for side in (sel.train, sel.holdout):
        h.update(b"\x1e")
        for p in side:
            h.update(json.dumps([p.title, p.context, [[q.question, list(q.answers)] for q in p.questions],
                                 list(sel.teacher.get(p.key, ()))]).encode())
    return h.hexdigest()


def _interleave(passages: list[Passage]) -> list[Passage]:
    by_title: dict[str, list[Passage]] = {}
    for p in passages:
        by_title.setdefault(p.title, []).append(p)
    out: list[Passage]
    out, depth = [], 0
    while len(out) < len(passages):
        out += [ps[depth] for ps in by_title.values() if depth < len(ps)]
        depth += 1
    return out
