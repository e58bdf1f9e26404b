"""Passages with questions and gold answers: the bundled default set and SQuAD-style loaders.

Two input formats are accepted (detected from the top-level JSON value):

* SEAL's flattened SQuAD format, a list of ``{"title", "context", "questions": [{"question", "answer"}]}``
  (as published with SEAL, Zweiger et al. 2025, and in ``shared/data/squad-dev/squad.json``). ``answer``
  may also be a list of strings; an ``"answers"`` list is accepted too.
* The official SQuAD v1.1 format (Rajpurkar et al. 2016): ``{"data": [{"title", "paragraphs":
  [{"context", "qas": [{"id", "question", "answers": [{"text", "answer_start"}]}]}]}]}``, which carries
  several gold answers per question. SQuAD v2.0 files load too: unanswerable questions (``"is_impossible":
  true``) are skipped with one warning line, since their ``plausible_answers`` are not gold answers.

A prediction is graded correct if it matches *any* gold answer (see :mod:`sealq.metrics`).

Reading (the same for teacher files): one JSON document, in UTF-8 (a byte order mark is skipped), UTF-16
or UTF-32, at most 1 GiB. A number where text is expected is read as the text written in the file
(``"answer": 1887`` is ``"1887"``). Refused, each with one line naming the file and the place: JSON
Lines, ``NaN``/``Infinity`` where text is expected, ``null``/booleans/lists/objects where text is
expected, an object with the same key twice, a lone surrogate (``"\\ud800"``), a gold answer with no letter
or digit, nesting too deep for the decoder, an empty file.
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


class _Number:
    """A JSON number, kept as the text written in the file (``1887``, ``3.50``, ``1e3``).

    Numbers are decoded this way so that an answer written as a number is read as exactly the text the
    file shows (never ``3.5`` for ``3.50``), and so that a 5000-digit integer is not converted at all
    (Python refuses to convert integers over 4300 digits).
    """

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text


class _NonFinite:
    """``NaN``, ``Infinity`` or ``-Infinity``: accepted by Python's json module but not JSON (RFC 8259).
    Decoded to this marker so that such a value is refused wherever text is expected (never read as the
    text "nan"), and ignored in fields sealq does not read (an ``answer_start`` of NaN, say)."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text


def _text(value, where: str) -> str:
    """A non-empty string field. A number is read as its decimal text (see :class:`_Number`)."""
    if isinstance(value, _Number):
        value = value.text
    elif isinstance(value, int) and not isinstance(value, bool):  # a document built in Python
        value = str(value)
    elif isinstance(value, float) and value - value == 0:  # finite
        value = repr(value)
    if not isinstance(value, str) or not value.strip():
        raise SealqError(f"{where}: expected a non-empty string, got {_describe(value)}")
    return _valid_unicode(value, where).strip()


def _valid_unicode(value: str, where: str) -> str:
    """Refuse a lone surrogate (JSON may spell one, ``"\\ud800"``; it cannot be encoded as UTF-8)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise SealqError(f"{where}: invalid Unicode, a lone surrogate \\u{ord(value[e.start]):04x} at "
                         f"character {e.start}") from None
    return value


def _describe(value) -> str:
    if isinstance(value, str):
        return f"the string {value[:40]!r}" if value.strip() else "an empty string"
    if isinstance(value, _Number):
        return f"a number ({value.text})"
    if isinstance(value, _NonFinite):
        return f"{value.text} (not a JSON value)"
    if isinstance(value, float):  # NaN or an infinity, from a document built in Python
        return f"{'NaN' if value != value else ('-' if value < 0 else '') + 'Infinity'} (not a JSON value)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _answers(q: dict, where: str, field_name: str) -> tuple[str, ...]:
    if "answers" in q:
        raw = q["answers"]
    elif "answer" in q:
        raw = q["answer"]
    else:
        raise SealqError(f"{where}: missing field '{field_name}'")
    items = raw if isinstance(raw, list) else [raw]
    answers = []
    for i, a in enumerate(items):
        if isinstance(a, dict):  # official SQuAD: {"text", "answer_start"}
            a = a.get("text")
        text = _text(a, f"{where}.answers[{i}]")
        if not any(ch.isalnum() for ch in text):  # no metric can ever match it (see sealq.metrics)
            raise SealqError(f"{where}.answers[{i}]: {text[:40]!r} has no letter or digit, so no prediction can match it")
        answers.append(text)
    if not answers:
        raise SealqError(f"{where}: no gold answer")
    return tuple(dict.fromkeys(answers))  # dedupe, keep order


def _unanswerable(q: dict, where: str) -> bool:
    """SQuAD 2.0's ``is_impossible`` (true: the passage does not answer the question)."""
    flag = q.get("is_impossible", False)
    if not isinstance(flag, bool):
        raise SealqError(f"{where}.is_impossible: expected true or false, got {_describe(flag)}")
    return flag


