"""The bundled default set and the two SQuAD loaders, on real files."""

import json
import warnings

import pytest
from conftest import SHARED
from hypothesis import given, settings
from hypothesis import strategies as st

from sealq.engine.dataset import load_passages, parse_passages
from sealq.errors import SealqError, SealqWarning

pytestmark = pytest.mark.unit  # no model: the unit tier (tests/conftest.py)


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


@pytest.mark.skipif(not (SHARED / "squad.json").exists(), reason=f"{SHARED / 'squad.json'} not found (../shared beside the clone)")
def test_real_seal_squad_file():
    ps = load_passages(SHARED / "squad.json")
    assert len(ps) > 1000
    assert all(p.questions for p in ps)
    assert len(load_passages(SHARED / "squad.json", limit=5)) == 5


def test_duplicates_are_dropped_with_a_warning():
    rec = {"title": "T", "context": "C", "questions": [{"question": "Q", "answer": "A"}]}
    other = {**rec, "questions": [{"question": "Q2", "answer": "B"}]}  # same title and context: a duplicate
    with pytest.warns(SealqWarning, match="1 duplicate passage"):
        (p,) = parse_passages([rec, other])
    assert [(q.question, q.answers) for q in p.questions] == [("Q", ("A",))]  # the first copy is used


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
        (b"[\xff]", r"not UTF-8 text \(byte 1\)"),
        (b"\xff\xfe[\x00]", r"not UTF-16 text \(byte 4\)"),  # a BOM says UTF-16; an odd number of bytes
        (b'{"foo": 1}', "not a SQuAD-style dataset"),
        (b"[]", "no passages"),
        (b'[{"title": "T", "questions": []}]', "missing field 'context'"),
        (b'[{"title": "T", "context": "C", "questions": []}]', "'questions' must be a non-empty list"),
        (b'[{"title": "T", "context": "  ", "questions": [{"question": "Q", "answer": "A"}]}]', "context: expected a non-empty string"),
        (b'[{"title": "T", "context": "C", "questions": [{"question": "Q"}]}]', "missing field 'answer'"),
        (b'[{"title": "T", "context": "C", "questions": [{"question": "", "answer": "A"}]}]', "question: expected a non-empty string"),
        (b'{"data": [{"title": "T"}]}', "missing field 'paragraphs'"),
        (b'{"data": [{"title": "T", "paragraphs": [{"context": "C", "qas": [{"question": "Q"}]}]}]}',
         r"data\[0\]\.paragraphs\[0\] question 0: missing field 'answers'"),  # official field names
        (b'{"data": [{"title": "T", "paragraphs": [{"context": "C", "qas": []}]}]}',
         r"data\[0\]\.paragraphs\[0\]: 'qas' must be a non-empty list, got an empty list"),
    ],
)
def test_bad_files_name_the_problem(tmp_path, content, message):
    f = tmp_path / "bad.json"
    f.write_bytes(content)
    with pytest.raises(SealqError, match=message) as e:
        load_passages(f)
    assert str(f) in str(e.value) and "\n" not in str(e.value)


def test_missing_file(tmp_path):
    """One line naming the file, what it was read as, and the OS's reason; the same for a teacher file."""
    from sealq.engine.dataset import load_teacher

    with pytest.raises(SealqError) as e:
        load_passages("/nonexistent/data.json")
    assert str(e.value) == "/nonexistent/data.json: cannot read data file (No such file or directory)"
    with pytest.raises(SealqError) as e:
        load_teacher(tmp_path / "none.json")
    assert str(e.value) == f"{tmp_path / 'none.json'}: cannot read teacher file (No such file or directory)"


# text includes a lone surrogate (JSON may spell one: "\\ud800"), a number-like string and blanks
_leaf_text = st.text(max_size=8) | st.sampled_from(["\ud800", "1887", " ", "nan"])
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | _leaf_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["title", "context", "questions", "question", "answer", "answers", "data", "paragraphs",
                         "qas", "text", "is_impossible", "plausible_answers"]),
        inner | st.booleans(), max_size=5),
    max_leaves=25,
)

# near-valid documents in both formats, each field either good text or one of the values the hunt of issue
# 14 found trouble with (NaN, infinities, numbers, a lone surrogate, null, nesting, blanks)
_odd = st.sampled_from([float("nan"), float("inf"), float("-inf"), 1887, 3.5, 10 ** 30, True, None, "\ud800",
                        "a\ud800b", " ", "", [["x"]], {"text": "x"}, [], {}])
