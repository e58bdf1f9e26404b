"""Uncertainty for small question sets: bootstrap confidence intervals resampled by passage.

Questions about one passage are not independent (one adapter answers them all), so the bootstrap
resamples whole passages with replacement and recomputes the micro-average over their questions
(a cluster bootstrap; Efron & Tibshirani 1993, ch. 13 / Field & Welsh 2007). Paired differences between
two conditions are resampled with the same passages on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Interval", "cluster_bootstrap", "paired_difference", "format_interval"]


@dataclass(frozen=True)
class Interval:
    """A point estimate with a percentile bootstrap interval.

    Args:
        estimate: the statistic on the real data.
        low, high: the (alpha/2, 1 - alpha/2) percentiles of the bootstrap distribution.
        level: the interval's nominal coverage, e.g. 0.95.
    """

    estimate: float
    low: float
    high: float
    level: float = 0.95

    def as_dict(self) -> dict:
        """``{"estimate", "low", "high"}`` (JSON for summaries and tables)."""
        return {"estimate": self.estimate, "low": self.low, "high": self.high}


def format_interval(x: dict, signed: bool = False) -> str:
    """``"0.136 [0.100, 0.172]"`` from :meth:`Interval.as_dict` output; ``signed`` for differences."""
    f = "+.3f" if signed else ".3f"
    return f"{x['estimate']:{f}} [{x['low']:{f}}, {x['high']:{f}}]"


def _micro(sums: np.ndarray, counts: np.ndarray, idx: np.ndarray) -> np.ndarray:
    # idx: (B, n_clusters) resampled cluster indices -> (B,) micro-averages
    return sums[idx].sum(axis=1) / np.maximum(counts[idx].sum(axis=1), 1)


def cluster_bootstrap(groups: list[list[float]], n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Interval:
    """Micro-average of per-question scores with a passage-resampled bootstrap interval.

    Args:
        groups: one list of per-question scores (e.g. contains in {0, 1}) per passage.
        n_boot: bootstrap replicates.
        level: interval coverage.
        seed: RNG seed (results are reproducible).

    Raises:
        ValueError: no passages, or a passage without scores.
    """
    if not groups or any(len(g) == 0 for g in groups):
        raise ValueError("every passage needs at least one score")
    sums = np.array([sum(g) for g in groups], dtype=float)  # (n,)
    counts = np.array([len(g) for g in groups], dtype=float)  # (n,)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(groups), size=(n_boot, len(groups)))  # (B, n)
    boot = _micro(sums, counts, idx)
    a = (1 - level) / 2
    return Interval(float(sums.sum() / counts.sum()), float(np.quantile(boot, a)), float(np.quantile(boot, 1 - a)), level)


def paired_difference(a: list[list[float]], b: list[list[float]], n_boot: int = 2000, level: float = 0.95,
                      seed: int = 0) -> Interval:
    """Difference of micro-averages ``mean(a) - mean(b)`` over the same passages and questions.

    Args:
        a, b: per-passage per-question scores of two conditions, aligned (same passages, same lengths).

    Raises:
        ValueError: the two conditions are not aligned.
    """
    if len(a) != len(b) or any(len(x) != len(y) for x, y in zip(a, b)):
        raise ValueError("conditions must cover the same passages and questions")
    return cluster_bootstrap([[x - y for x, y in zip(ga, gb)] for ga, gb in zip(a, b)], n_boot, level, seed)
