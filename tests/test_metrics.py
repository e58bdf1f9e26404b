"""SQuAD normalization, EM, F1 and contains, against hand-worked examples."""

import pytest

from sealq.engine.metrics import contains, exact_match, f1, normalize, score


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