class _Skipped:
    """Counts of SQuAD 2.0 unanswerable questions skipped, and of passages left with no question."""

    def __init__(self):
        self.questions = 0
        self.passages = 0


def _passage(rec, where: str, skipped: _Skipped, official: bool = False) -> Passage | None:
    """One passage record; None when all its questions are unanswerable (SQuAD 2.0)."""
    qs_field, ans_field = ("qas", "answers") if official else ("questions", "answer")
    if not isinstance(rec, dict):
        raise SealqError(f"{where}: expected an object with title/context/{qs_field}")
    for key in ("title", "context", qs_field):
        if key not in rec:
            raise SealqError(f"{where}: missing field '{key}'")
    if not isinstance(rec[qs_field], list) or not rec[qs_field]:
        raise SealqError(f"{where}: '{qs_field}' must be a non-empty list, got {_describe(rec[qs_field])}")
    title, context = _text(rec["title"], f"{where}.title"), _text(rec["context"], f"{where}.context")
    questions = []
    for j, q in enumerate(rec[qs_field]):
        qwhere = f"{where} question {j}"
        if not isinstance(q, dict):
            raise SealqError(f"{qwhere}: expected an object with question/{ans_field}")
        if "question" not in q:
            raise SealqError(f"{qwhere}: missing field 'question'")
        text = _text(q["question"], f"{qwhere}.question")
        if _unanswerable(q, qwhere):
            skipped.questions += 1
            continue
        questions.append(Question(text, _answers(q, qwhere, ans_field)))
    if not questions:
        skipped.passages += 1
        return None
    return Passage(title, context, tuple(questions))


def _flat(records: list, source: str, skipped: _Skipped) -> list[Passage]:
    passages = (_passage(rec, f"{source}: passage {i}", skipped) for i, rec in enumerate(records))
    return [p for p in passages if p is not None]


def _official(doc: dict, source: str, skipped: _Skipped) -> list[Passage]:
    passages = []
    if not isinstance(doc["data"], list):
        raise SealqError(f"{source}: 'data' must be a list of articles, got {_describe(doc['data'])}")
    for i, article in enumerate(doc["data"]):
        where = f"{source}: data[{i}]"
        if not isinstance(article, dict) or "paragraphs" not in article:
            raise SealqError(f"{where}: missing field 'paragraphs'")
        if not isinstance(article["paragraphs"], list):
            raise SealqError(f"{where}.paragraphs: expected a list, got {_describe(article['paragraphs'])}")
        title = article.get("title", f"article {i}")
        for j, para in enumerate(article["paragraphs"]):
            pwhere = f"{where}.paragraphs[{j}]"
            if not isinstance(para, dict):
                raise SealqError(f"{pwhere}: expected an object with context/qas")
            p = _passage({**para, "title": title}, pwhere, skipped, official=True)
            if p is not None:
                passages.append(p)
    return passages