_field = st.one_of(*[st.text(min_size=1, max_size=6)] * 5, _odd)  # mostly good, so some documents load
_question = st.fixed_dictionaries(
    {"question": _field},
    optional={"answer": _field | st.lists(_field, max_size=3), "answers": st.lists(_field | st.fixed_dictionaries(
        {"text": _field, "answer_start": st.integers() | _odd}), max_size=3) | _odd,
              "is_impossible": st.booleans() | _odd, "plausible_answers": st.lists(_field, max_size=2)})
_questions = st.one_of(*[st.lists(_question, min_size=1, max_size=3)] * 5, _odd)
_flat_doc = st.lists(st.fixed_dictionaries({"title": _field, "context": _field, "questions": _questions}),
                     min_size=1, max_size=3)
_official_doc = st.fixed_dictionaries({"version": st.just("v2.0"), "data": st.lists(st.fixed_dictionaries(
    {"title": _field, "paragraphs": st.lists(st.fixed_dictionaries({"context": _field, "qas": _questions}),
                                             min_size=1, max_size=2)}), min_size=1, max_size=2)})
_json = _json | _flat_doc | _official_doc


def _leaves(doc) -> set[str]:
    """The texts a loader may read from ``doc``: its strings (stripped), and its numbers as JSON writes
    them; never the text of a NaN or an infinity, a boolean or null."""
    if isinstance(doc, dict):
        return set().union(*map(_leaves, doc.values())) | {"article 0", "article 1", "article 2", "article 3"}
    if isinstance(doc, list):
        return set().union(*map(_leaves, doc))
    if isinstance(doc, str):
        return {doc.strip()}
    if isinstance(doc, bool) or doc is None:
        return set()
    if isinstance(doc, float) and doc - doc != 0:
        return set()
    return {json.dumps(doc)}


def _check_passages(ps, doc):
    """What a successful load promises: passages whose texts are strings or numbers of the document
    (stripped, non-empty, UTF-8-encodable; a NaN is never read as "nan"), at least one distinct gold answer
    per question, no duplicate keys."""
    assert ps and len({p.key for p in ps}) == len(ps)
    allowed = _leaves(doc)
    for p in ps:
        assert p.questions
        for q in p.questions:
            assert q.answers and len(set(q.answers)) == len(q.answers)
        for t in [p.title, p.context] + [t for q in p.questions for t in (q.question, *q.answers)]:
            assert isinstance(t, str) and t and t == t.strip() and t in allowed, (t, doc)
            t.encode("utf-8")


@settings(max_examples=300, deadline=None)
@given(_json)
def test_arbitrary_json_raises_only_sealq_error(doc):
    """Arbitrary decoded JSON: a SealqError with one line naming the source, or passages that keep
    every promise of :func:`_check_passages`; nothing else (any other exception fails the test)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SealqWarning)
            ps = parse_passages(doc, "x.json")
    except SealqError as e:
        assert str(e).startswith("x.json: ") and "\n" not in str(e)
    else:
        _check_passages(ps, doc)


@settings(max_examples=200, deadline=None)
@given(_json, st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32"]),
       st.booleans())
def test_arbitrary_json_file_raises_only_sealq_error(tmp_path_factory, doc, encoding, jsonl):
    """The same through a file: NaN/Infinity literals (json.dumps writes them), any of the encodings JSON
    allows, with or without a BOM, and JSON Lines."""
    path = tmp_path_factory.mktemp("d") / "data.json"
    if jsonl and isinstance(doc, list):
        text = "\n".join(json.dumps(x) for x in doc)
    else:
        text = json.dumps(doc)
    path.write_bytes(text.encode(encoding))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SealqWarning)
            ps = load_passages(path)
    except SealqError as e:
        assert str(e).startswith(f"{path}: ") and "\n" not in str(e)
    else:
        _check_passages(ps, doc)


_teacher_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | _leaf_text,
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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SealqWarning)
            out = load_teacher(path)
    except SealqError as e:
        assert str(e).startswith(f"{path}: ") and "\n" not in str(e)
    else:
        assert out and all(isinstance(c, str) and c.strip() for cs in out.values() for c in cs)
        for cs in out.values():
            for c in cs:
                c.encode("utf-8")
