"""Splitting self-edits into training items, and SEAL's training sequences."""

import pytest

from sealq.engine.config import EDIT_TYPES
from sealq.engine.dataset import Passage, Question
from sealq.engine.selfedit import PROMPTS, edit_messages, grounding, split_items, training_texts

pytestmark = pytest.mark.unit  # no model: the unit tier (tests/conftest.py)

P = Passage("Quellberry", "The quellberry is a purple fruit.", (Question("Colour?", ("purple",)),))


def test_implications_lines_lose_bullets_numbers_and_headers():
    text = "**Implications:**\n\n1. The quellberry is purple.\n- It grows in valleys of Ostrava.\n* It  is dried\u2022\n2) Vesk is made from it.\nok\n1. The quellberry is purple."
    assert split_items(text, "implications", 10) == [
        "The quellberry is purple.", "It grows in valleys of Ostrava.", "It  is dried\u2022", "Vesk is made from it.",
    ]


def test_self_qa_pairs_become_one_item_each():
    text = "Q: What colour is it?\nA: Purple.\nQuestion 2: Where does it grow?\nAnswer 2: In the Ostrava Range.\nQ: dangling"
    items = split_items(text, "self-qa", 10)
    assert items == ["Q: What colour is it?\nA: Purple.", "Q: Where does it grow?\nA: In the Ostrava Range."]


def test_max_items_and_empty():
    assert len(split_items("\n".join(f"fact number {i} here" for i in range(30)), "rewrite", 5)) == 5
    assert split_items("", "implications", 5) == []
    assert split_items("ok\n\n  \n-", "implications", 5) == []


def test_training_texts_follow_seal():
    assert training_texts(P, ["It is purple.", "It is a fruit."]) == [
        "Quellberry\nIt is purple.", "Quellberry\nIt is a fruit.", "Quellberry\nThe quellberry is a purple fruit.",
    ]
    # --train-on items: the items alone; with no items the passage is kept (never an empty training set)
    assert training_texts(P, ["It is purple."], with_passage=False) == ["Quellberry\nIt is purple."]
    assert training_texts(P, [], with_passage=False) == ["Quellberry\nThe quellberry is a purple fruit."]


def test_prompts_contain_the_passage():
    assert tuple(PROMPTS) == EDIT_TYPES  # one prompt per edit type the CLI accepts, and no other
    for edit_type in PROMPTS:
        (msg,) = edit_messages(P, edit_type)
        assert msg["role"] == "user" and P.context in msg["content"] and P.title in msg["content"]


def test_lines_that_start_with_header_words_are_kept():
    text = "Implications:\nNotes from the keeper were kept in a red logbook.\nImplications of the storm reached the island."
    assert split_items(text, "implications", 10) == [
        "Notes from the keeper were kept in a red logbook.", "Implications of the storm reached the island.",
    ]


def test_q_dot_a_dot_pairs_and_list_letters():
    assert split_items("Q. What colour is it?\nA. Purple, always.", "self-qa", 5) == ["Q: What colour is it?\nA: Purple, always."]
    assert split_items("a) The fruit is purple.\nb) It grows high up.", "implications", 5) == [
        "The fruit is purple.", "It grows high up."]


def test_copied_ngram_share_hand_worked():
    from sealq.metrics import copied_ngram_share

    passage = "Alpha beta gamma delta epsilon were the first five."
    # 6 words -> two 5-grams; the first is in the passage, the second ("... epsilon zeta") is not
    assert copied_ngram_share("alpha beta gamma delta epsilon zeta", passage) == 0.5
    # normalization: case, punctuation and articles do not count
    assert copied_ngram_share("The ALPHA, beta gamma delta epsilon!", passage) == 1.0
    assert copied_ngram_share("zeta eta theta iota kappa", passage) == 0.0
    assert copied_ngram_share("alpha beta gamma", passage) == 0.0  # fewer words than n
    assert copied_ngram_share("alpha beta gamma", passage, n=2) == 1.0


def test_long_implication_lists_split_like_implications():
    text = "1. The quellberry is purple.\n2. It grows in valleys of Ostrava.\n3. Vesk is made from it."
    for edit_type in ("implications-long", "implications-very-long"):
        assert split_items(text, edit_type, 10) == split_items(text, "implications", 10)
        assert "long list of implications" in edit_messages(P, edit_type)[0]["content"]


GROUNDED = "The quellberry is a purple fruit."
INVENTED = "Quellberries cure headaches in winter."
PLUMS = "Plums are purple fruit too."


def test_grounding_is_the_share_of_an_items_words_in_the_passage():
    assert grounding(GROUNDED, P.context) == 1.0
    assert grounding(INVENTED, P.context) == 0.0
    assert grounding(PLUMS, P.context) == 0.4  # "purple" and "fruit" of its 5 words
    assert grounding("", P.context) == 0.0


def test_min_grounding_drops_ungrounded_items_before_the_cap():
    text = "\n".join([INVENTED, PLUMS, GROUNDED])
    assert split_items(text, "implications", 10) == [INVENTED, PLUMS, GROUNDED]  # off by default
    assert split_items(text, "implications", 10, P.context, min_grounding=0.4) == [PLUMS, GROUNDED]
    assert split_items(text, "implications", 1, P.context, min_grounding=0.5) == [GROUNDED]
    assert split_items(text, "rewrite", 10, P.context, min_grounding=1.0) == [GROUNDED]