def parse_passages(doc, source: str = "<data>") -> list[Passage]:
    """Parse an already-decoded JSON document in either supported format.

    Text fields (title, context, question, answer) must be non-empty strings; a number there is read as
    its decimal text (``"answer": 1887`` is the answer ``"1887"``); ``null``, ``true``/``false``, lists,
    objects, ``NaN``/``Infinity`` and lone surrogates are refused, and so is a gold answer with no letter
    or digit (``"."``: no prediction could match it). SQuAD 2.0's unanswerable questions (``"is_impossible":
    true``, in either format) are skipped with a :class:`SealqWarning` (their ``plausible_answers`` are
    not gold answers), and so is a passage left with no question.

    Args:
        doc: the decoded JSON value (a list for SEAL's flat format, a dict with ``data`` for SQuAD v1.1).
        source: a name for error messages (usually the file path).

    Returns:
        The passages in file order. Duplicates (same title and context) are dropped, keeping the first,
        with a :class:`SealqWarning` (their questions are not merged).

    Raises:
        SealqError: the document matches neither format, or a field is missing, empty or mistyped.
    """
    skipped = _Skipped()
    if isinstance(doc, list):
        passages = _flat(doc, source, skipped)
    elif isinstance(doc, dict) and "data" in doc:
        passages = _official(doc, source, skipped)
    elif isinstance(doc, dict) and {"title", "context", "questions"} & doc.keys():
        raise SealqError(f"{source}: a single passage object; a data file is a list of passages (wrap it in [ ]) "
                         "or SQuAD's object with 'data'")
    else:
        raise SealqError(
            f"{source}: not a SQuAD-style dataset (expected a list of passages or an object with 'data')"
        )
    if skipped.questions:
        left = f", and {skipped.passages} passage(s) left with none" if skipped.passages else ""
        if not passages:
            raise SealqError(f"{source}: no answerable question: all {skipped.questions} question(s) are SQuAD 2.0 "
                             "unanswerable ones (is_impossible: true)")
        warnings.warn(f"{source}: {skipped.questions} unanswerable SQuAD 2.0 question(s) (is_impossible: true) "
                      f"skipped{left}; plausible_answers are not gold answers", SealqWarning, stacklevel=2)
    if not passages:
        raise SealqError(f"{source}: no passages")
    unique: dict[str, Passage] = {}
    for p in passages:
        unique.setdefault(p.key, p)
    if len(unique) < len(passages):
        warnings.warn(f"{source}: {len(passages) - len(unique)} duplicate passage(s) (same title and context) "
                      "dropped; the first copy of each is used", SealqWarning, stacklevel=2)
    return list(unique.values())


#: Largest data or teacher file read (bytes). Files are decoded whole; SQuAD v2.0's training set is 40 MB.
MAX_FILE_BYTES = 1 << 30


class _DuplicateKey(Exception):
    """An object with the same key twice (raised while decoding)."""


def _no_duplicate_keys(pairs: list) -> dict:
    obj = dict(pairs)
    if len(obj) < len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


