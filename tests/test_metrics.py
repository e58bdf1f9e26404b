"""SQuAD normalization, EM, F1 and contains, against hand-worked examples."""

import json
import sys
import unicodedata

import pytest
from conftest import SHARED

from sealq.metrics import contains, exact_match, f1, fold, normalize, score

pytestmark = pytest.mark.unit  # no model: the unit tier (tests/conftest.py)

CASES = SHARED.parents[1] / "cases"  # ../shared/cases beside the checkout
SQUAD = SHARED / "squad.json"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The Corkscrew", "corkscrew"),
        ("  an  owl!  ", "owl"),
        ("Skerra Island.", "skerra island"),
        ("A theatre, the opera; an apple", "theatre opera apple"),
        ("Ilse's lamp", "ilses lamp"),  # apostrophe is punctuation in the SQuAD script
        ("Theory of the Anthem", "theory of anthem"),  # 'the' inside words stays
    ],
)
def test_normalize(text, expected):
    assert normalize(text) == expected


def test_exact_match_ignores_case_articles_punctuation():
    assert exact_match("the Corkscrew.", "Corkscrew") == 1.0
    assert exact_match("Corkscrew bridge", "Corkscrew") == 0.0


def test_f1_hand_worked():
    # pred tokens: [tomas, oberlin, engineer]; gold: [tomas, oberlin] -> P=2/3, R=1, F1=0.8
    assert f1("Tomas Oberlin, the engineer", "Tomas Oberlin") == pytest.approx(0.8)
    # no overlap
    assert f1("green", "blue") == 0.0
    # repeated tokens are counted with multiplicity: pred [a.., nine, nine], gold [nine]
    assert f1("nine nine", "nine") == pytest.approx(2 * 0.5 * 1 / 1.5)


def test_contains_is_word_bounded():
    assert contains("It flashes green every nine seconds.", "green") == 1.0
    assert contains("It flashes evergreen light", "green") == 0.0
    assert contains("The Lantern Market is held there", "the Lantern Market") == 1.0


def test_multiple_gold_answers_take_the_best():
    s = score("Denver Broncos", ["Broncos", "Denver Broncos", "Carolina Panthers"])
    assert (s.em, s.f1, s.contains) == (1.0, 1.0, 1.0)
    s = score("the Panthers won", ["Carolina Panthers", "Panthers"])
    assert s.em == 0.0 and s.contains == 1.0
    assert s.f1 == pytest.approx(max(2 * (1 / 2) * (1 / 2) / 1.0, 2 * (1 / 2) * 1 / 1.5))


@pytest.mark.parametrize(
    "prediction, golds, em, f1_",
    [
        # SQuAD v1.1 dev, "Super Bowl 50": golds as the official file lists them
        ("the Denver Broncos", ["Denver Broncos", "Denver Broncos", "Denver Broncos"], 1.0, 1.0),
        ("Santa Clara, California.", ["Santa Clara, California", "Levi's Stadium"], 1.0, 1.0),
        # "levis stadium in santa clara" vs "levis stadium": P = 2/5, R = 1 -> F1 = 4/7
        ("Levi's Stadium in Santa Clara", ["Levi's Stadium", "Santa Clara, California"], 0.0, 4 / 7),
        ("An owl", ["a Owl!"], 1.0, 1.0),
    ],
)
def test_hand_worked_squad_examples(prediction, golds, em, f1_):
    s = score(prediction, golds)
    assert s.em == em and s.f1 == pytest.approx(f1_)


# --- grading that cannot credit a right answer (faults found with inputs from the field) ------------------------------------


def test_f1_and_em_of_answers_that_normalize_to_nothing_follow_the_official_script():
    # evaluate-v1.1.py: normalize_answer("a") == normalize_answer("the") == "" -> EM true;
    # f1_score: num_same == 0 -> return 0, even for two empty token lists
    assert exact_match("a", "the") == 1.0
    assert f1("a", "the") == 0.0
    assert f1("A", "A") == 0.0 and exact_match("A", "A") == 1.0
    assert f1("", "") == 0.0


def test_em_and_f1_do_not_fold_unicode():
    # official script: only string.punctuation is removed, so "1887–1893" stays one token with its en dash
    assert normalize("1887–1893") == "1887–1893"
    assert exact_match("1887-1893", "1887–1893") == 0.0
    assert f1("1887-1893", "1887–1893") == 0.0
    # pred [31, degrees], gold [−31, degrees]: 1 shared -> P = R = 1/2 -> F1 = 1/2
    assert f1("-31 degrees", "−31 degrees") == pytest.approx(0.5)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1887–1893", "1887-1893"),  # en dash
        ("Durrant\u2011Hoske", "Durrant-Hoske"),  # non-breaking hyphen
        ("−31 degrees", "-31 degrees"),  # minus sign (category Sm, not Pd)
        ("1902—1903", "1902-1903"),  # em dash
        ("‘Ilse’s’ “lamp”", "'Ilse's' \"lamp\""),  # curly quotes
        ("5′ 3″", "5' 3''"),  # primes (NFKC splits the double prime)
        ("«Corkscrew»", '"Corkscrew"'),
        ("ﬁre", "fire"),  # NFKC ligature
        ("Amélie", "Amélie"),  # letters are kept, case too
        ("plain ASCII - text", "plain ASCII - text"),
    ],
)
def test_fold(text, expected):
    assert fold(text) == expected


