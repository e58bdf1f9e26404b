"""The bundled default set and the two SQuAD loaders, on real files."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealq.engine.dataset import load_passages, parse_passages
from sealq.errors import SealqError

from conftest import SHARED


def test_default_set_is_eight_invented_passages():
    ps = load_passages()
    assert len(ps) == 8
    for p in ps:
        assert 60 <= len(p.context.split()) <= 150, p.title
        assert 4 <= len(p.questions) <= 6, p.title
        for q in p.questions:
            assert len(q.answers) == 1 and len(q.answers[0].split()) <= 4
            # the answer is stated in the passage, so it is learnable from it
            assert q.answers[0].lower() in p.context.lower(), (p.title, q.answers[0])


def test_flat_format(tmp_path):
    f = tmp_path / "flat.json"
    f.write_text(json.dumps([{"title": "T", "context": "C text.", "questions": [{"question": "Q?", "answer": "A"}]}]))
    (p,) = load_passages(f)
    assert (p.title, p.context, p.questions[0].question, p.questions[0].answers) == ("T", "C text.", "Q?", ("A",))


def test_official_squad_format_keeps_every_gold_answer(tmp_path):
    doc = {"version": "1.1", "data": [{"title": "Super_Bowl_50", "paragraphs": [{
        "context": "The Denver Broncos defeated the Carolina Panthers.",
        "qas": [{"id": "1", "question": "Who won?", "answers": [
            {"text": "Denver Broncos", "answer_start": 4}, {"text": "Broncos", "answer_start": 11},
            {"text": "Denver Broncos", "answer_start": 4}]}]}]}]}
    f = tmp_path / "squad.json"
    f.write_text(json.dumps(doc))
    (p,) = load_passages(f)
    assert p.title == "Super_Bowl_50"
    assert p.questions[0].answers == ("Denver Broncos", "Broncos")


@pytest.mark.skipif(not (SHARED / "squad.json").exists(), reason="shared SQuAD data not beside the checkout")
def test_real_seal_squad_file():
    ps = load_passages(SHARED / "squad.json")
    assert len(ps) > 1000
    assert all(p.questions for p in ps)
    assert len(load_passages(SHARED / "squad.json", limit=5)) == 5


def test_duplicates_are_dropped_with_a_warning():
    from sealq.errors import SealqWarning

    rec = {"title": "T", "context": "C", "questions": [{"question": "Q", "answer": "A"}]}
    with pytest.warns(SealqWarning, match="1 duplicate passage"):
        assert len(parse_passages([rec, dict(rec)])) == 1


def test_duplicate_warning_is_one_line_on_the_cli(tmp_path):
    from click.testing import CliRunner

    from sealq.cli import cli

    rec = {"title": "T", "context": "C", "questions": [{"question": "Q", "answer": "A"}]}
    data = tmp_path / "d.json"
    data.write_text(json.dumps([rec, rec]))
    result = CliRunner().invoke(cli, ["loop", "--data", str(data), "--model", str(tmp_path / "missing.gguf")])
    assert result.exit_code == 2
    warning, error = result.stderr.strip().splitlines()
    assert warning == f"Warning: {data}: 1 duplicate passage(s) (same title and context) dropped; the first copy of each is used"
    assert error.startswith("Error: ") and "missing.gguf" in error


@pytest.mark.parametrize(
    "content, message",
    [
        (b"{not json", "malformed JSON at line 1"),
        (b"\xff\xfe\x00bad", "not UTF-8"),
        (b'{"foo": 1}', "not a SQuAD-style dataset"),
        (b"[]", "no passages"),
        (b'[{"title": "T", "questions": []}]', "missing field 'context'"),
        (b'[{"title": "T", "context": "C", "questions": []}]', "'questions' must be a non-empty list"),
        (b'[{"title": "T", "context": "  ", "questions": [{"question": "Q", "answer": "A"}]}]', "context: expected a non-empty string"),
        (b'[{"title": "T", "context": "C", "questions": [{"question": "Q"}]}]', "missing field 'answer'"),
        (b'[{"title": "T", "context": "C", "questions": [{"question": "", "answer": "A"}]}]', "question: expected a non-empty string"),
        (b'{"data": [{"title": "T"}]}', "missing field 'paragraphs'"),
        (b'{"data": [{"title": "T", "paragraphs": [{"context": "C", "qas": [{"question": "Q"}]}]}]}',
         r"data\[0\]\.paragraphs\[0\] question 0: missing field 'answer'"),
    ],
)
def test_bad_files_name_the_problem(tmp_path, content, message):
    f = tmp_path / "bad.json"
    f.write_bytes(content)
    with pytest.raises(SealqError, match=message) as e:
        load_passages(f)
    assert str(f) in str(e.value) and "\n" not in str(e.value)


def test_missing_file():
    with pytest.raises(SealqError, match="cannot read data file"):
        load_passages("/nonexistent/data.json")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["title", "context", "questions", "question", "answer", "answers", "data", "paragraphs", "qas", "text"]),
        inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_arbitrary_json_raises_only_sealq_error(doc):
    try:
        parse_passages(doc, "x.json")
    except SealqError:
        pass


_teacher_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["title", "context", "completions", "questions"]), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(_teacher_json)
def test_arbitrary_teacher_file_raises_only_sealq_error(tmp_path_factory, doc):
    from sealq.engine.dataset import load_teacher

    path = tmp_path_factory.mktemp("t") / "teacher.json"
    path.write_text(json.dumps(doc))
    try:
        out = load_teacher(path)
    except SealqError as e:
        assert "\n" not in str(e)
    else:
        assert out and all(isinstance(c, str) and c.strip() for cs in out.values() for c in cs)