def _read_json(p: Path, what: str):
    """Decode a JSON file, or raise SealqError naming the file and the problem.

    UTF-8 (with or without a byte order mark), UTF-16 and UTF-32 are read, detected as Python's json
    module does for bytes (RFC 4627: a BOM, or the zero bytes around the first ASCII character). Refused,
    each with its own line: a file over :data:`MAX_FILE_BYTES`, an empty file, malformed JSON, JSON
    Lines, an object with the same key twice (JSON readers keep only one value), nesting too deep to
    decode. ``NaN``/``Infinity`` and numbers are decoded to markers (:class:`_NonFinite`,
    :class:`_Number`) that the loaders refuse or read as text.
    """
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise SealqError(f"{p}: cannot read {what} ({e.strerror or e})") from None
    except MemoryError:
        raise SealqError(f"{p}: too large to read into memory") from None
    if len(raw) > MAX_FILE_BYTES:
        limit = f"{MAX_FILE_BYTES >> 30} GiB" if MAX_FILE_BYTES >= 1 << 30 else f"{MAX_FILE_BYTES} bytes"
        raise SealqError(f"{p}: {what} larger than {limit}; sealq reads it whole: split it or take a subset")
    encoding = json.detect_encoding(raw)  # utf-8, utf-8-sig, utf-16(-le/-be), utf-32(-le/-be)
    if encoding.startswith("utf-8"):
        encoding = "utf-8-sig"  # a BOM is skipped
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as e:
        name = "UTF-8" if encoding.startswith("utf-8") else encoding[:6].upper()  # UTF-16, UTF-32
        raise SealqError(f"{p}: not {name} text (byte {e.start})") from None
    if not text.strip():
        raise SealqError(f"{p}: empty file, expected JSON")
    try:
        return json.loads(text, parse_int=_Number, parse_float=_Number, parse_constant=_NonFinite,
                          object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as e:
        before = e.doc[: e.pos]
        if e.msg == "Extra data" and e.doc[e.pos] in "{[" and "\n" in before[len(before.rstrip()):]:
            raise SealqError(f"{p}: JSON Lines (one JSON value per line) is not supported: give one JSON document "
                             "(a list: wrap the lines in [ ] with commas between them)") from None
        raise SealqError(f"{p}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except _DuplicateKey as e:
        raise SealqError(f"{p}: an object has the key {e.args[0]!r} twice; JSON readers keep only one of the "
                         "values: remove the other") from None
    except RecursionError:
        raise SealqError(f"{p}: JSON nested too deeply to read") from None
    except MemoryError:
        raise SealqError(f"{p}: too large to decode in memory ({len(raw)} bytes)") from None


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
    passages, ``shared/data/squad-dev/gpt41_implications.json``); questions in the file are ignored. The
    file is read as data files are (encodings, numbers as text, NaN refused: see :func:`parse_passages`).
    A second record for the same passage (same title and context) is ignored with a :class:`SealqWarning`.

    Returns:
        Passage key (see :attr:`Passage.key`) -> the non-empty completions, in file order.

    Raises:
        SealqError: the file is unreadable, not JSON, not a list, or a record lacks a field or has a
            mistyped one.
    """
    p = Path(path)
    doc = _read_json(p, "teacher file")
    if not isinstance(doc, list):
        raise SealqError(f"{p}: a teacher file is a list of {{title, context, completions}} records, "
                         f"got {_describe(doc)}")
    out: dict[str, tuple[str, ...]] = {}
    duplicates = 0
    for i, rec in enumerate(doc):
        where = f"{p}: record {i}"
        if not isinstance(rec, dict):
            raise SealqError(f"{where}: expected an object with title/context/completions")
        for key in ("title", "context", "completions"):
            if key not in rec:
                raise SealqError(f"{where}: missing field '{key}'")
        if not isinstance(rec["completions"], list):
            raise SealqError(f"{where}.completions: expected a list of strings, got {_describe(rec['completions'])}")
        comps = []
        for j, c in enumerate(rec["completions"]):
            if isinstance(c, _Number):
                c = c.text
            if not isinstance(c, str):
                raise SealqError(f"{where}.completions[{j}]: expected a string, got {_describe(c)}")
            if c.strip():
                comps.append(_valid_unicode(c, f"{where}.completions[{j}]"))
        if comps:
            key = Passage(_text(rec["title"], f"{where}.title"), _text(rec["context"], f"{where}.context")).key
            if key in out:
                duplicates += 1
            else:
                out[key] = tuple(comps)
    if not out:
        raise SealqError(f"{p}: no record has a non-empty completion")
    if duplicates:
        warnings.warn(f"{p}: {duplicates} more record(s) for a passage already in the file (same title and context) "
                      "ignored; the first record's completions are used", SealqWarning, stacklevel=2)
    return out
