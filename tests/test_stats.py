"""The passage-resampled bootstrap, on cases whose answer is known."""

import numpy as np
import pytest

from sealq.analysis.stats import cluster_bootstrap, paired_difference

pytestmark = pytest.mark.unit  # no model: the unit tier (tests/conftest.py)


def test_constant_scores_have_a_zero_width_interval():
    iv = cluster_bootstrap([[1, 1], [1, 1, 1]])
    assert (iv.estimate, iv.low, iv.high) == (1.0, 1.0, 1.0)


def test_estimate_is_the_micro_average():
    # 3 correct of 4 questions in passage A, 0 of 1 in B -> 3/5
    assert cluster_bootstrap([[1, 1, 1, 0], [0]]).estimate == pytest.approx(0.6)


def test_two_passages_interval_spans_the_cluster_means():
    # resampling {A, B} can give only A+A (1.0), B+B (0.0) or A+B (0.5)
    iv = cluster_bootstrap([[1, 1], [0, 0]], n_boot=4000)
    assert iv.low == 0.0 and iv.high == 1.0 and iv.estimate == 0.5


def test_coverage_matches_the_normal_approximation_for_many_passages():
    rng = np.random.default_rng(1)
    groups = [list(rng.integers(0, 2, 5)) for _ in range(200)]
    iv = cluster_bootstrap(groups, n_boot=4000)
    p = iv.estimate
    # passages are independent here, so the standard error is close to the binomial one
    se = np.sqrt(p * (1 - p) / 1000)
    assert iv.high - iv.low == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_paired_difference_and_alignment():
    a, b = [[1, 1], [1, 0]], [[0, 1], [1, 0]]
    assert paired_difference(a, b).estimate == pytest.approx(0.25)
    with pytest.raises(ValueError):
        paired_difference([[1]], [[1, 0]])
