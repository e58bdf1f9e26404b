"""Directive parsing: bounds, fallbacks recorded, never an exception."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealq.engine.config import Directive, DirectiveBounds
from sealq.engine.directive import parse_directive

pytestmark = pytest.mark.unit  # no model: the unit tier (tests/conftest.py)

D, B = Directive(epochs=8, lr=1e-3, rank=16), DirectiveBounds()


def test_well_formed():
    p = parse_directive("epochs=5 lr=2.0e-4 rank=8", D, B)
    assert p.directive == Directive(5, 2e-4, 8) and p.fallbacks == {}


def test_tolerates_order_and_separators():
    p = parse_directive("Rank: 32, learning rate: 3e-4; epochs: 2", D, B)
    assert p.directive == Directive(2, 3e-4, 32) and not p.fell_back


def test_out_of_range_fields_fall_back_one_by_one():
    p = parse_directive("epochs=10 lr=4.16e-3 rank=80", D, B)
    assert p.directive == Directive(10, D.lr, D.rank)
    assert set(p.fallbacks) == {"lr", "rank"} and "out of range" in p.fallbacks["rank"]


def test_missing_garbage_and_nonfinite():
    assert parse_directive(None, D, B).directive == D
    assert set(parse_directive("", D, B).fallbacks) == {"epochs", "lr", "rank"}
    p = parse_directive("epochs=nan lr=inf rank=-4", D, B)
    assert p.directive == D and len(p.fallbacks) == 3
    p = parse_directive("epochs=2.5 lr=1e-3 rank=16", D, B)
    assert p.directive.epochs == D.epochs and "epochs" in p.fallbacks


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.none(), st.text(max_size=60),
                 st.builds(lambda e, lr, r: f"epochs={e} lr={lr} rank={r}", st.floats(), st.floats(), st.integers())))
def test_any_text_gives_a_directive_within_bounds(text):
    p = parse_directive(text, D, B)
    d = p.directive
    assert B.epochs[0] <= d.epochs <= B.epochs[1] and isinstance(d.epochs, int)
    assert B.lr[0] <= d.lr <= B.lr[1] and math.isfinite(d.lr)
    assert d.rank in B.ranks
