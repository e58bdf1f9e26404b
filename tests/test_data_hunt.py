"""Faults found with inputs from the field: data and teacher files that used to give a traceback, a silent wrong result or a
misleading message. One test per kind found, on the loaders (the exact value loaded, or the exact
error), then the same files through the real CLI: exit code 2, exactly one `Error:` line, no run recorded.
docs/errors.md lists these cases."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import sqlite_utils
from click.testing import CliRunner

from sealq.cli import cli
from sealq.engine import dataset
from sealq.engine.dataset import load_passages, load_teacher, parse_passages
from sealq.errors import SealqError, SealqWarning

pytestmark = pytest.mark.unit  # no model: the unit tier (tests/conftest.py)

GOOD = {"title": "T", "context": "Some passage text.", "questions": [{"question": "Q?", "answer": "A"}]}
TEACHER = {"title": "T", "context": "Some passage text.", "completions": ["An implication."]}


def _file(tmp: Path, content, name: str = "data.json") -> Path:
    path = tmp / name
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return path


def _flat(answer_json: str = '"A"', title_json: str = '"T"') -> bytes:
    """A one-passage flat file with the answer and title spelled as given (raw JSON text)."""
    return (f'[{{"title": {title_json}, "context": "Some passage text.", '
            f'"questions": [{{"question": "Q?", "answer": {answer_json}}}]}}]').encode()


def _one(path) -> tuple:
    (p,) = load_passages(path)
    return p.title, p.context, [(q.question, q.answers) for q in p.questions]


def _error(call, path) -> str:
    """The message of the SealqError ``call(path)`` raises, with the path replaced by P; one line."""
    with pytest.raises(SealqError) as e:
        call(path)
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    return "P" + message[len(str(path)):]


# --- encodings ---------------------------------------------------------------------------------------

def test_utf8_bom_is_accepted(tmp_path):
    """Notepad and PowerShell write a BOM; it used to be accepted already (utf-8-sig); kept."""
    path = _file(tmp_path, b"\xef\xbb\xbf" + json.dumps([GOOD]).encode())
    assert _one(path) == ("T", "Some passage text.", [("Q?", ("A",))])
    teacher = _file(tmp_path, b"\xef\xbb\xbf" + json.dumps([TEACHER]).encode(), "t.json")
    assert list(load_teacher(teacher).values()) == [("An implication.",)]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-be"])
def test_utf16_and_utf32_are_read(tmp_path, encoding):
    """Was: `not UTF-8 text (byte 0)` with a BOM, and `malformed JSON at line 1 column 1` without one
    (UTF-16-BE's zero bytes decode as UTF-8). Now read as json.loads reads bytes (RFC 4627 detection)."""
    path = _file(tmp_path, json.dumps([{**GOOD, "title": "Zürich ✓"}]).encode(encoding))
    assert _one(path) == ("Zürich ✓", "Some passage text.", [("Q?", ("A",))])
    teacher = _file(tmp_path, json.dumps([TEACHER]).encode(encoding), "t.json")
    assert list(load_teacher(teacher).values()) == [("An implication.",)]


def test_broken_utf16_names_the_encoding(tmp_path):
    path = _file(tmp_path, b"\xff\xfe" + "[]".encode("utf-16-le") + b"\x00")  # a byte short
    assert _error(load_passages, path) == "P: not UTF-16 text (byte 6)"


def test_lone_surrogate_is_refused(tmp_path):
    """JSON may spell a lone surrogate ("\\ud800"); it was a UnicodeEncodeError traceback (in Passage.key)."""
    path = _file(tmp_path, _flat(title_json='"T\\ud800"'))
    assert _error(load_passages, path) == "P: passage 0.title: invalid Unicode, a lone surrogate \\ud800 at character 1"
    path = _file(tmp_path, _flat(answer_json='"\\udc00"'))
    assert _error(load_passages, path) == ("P: passage 0 question 0.answers[0]: invalid Unicode, a lone surrogate "
                                           "\\udc00 at character 0")
    teacher = _file(tmp_path, b'[{"title": "T", "context": "C", "completions": ["ok\\ud800"]}]', "t.json")
    assert _error(load_teacher, teacher) == ("P: record 0.completions[0]: invalid Unicode, a lone surrogate \\ud800 "
                                             "at character 2")


# --- NaN and numbers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused_where_text_is_expected(tmp_path, literal):
    """Python's json accepts these non-JSON literals; was `got float` (or, with numbers read as text,
    would have become the answer "nan"). Now named as what they are."""
    path = _file(tmp_path, _flat(answer_json=literal))
    assert _error(load_passages, path) == (f"P: passage 0 question 0.answers[0]: expected a non-empty string, "
                                           f"got {literal} (not a JSON value)")
    path = _file(tmp_path, _flat(title_json=literal))
    assert _error(load_passages, path) == f"P: passage 0.title: expected a non-empty string, got {literal} (not a JSON value)"
    teacher = _file(tmp_path, f'[{{"title": "T", "context": "C", "completions": ["x", {literal}]}}]'.encode(), "t.json")
    assert _error(load_teacher, teacher) == f"P: record 0.completions[1]: expected a string, got {literal} (not a JSON value)"


def test_nan_in_a_field_sealq_does_not_read_is_ignored(tmp_path):
    path = _file(tmp_path, b'{"data": [{"title": "T", "paragraphs": [{"context": "C", "qas": [{"question": "Q", '
                           b'"answers": [{"text": "A", "answer_start": NaN}]}]}]}]}')
    assert _one(path) == ("T", "C", [("Q", ("A",))])


@pytest.mark.parametrize("literal, text", [("1887", "1887"), ("3.50", "3.50"), ("1e3", "1e3"), ("-0", "-0")])
def test_numbers_are_read_as_the_text_in_the_file(tmp_path, literal, text):
    """Was refused (`got int`). SQuAD answers are strings, but a hand-made file may write a year as a
    number: it is read as exactly the digits written (3.50 stays "3.50", not 3.5)."""
    path = _file(tmp_path, _flat(answer_json=literal, title_json=literal))
    assert _one(path) == (text, "Some passage text.", [("Q?", (text,))])
    teacher = _file(tmp_path, f'[{{"title": {literal}, "context": "Some passage text.", "completions": [{literal}]}}]'
                    .encode(), "t.json")
    assert load_teacher(teacher) == {dataset.Passage(text, "Some passage text.").key: (text,)}


def test_a_number_too_long_for_python_int_is_no_traceback(tmp_path):
    """Was a ValueError traceback (Python converts at most 4300 digits); numbers are no longer converted."""
    path = _file(tmp_path, _flat(answer_json="9" * 5000))
    assert _one(path)[2] == [("Q?", ("9" * 5000,))]


def test_numbers_in_a_document_built_in_python():
    (p,) = parse_passages([{**GOOD, "title": 1999, "questions": [{"question": "Q", "answer": [1887, 2.5]}]}])
    assert (p.title, p.questions[0].answers) == ("1999", ("1887", "2.5"))
    with pytest.raises(SealqError, match=r"^x: passage 0\.title: expected a non-empty string, got NaN \(not a JSON value\)$"):
        parse_passages([{**GOOD, "title": float("nan")}], "x")


@pytest.mark.parametrize("answer", [".", " -- ", "$", "_"])
def test_an_answer_with_no_letter_or_digit_is_refused(tmp_path, answer):
    """Was accepted: such a gold answer normalizes to nothing, so `contains` never matches it and EM
    matches an empty prediction; the question could never be learned."""
    path = _file(tmp_path, _flat(answer_json=json.dumps(answer)))
    assert _error(load_passages, path) == (f"P: passage 0 question 0.answers[0]: {answer.strip()!r} has no letter or "
                                           "digit, so no prediction can match it")


def test_booleans_are_refused_by_their_json_name(tmp_path):
    path = _file(tmp_path, _flat(answer_json="true"))
    assert _error(load_passages, path) == "P: passage 0 question 0.answers[0]: expected a non-empty string, got true"


# --- wrong shapes --------------------------------------------------------------------------------------

@pytest.mark.parametrize("record, message", [
    ({**GOOD, "questions": [{"question": "Q?", "answer": [["x"]]}]},
     "P: passage 0 question 0.answers[0]: expected a non-empty string, got a list"),
    ({**GOOD, "questions": {"question": "Q?", "answer": "A"}},
     "P: passage 0: 'questions' must be a non-empty list, got an object"),
    ({**GOOD, "context": ["Some", "text"]}, "P: passage 0.context: expected a non-empty string, got a list"),
    ({**GOOD, "title": None}, "P: passage 0.title: expected a non-empty string, got null"),
    ({**GOOD, "questions": [{"question": "Q?", "answer": None}]},
     "P: passage 0 question 0.answers[0]: expected a non-empty string, got null"),
    ({**GOOD, "questions": [{"question": "Q?", "answers": []}]}, "P: passage 0 question 0: no gold answer"),
    ({**GOOD, "questions": [{"question": "Q?", "answer": {"start": 3}}]},
     "P: passage 0 question 0.answers[0]: expected a non-empty string, got null"),
])
def test_wrong_shapes_name_field_and_type(tmp_path, record, message):
    """Nested lists, a dict for a list, null: named with the JSON type ("got null", was "got nothing")."""
    assert _error(load_passages, _file(tmp_path, [record])) == message


def test_a_where_key_in_a_record_cannot_move_the_error(tmp_path):
    """The loader used to keep its own `_where` in the record dict: a record with that key set the place
    named in the error (`5.title: ...`, no file)."""
    path = _file(tmp_path, [{**GOOD, "_where": 5, "title": None}])
    assert _error(load_passages, path) == "P: passage 0.title: expected a non-empty string, got null"


def test_official_format_errors_use_its_field_names(tmp_path):
    """Was `'questions' must be a non-empty list` / `missing field 'answer'` for a file whose fields are
    `qas` and `answers`."""
    doc = {"data": [{"title": "T", "paragraphs": [{"context": "C", "qas": []}]}]}
    assert _error(load_passages, _file(tmp_path, doc)) == "P: data[0].paragraphs[0]: 'qas' must be a non-empty list, got an empty list"
    doc = {"data": [{"title": "T", "paragraphs": [{"context": "C", "qas": [{"question": "Q"}]}]}]}
    assert _error(load_passages, _file(tmp_path, doc)) == "P: data[0].paragraphs[0] question 0: missing field 'answers'"


def test_a_paragraph_title_does_not_replace_the_article_title(tmp_path):
    doc = {"data": [{"title": "Article", "paragraphs": [{"title": "x", "context": "C",
                                                         "qas": [{"question": "Q", "answers": [{"text": "A"}]}]}]}]}
    assert _one(_file(tmp_path, doc))[0] == "Article"


# --- JSON that Python reads but should not be trusted ------------------------------------------------

def test_duplicate_keys_are_refused(tmp_path):
    """Was: the last value silently won (a second "answer" replaced the first)."""
    path = _file(tmp_path, b'[{"title": "T", "context": "C", "questions": [{"question": "Q", "answer": "A", "answer": "B"}]}]')
    assert _error(load_passages, path) == ("P: an object has the key 'answer' twice; JSON readers keep only one of "
                                           "the values: remove the other")
    teacher = _file(tmp_path, b'[{"title": "T", "context": "C", "completions": ["x"], "completions": ["y"]}]', "t.json")
    assert "the key 'completions' twice" in _error(load_teacher, teacher)


def test_deep_nesting_is_refused(tmp_path):
    """Was a RecursionError traceback from json."""
    path = _file(tmp_path, b"[" * 100_000 + b"]" * 100_000)
    assert _error(load_passages, path) == "P: JSON nested too deeply to read"
    assert _error(load_teacher, path) == "P: JSON nested too deeply to read"
    path = _file(tmp_path, b'{"data": ' * 50_000 + b"1" + b"}" * 50_000)
    assert _error(load_passages, path) == "P: JSON nested too deeply to read"


def test_file_over_the_size_limit_is_refused(tmp_path, monkeypatch):
    """Files are read whole; a file over 1 GiB (or an endless one, /dev/zero) is refused after reading at
    most that much, instead of exhausting memory."""
    monkeypatch.setattr(dataset, "MAX_FILE_BYTES", 100)
    path = _file(tmp_path, [{**GOOD, "title": f"T{i}"} for i in range(10)])
    assert _error(load_passages, path) == "P: data file larger than 100 bytes; sealq reads it whole: split it or take a subset"
    assert _error(load_teacher, path).startswith("P: teacher file larger than")
    monkeypatch.setattr(dataset, "MAX_FILE_BYTES", 1 << 30)
    assert len(load_passages(path)) == 10


def test_empty_file(tmp_path):
    """Was `malformed JSON at line 1 column 1: Expecting value`."""
    assert _error(load_passages, _file(tmp_path, b"")) == "P: empty file, expected JSON"
    assert _error(load_passages, _file(tmp_path, b" \n\t")) == "P: empty file, expected JSON"


def test_json_lines_is_refused_by_name(tmp_path):
    """Was `malformed JSON at line 2 column 1: Extra data`. JSON Lines is not supported."""
    path = _file(tmp_path, b"\n".join(json.dumps(GOOD).encode() for _ in range(3)) + b"\n")
    message = ("P: JSON Lines (one JSON value per line) is not supported: give one JSON document (a list: wrap the "
               "lines in [ ] with commas between them)")
    assert _error(load_passages, path) == message
    assert _error(load_teacher, _file(tmp_path, b"\n".join([json.dumps(TEACHER).encode()] * 2), "t.json")) == message
    # extra data that is not a second record stays "malformed JSON"
    assert _error(load_passages, _file(tmp_path, json.dumps([GOOD]).encode() + b"\n]")).startswith("P: malformed JSON at line 2")


def test_a_single_passage_object_says_to_wrap_it(tmp_path):
    """Was `not a SQuAD-style dataset` (a one-line JSONL file, or a list's brackets forgotten)."""
    assert _error(load_passages, _file(tmp_path, GOOD)) == (
        "P: a single passage object; a data file is a list of passages (wrap it in [ ]) or SQuAD's object with 'data'")
    assert _error(load_teacher, _file(tmp_path, TEACHER, "t.json")) == (
        "P: a teacher file is a list of {title, context, completions} records, got an object")


# --- SQuAD 2.0 ---------------------------------------------------------------------------------------------

def _squad2(*qas) -> dict:
    return {"version": "v2.0", "data": [{"title": "T", "paragraphs": [{"context": "C", "qas": list(qas)}]}]}


_IMPOSSIBLE = {"question": "Who?", "id": "1", "answers": [], "is_impossible": True,
               "plausible_answers": [{"text": "X", "answer_start": 0}]}
_POSSIBLE = {"question": "What?", "id": "2", "answers": [{"text": "A", "answer_start": 0}], "is_impossible": False}


def test_squad2_unanswerable_questions_are_skipped_with_a_warning(tmp_path):
    """Was skipped silently (and plausible_answers never read); now counted in one warning line."""
    doc = _squad2(_IMPOSSIBLE, _POSSIBLE)
    doc["data"][0]["paragraphs"].append({"context": "D", "qas": [_IMPOSSIBLE]})
    path = _file(tmp_path, doc)
    with pytest.warns(SealqWarning) as w:
        ps = load_passages(path)
    assert [(p.context, [(q.question, q.answers) for q in p.questions]) for p in ps] == [("C", [("What?", ("A",))])]
    assert [str(x.message) for x in w] == [
        f"{path}: 2 unanswerable SQuAD 2.0 question(s) (is_impossible: true) skipped, and 1 passage(s) left with "
        "none; plausible_answers are not gold answers"]


def test_squad2_with_only_unanswerable_questions(tmp_path):
    """Was `no passages`, which did not say why."""
    path = _file(tmp_path, _squad2(_IMPOSSIBLE, _IMPOSSIBLE))
    assert _error(load_passages, path) == ("P: no answerable question: all 2 question(s) are SQuAD 2.0 unanswerable "
                                           "ones (is_impossible: true)")


def test_squad2_is_impossible_must_be_a_boolean(tmp_path):
    """Was: any truthy value (the string "false"!) skipped the question silently."""
    path = _file(tmp_path, _squad2({**_POSSIBLE, "is_impossible": "false"}))
    assert _error(load_passages, path) == ("P: data[0].paragraphs[0] question 0.is_impossible: expected true or false, "
                                           "got the string 'false'")


def test_is_impossible_in_the_flat_format(tmp_path):
    """Was `expected a non-empty string, got an empty string` for the empty answer of an unanswerable question."""
    path = _file(tmp_path, [{**GOOD, "questions": [{"question": "Who?", "answer": "", "is_impossible": True},
                                                   {"question": "Q?", "answer": "A"}]}])
    with pytest.warns(SealqWarning, match="1 unanswerable SQuAD 2.0 question"):
        assert _one(path) == ("T", "Some passage text.", [("Q?", ("A",))])


# --- teacher files ---------------------------------------------------------------------------------------

def test_teacher_completion_errors_name_the_item(tmp_path):
    """Was `record 0.completions: expected a list of strings` for any bad item."""
    path = _file(tmp_path, [{**TEACHER, "completions": ["ok", None]}], "t.json")
    assert _error(load_teacher, path) == "P: record 0.completions[1]: expected a string, got null"
    path = _file(tmp_path, [{**TEACHER, "completions": "one string"}], "t.json")
    assert _error(load_teacher, path) == "P: record 0.completions: expected a list of strings, got the string 'one string'"


def test_teacher_duplicate_record_warns(tmp_path):
    """Was: the second record for a passage was ignored silently (its completions lost)."""
    path = _file(tmp_path, [TEACHER, {**TEACHER, "completions": ["Another."]}], "t.json")
    with pytest.warns(SealqWarning) as w:
        out = load_teacher(path)
    assert list(out.values()) == [("An implication.",)]
    assert [str(x.message) for x in w] == [
        f"{path}: 1 more record(s) for a passage already in the file (same title and context) ignored; the first "
        "record's completions are used"]


def test_bundled_data_loads_without_warnings():
    """The stricter reader (duplicate keys, NaN, encodings) finds nothing to say about the bundled set."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ps = load_passages()
    assert len(ps) == 8 and ps[0].key == dataset.Passage(ps[0].title, ps[0].context).key


# --- through the CLI ---------------------------------------------------------------------------------------

def _deep(t: Path) -> str:
    return str(_file(t, b"[" * 100_000 + b"]" * 100_000))


# (case id, argv builder, the one error line's text after "Error: <file>: ")
CLI_CASES = [
    ("nan-answer", lambda t: ["loop", "--data", str(_file(t, _flat(answer_json="NaN")))],
     "passage 0 question 0.answers[0]: expected a non-empty string, got NaN (not a JSON value)"),
    ("deep-nesting", lambda t: ["loop", "--data", _deep(t)], "JSON nested too deeply to read"),
    ("huge-integer", lambda t: ["loop", "--data", str(_file(t, _flat(title_json="9" * 5000, answer_json="true")))],
     "passage 0 question 0.answers[0]: expected a non-empty string, got true"),
    ("lone-surrogate", lambda t: ["loop", "--data", str(_file(t, _flat(title_json='"\\ud800"')))],
     "passage 0.title: invalid Unicode, a lone surrogate \\ud800 at character 0"),
    ("duplicate-key", lambda t: ["loop", "--data", str(_file(t, b'[{"title": "T", "title": "U"}]'))],
     "an object has the key 'title' twice"),
    ("json-lines", lambda t: ["loop", "--data", str(_file(t, b"\n".join([json.dumps(GOOD).encode()] * 2)))],
     "JSON Lines (one JSON value per line) is not supported"),
    ("empty-file", lambda t: ["loop", "--data", str(_file(t, b""))], "empty file, expected JSON"),
    ("squad2-only-unanswerable", lambda t: ["loop", "--data", str(_file(t, _squad2(_IMPOSSIBLE)))],
     "no answerable question: all 1 question(s) are SQuAD 2.0 unanswerable ones"),
    ("teacher-nan", lambda t: ["eval", "--teacher", str(_file(t, b'[{"title": "T", "context": "C", "completions": [NaN]}]'))],
     "record 0.completions[0]: expected a string, got NaN (not a JSON value)"),
    ("teacher-deep", lambda t: ["eval", "--teacher", _deep(t)], "JSON nested too deeply to read"),
]


@pytest.mark.parametrize("case, argv, message", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_bad_data_on_the_cli(case, argv, message, tmp_path, workspace):
    args = argv(tmp_path) + ["--model", str(tmp_path / "missing.gguf")]  # never reaches the model
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {tmp_path}") and message in lines[0], result.stderr
    assert not (workspace / "runs.db").exists() or sqlite_utils.Database(str(workspace / "runs.db"))["runs"].count == 0


@pytest.mark.parametrize("content", [
    b"\xef\xbb\xbf" + json.dumps([GOOD]).encode(),
    json.dumps([GOOD]).encode("utf-16"),
    _flat(answer_json="1887"),
], ids=["bom", "utf-16", "number-answer"])
def test_accepted_data_on_the_cli_reaches_the_model(content, tmp_path):
    """Data that now loads: the run goes on to the (missing) model, whose error is the only line."""
    result = CliRunner().invoke(cli, ["loop", "--data", str(_file(tmp_path, content)),
                                      "--model", str(tmp_path / "missing.gguf")])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"Error: model '{tmp_path / 'missing.gguf'}': no such file and not a known model (smollm2-135m)"]


def test_squad2_warning_on_the_cli_is_one_line(tmp_path):
    data = _file(tmp_path, _squad2(_IMPOSSIBLE, _POSSIBLE))
    result = CliRunner().invoke(cli, ["loop", "--data", str(data), "--model", str(tmp_path / "missing.gguf")])
    warning, error = result.stderr.strip().splitlines()
    assert warning == (f"Warning: {data}: 1 unanswerable SQuAD 2.0 question(s) (is_impossible: true) skipped; "
                       "plausible_answers are not gold answers")
    assert error.startswith("Error: model ") and result.exit_code == 2