def test_fold_maps_every_unicode_dash():
    dashes = [chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Pd"]
    assert len(dashes) > 20
    assert {ch: fold(ch) for ch in dashes} == dict.fromkeys(dashes, "-")


# (gold, prediction, contains, em, f1), worked by hand
_HAND = {
    # gold-empty-after-normalizing.json
    "A": [
        ("She received the grade A.", 1.0, 0.0, 0.0),
        ("Odile received a B.", 0.0, 0.0, 0.0),  # "a" is the article (case-sensitive fallback)
        ("A is her grade.", 0.0, 0.0, 0.0),  # documented limitation: sentence-initial "A" is the article
        ("A", 1.0, 1.0, 0.0),  # bare answer; F1 of two empty answers is 0 (official script)
        ("A.", 1.0, 1.0, 0.0),
        ("a", 0.0, 1.0, 0.0),  # lower-case "a" is not the grade
        ("The grade was A, the highest mark.", 1.0, 0.0, 0.0),
        ("Teodor Lunn received a B. Odile got an A.", 1.0, 0.0, 0.0),
        ("She took her A-levels.", 0.0, 0.0, 0.0),  # hyphen-joined: not the word "A"
        ("Her grade: “A”.", 1.0, 0.0, 0.0),
        # labels at the start of a line are not the grade (self-QA trains the model on "Q: ... A: ...")
        ("A: She received a B.", 0.0, 0.0, 0.0),
        ("Q: What grade?\nA: B", 0.0, 0.0, 0.0),
        ("A) B", 0.0, 0.0, 0.0),
        ("Reasons:\n- A student got B", 0.0, 0.0, 0.0),  # a line start is a sentence start
        ("A\nBecause she studied.", 1.0, 0.0, 0.0),  # the answer alone on its line
        ("The grade was A: excellent.", 1.0, 0.0, 0.0),
    ],
    "B": [  # "b" is no article: the ordinary path
        ("Teodor Lunn received the grade B.", 1.0, 0.0, 1 / 3),  # P = 1/5, R = 1
        ("B", 1.0, 1.0, 1.0),
        ("Bob", 0.0, 0.0, 0.0),
    ],
    "Professor Wendeline Crake": [
        # pred [examiner, was, professor, wendeline, crake]: P = 3/5, R = 1 -> F1 = 0.75
        ("The examiner was Professor Wendeline Crake.", 1.0, 0.0, 0.75),
        ("Wendeline Crake", 0.0, 0.0, 0.8),
    ],
    # gold-unicode-dashes.json
    "1887–1893": [
        ("The canal was dug in 1887-1893.", 1.0, 0.0, 0.0),
        ("1887–1893", 1.0, 1.0, 1.0),
        ("between 1887—1893", 1.0, 0.0, 0.0),
        ("1887 to 1893", 0.0, 0.0, 0.0),
    ],
    "−31 degrees": [
        ("-31 degrees", 1.0, 0.0, 0.5),
        # pred [it, froze, at, −31, degrees]: P = 2/5, R = 1 -> F1 = 4/7
        ("It froze at −31 degrees.", 1.0, 0.0, 4 / 7),
        ("31 degrees", 1.0, 0.0, 0.5),  # as in SQuAD, the sign is punctuation
        ("-13 degrees", 0.0, 0.0, 0.5),
    ],
    "Amelie Durrant\u2011Hoske": [
        # pred [amelie, durranthoske], gold [amelie, durrant\u2011hoske]: 1 shared -> F1 = 1/2
        ("Amelie Durrant-Hoske", 1.0, 0.0, 0.5),
        ("The chief engineer was Amelie Durrant-Hoske.", 1.0, 0.0, 2 * (1 / 5) * (1 / 2) / (1 / 5 + 1 / 2)),
        ("Amelie Durrant Hoske", 0.0, 0.0, 0.4),  # as in SQuAD, a hyphen joins words
    ],
}


def _case_golds(name):
    path = CASES / name
    if not path.exists():
        pytest.skip(f"{path} not found (../shared beside the clone)")
    return [q["answer"] for p in json.loads(path.read_text(encoding="utf-8")) for q in p["questions"]]


@pytest.mark.parametrize("name", ["gold-empty-after-normalizing.json", "gold-unicode-dashes.json"])
def test_shared_cases_hand_worked(name):
    golds = _case_golds(name)
    assert golds and set(golds) <= set(_HAND)
    for gold in golds:
        for prediction, c, em, f1_ in _HAND[gold]:
            got = (contains(prediction, gold), exact_match(prediction, gold), f1(prediction, gold))
            assert got == (c, em, pytest.approx(f1_)), (prediction, gold)


def test_empty_gold_scores_zero():
    for gold in ["", "   ", "...", "–", "“”", " - "]:
        assert contains("anything - ... at all", gold) == 0.0, gold
        assert contains(gold, gold) == 0.0, gold


def _squad_golds():
    if not SQUAD.exists():
        pytest.skip(f"{SQUAD} not found (../shared beside the clone)")
    return [q["answer"] for p in json.loads(SQUAD.read_text(encoding="utf-8")) for q in p["questions"]]


def _ascii_dashes(text):
    return "".join("-" if unicodedata.category(ch) == "Pd" or ch == "\u2212" else ch for ch in text)


def test_squad_golds_with_unicode_dashes_accept_ascii_dashes():
    golds = _squad_golds()
    dashed = [g for g in golds if _ascii_dashes(g) != g]
    assert dashed  # 54 of 5,665 in the shared file
    for g in dashed:
        assert contains(_ascii_dashes(g), g) == 1.0, g
        assert contains(f"It was {_ascii_dashes(g)}.", g) == 1.0, g


def test_no_gold_is_lost_to_normalization():
    golds = _squad_golds()
    cases = [g for n in ("gold-empty-after-normalizing.json", "gold-unicode-dashes.json")
             if (CASES / n).exists() for g in _case_golds(n)]
    for g in golds + cases:
        assert contains(g, g) == 1.0, g  # the gold as its own prediction
        assert contains(f"The answer is {g}.", g) == 1.0, g

