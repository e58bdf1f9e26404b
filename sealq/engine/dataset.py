"""Passages with questions and gold answers: the bundled default set and SQuAD-style loaders.

Two input formats are accepted (detected from the top-level JSON value):

* SEAL's flattened SQuAD format, a list of ``{"title", "context", "questions": [{"question", "answer"}]}``
  (as published with SEAL, Zweiger et al. 2025, and in ``shared/data/squad-dev/squad.json``). ``answer``
  may also be a list of strings; an ``"answers"`` list is accepted too.
* The official SQuAD v1.1 format (Rajpurkar et al. 2016): ``{"data": [{"title", "paragraphs":
  [{"context", "qas": [{"id", "question", "answers": [{"text", "answer_start"}]}]}]}]}``, which carries
  several gold answers per question.

A prediction is graded correct if it matches *any* gold answer (see :mod:`sealq.engine.metrics`).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from sealq.errors import SealqError, SealqWarning

__all__ = ["Question", "Passage", "load_passages", "default_data_path", "parse_passages", "load_teacher"]


@dataclass(frozen=True)
class Question:
    """One question about a passage.

    Args:
        question: the question text.
        answers: gold answers (at least one); a prediction matching any of them is correct.
    """

    question: str
    answers: tuple[str, ...]


@dataclass(frozen=True)
class Passage:
    """A passage the model is meant to learn, with its questions.

    Args:
        title: the passage title (SEAL prefixes every training sequence with it).
        context: the passage text.
        questions: questions answerable from the passage.
    """

    title: str
    context: str
    questions: tuple[Question, ...] = field(default_factory=tuple)

    @property
    def key(self) -> str:
        """A stable id: the first 16 hex digits of sha256(title + NUL + context)."""
        return hashlib.sha256(f"{self.title}\0{self.context}".encode()).hexdigest()[:16]


def default_data_path() -> Path:
    """Path of the bundled default set: 8 invented passages, 5-6 questions each."""
    return Path(str(resources.files("sealq.data").joinpath("default.json")))


def _text(value, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SealqError(f"{where}: expected a non-empty string, got {_describe(value)}")
    return value.strip()


def _describe(value) -> str:
    if isinstance(value, str):
        return "an empty string"
    return type(value).__name__ if value is not None else "nothing"


def _answers(q: dict, where: str) -> tuple[str, ...]:
    if "answers" in q:
        raw = q["answers"]
    elif "answer" in q:
        raw = q["answer"]
    else:
        raise SealqError(f"{where}: missing field 'answer'")
    items = raw if isinstance(raw, list) else [raw]
    answers = []
    for i, a in enumerate(items):
        if isinstance(a, dict):  # official SQuAD: {"text", "answer_start"}
            a = a.get("text")
        answers.append(_text(a, f"{where}.answers[{i}]"))
    if not answers:
        raise SealqError(f"{where}: no gold answer")
    return tuple(dict.fromkeys(answers))  # dedupe, keep order


def _flat(records: list, source: str) -> list[Passage]:
    passages = []
    for i, rec in enumerate(records):
        where = rec.get("_where", f"{source}: passage {i}") if isinstance(rec, dict) else f"{source}: passage {i}"
        if not isinstance(rec, dict):
            raise SealqError(f"{where}: expected an object with title/context/questions")
        for key in ("title", "context", "questions"):
            if key not in rec:
                raise SealqError(f"{where}: missing field '{key}'")
        if not isinstance(rec["questions"], list) or not rec["questions"]:
            raise SealqError(f"{where}: 'questions' must be a non-empty list")
        questions = []
        for j, q in enumerate(rec["questions"]):
            qwhere = f"{where} question {j}"
            if not isinstance(q, dict):
                raise SealqError(f"{qwhere}: expected an object with question/answer")
            if "question" not in q:
                raise SealqError(f"{qwhere}: missing field 'question'")
            questions.append(Question(_text(q["question"], f"{qwhere}.question"), _answers(q, qwhere)))
        passages.append(
            Passage(_text(rec["title"], f"{where}.title"), _text(rec["context"], f"{where}.context"), tuple(questions))
        )
    return passages


def _official(doc: dict, source: str) -> list[Passage]:
    records = []
    if not isinstance(doc["data"], list):
        raise SealqError(f"{source}: 'data' must be a list of articles")
    for i, article in enumerate(doc["data"]):
        where = f"{source}: data[{i}]"
        if not isinstance(article, dict) or "paragraphs" not in article:
            raise SealqError(f"{where}: missing field 'paragraphs'")
        if not isinstance(article["paragraphs"], list):
            raise SealqError(f"{where}.paragraphs: expected a list")
        title = article.get("title", f"article {i}")
        for j, para in enumerate(article["paragraphs"]):
            pwhere = f"{where}.paragraphs[{j}]"
            if not isinstance(para, dict):
                raise SealqError(f"{pwhere}: expected an object with context/qas")
            for key in ("context", "qas"):
                if key not in para:
                    raise SealqError(f"{pwhere}: missing field '{key}'")
            if not isinstance(para["qas"], list):
                raise SealqError(f"{pwhere}.qas: expected a list")
            qas = [qa for qa in para["qas"] if not (isinstance(qa, dict) and qa.get("is_impossible"))]
            if para["qas"] and not qas:
                continue  # SQuAD 2.0: only unanswerable questions here
            records.append({"title": title, "context": para["context"], "questions": qas,
                            "_where": f"{source}: data[{i}].paragraphs[{j}]"})
    return _flat(records, source)


def parse_passages(doc, source: str = "<data>") -> list[Passage]:
    """Parse an already-decoded JSON document in either supported format.

    Args:
        doc: the decoded JSON value (a list for SEAL's flat format, a dict with ``data`` for SQuAD v1.1).
        source: a name for error messages (usually the file path).

    Returns:
        The passages in file order. Duplicates (same title and context) are dropped, keeping the first,
        with a :class:`SealqWarning` (their questions are not merged).

    Raises:
        SealqError: the document matches neither format, or a field is missing, empty or mistyped.
    """
    if isinstance(doc, list):
        passages = _flat(doc, source)
    elif isinstance(doc, dict) and "data" in doc:
        passages = _official(doc, source)
    else:
        raise SealqError(
            f"{source}: not a SQuAD-style dataset (expected a list of passages or an object with 'data')"
        )
    if not passages:
        raise SealqError(f"{source}: no passages")
    unique: dict[str, Passage] = {}
    for p in passages:
        unique.setdefault(p.key, p)
    if len(unique) < len(passages):
        warnings.warn(f"{source}: {len(passages) - len(unique)} duplicate passage(s) (same title and context) "
                      "dropped; the first copy of each is used", SealqWarning, stacklevel=2)
    return list(unique.values())


def _read_json(p: Path, what: str):
    """Decode a UTF-8 JSON file, or raise SealqError naming the file and the problem."""
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise SealqError(f"{p}: cannot read {what} ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SealqError(f"{p}: not UTF-8 text (byte {e.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SealqError(f"{p}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None


def load_passages(path: str | Path | None = None, limit: int | None = None) -> list[Passage]:
    """Load passages from a JSON file (or the bundled default set when ``path`` is None).

    Args:
        path: a JSON file in SEAL's flat or the official SQuAD v1.1 format.
        limit: keep only the first ``limit`` passages (None: all).

    Raises:
        SealqError: the file is missing, unreadable, not UTF-8, not JSON, or not a valid dataset.
    """
    p = Path(path) if path is not None else default_data_path()
    passages = parse_passages(_read_json(p, "data file"), str(p))
    if limit is not None:
        if limit <= 0:
            raise SealqError(f"--passages must be positive, got {limit}")
        passages = passages[:limit]
    return passages


def load_teacher(path: str | Path) -> dict[str, tuple[str, ...]]:
    """Teacher self-edits: a JSON list of ``{"title", "context", "completions": [str, ...]}``.

    This is the format of SEAL's published synthetic data (e.g. GPT-4.1-written implications of SQuAD
    passages, ``shared/data/squad-dev/gpt41_implications.json``); questions in the file are ignored.

    Returns:
        Passage key (see :attr:`Passage.key`) -> the non-empty completions, in file order.

    Raises:
        SealqError: the file is unreadable, not UTF-8 JSON, not a list, or a record lacks a field.
    """
    p = Path(path)
    doc = _read_json(p, "teacher file")
    if not isinstance(doc, list):
        raise SealqError(f"{p}: a teacher file is a list of {{title, context, completions}} records")
    out: dict[str, tuple[str, ...]] = {}
    for i, rec in enumerate(doc):
        where = f"{p}: record {i}"
        if not isinstance(rec, dict):
            raise SealqError(f"{where}: expected an object with title/context/completions")
        for key in ("title", "context", "completions"):
            if key not in rec:
                raise SealqError(f"{where}: missing field '{key}'")
        comps = rec["completions"]
        if not isinstance(comps, list) or not all(isinstance(c, str) for c in comps):
            raise SealqError(f"{where}.completions: expected a list of strings")
        comps = tuple(c for c in comps if c.strip())
        if comps:
            key = Passage(_text(rec["title"], f"{where}.title"), _text(rec["context"], f"{where}.context")).key
            out.setdefault(key, comps)
    if not out:
        raise SealqError(f"{p}: no record has a non-empty completion")
    return out
