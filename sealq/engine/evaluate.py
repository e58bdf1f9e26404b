"""The SEAL comparison table (Zweiger et al. 2025, sec. 4.2, Table 2) for one ``sealq eval`` run.

Rows are the conditions of :mod:`sealq.engine.summary`; every cell is a micro-average over questions
with a 95% percentile bootstrap interval that resamples *passages* (the questions of one passage share
an adapter, so they are not independent; :func:`sealq.engine.stats.cluster_bootstrap`). Paired
differences between conditions resample the same passages on both sides, which removes the
between-passage variance both conditions share.
"""

from __future__ import annotations

from sealq.engine.stats import cluster_bootstrap, paired_difference
from sealq.engine.summary import CONDITIONS, METRICS, scores_by_passage

__all__ = ["eval_table", "PAIRS", "PAPER_ROWS"]

#: The differences reported, ``(a, b)`` meaning ``a - b``; a pair is left out when a run lacks a side.
PAIRS = (
    ("passage_only", "no_context"),
    ("mean_self_edit", "no_context"),
    ("mean_self_edit", "passage_only"),
    ("teacher", "passage_only"),
    ("teacher", "mean_self_edit"),
    ("best_of_k", "mean_self_edit"),
)

#: SEAL's Table 2 (Qwen2.5-7B, 200 SQuAD passages, no context, single-passage, accuracy in %) for the
#: matching rows; SEAL's own row (after ReST-EM) is 47.0.
PAPER_ROWS = {"no_context": 32.7, "passage_only": 33.5, "mean_self_edit": 39.7, "teacher": 46.3}


def eval_table(db, run_id: str, n_boot: int = 2000, seed: int = 0) -> dict:
    """Accuracy per condition and paired differences, each with a 95% passage-bootstrap interval.

    Args:
        db: an open ``runs.db``.
        run_id: a run with at least one recorded passage.
        n_boot: bootstrap replicates.
        seed: bootstrap RNG seed.

    Returns:
        ``{"passages", "questions", "conditions": {name: {"label", "n", metric: {"estimate", "low", "high"}}},
        "differences": [{"a", "b", metric: {...}}]}``; metrics are ``contains``, ``em``, ``f1`` in [0, 1].

    Raises:
        ValueError: the run has no recorded passages.
    """
    scores = scores_by_passage(db, run_id)
    if not scores["no_context"]:
        raise ValueError(f"run {run_id} has no recorded passages")

    def column(cond, i):
        return [[g[i] for g in passage] for passage in scores[cond]]

    conditions = {}
    for cond in CONDITIONS:
        if cond in scores:
            conditions[cond] = {"label": CONDITIONS[cond], "n": sum(len(p) for p in scores[cond]),
                                **{m: cluster_bootstrap(column(cond, i), n_boot, seed=seed).as_dict()
                                   for i, m in enumerate(METRICS)}}
    differences = []
    for a, b in PAIRS:
        if a in scores and b in scores:
            differences.append({"a": a, "b": b, **{m: paired_difference(column(a, i), column(b, i), n_boot, seed=seed).as_dict()
                                                   for i, m in enumerate(METRICS)}})
    return {"passages": len(scores["no_context"]), "questions": conditions["no_context"]["n"],
            "conditions": conditions, "differences": differences}
