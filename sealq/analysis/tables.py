"""The results tables of a run, read from ``runs.db``: SEAL's comparison table (Zweiger et al. 2025,
sec. 4.2, Table 2) for ``sealq eval``, the per-round table of a ReST-EM run (sec. 3.1), and the summary
every run stores when it finishes.

Every cell is a micro-average over questions with a 95% percentile bootstrap interval that resamples
*passages* (the questions of one passage share an adapter, so they are not independent;
:func:`sealq.analysis.stats.cluster_bootstrap`). Paired differences between rows resample the same
passages on both sides, which removes the between-passage variance both rows share.
"""

from __future__ import annotations

import json

from sealq.analysis.stats import cluster_bootstrap, paired_difference
from sealq.analysis.summary import column, results_scope, scores_by_passage, summarize
from sealq.metrics import METRICS, Score, copied_ngram_share
from sealq.vocab import ROW_LABELS, EditStatus, Row, Source, Split

__all__ = ["eval_table", "comparison_table", "restem_table", "policy_pairs", "run_summary", "intervals", "differences", "PAIRS",
           "PAPER_ROWS"]

#: The differences reported, ``(a, b)`` meaning ``a - b``; a pair is left out when a run lacks a side.
PAIRS = (
    (Row.PASSAGE_ONLY, Row.NO_CONTEXT),
    (Row.MEAN_SELF_EDIT, Row.NO_CONTEXT),
    (Row.MEAN_SELF_EDIT, Row.PASSAGE_ONLY),
    (Row.TEACHER, Row.PASSAGE_ONLY),
    (Row.TEACHER, Row.MEAN_SELF_EDIT),
    (Row.BEST_OF_K, Row.MEAN_SELF_EDIT),
)

#: SEAL's Table 2 (Qwen2.5-7B, 200 SQuAD passages, no context, single-passage, accuracy in %) for the
#: matching rows; SEAL's own row (after ReST-EM) is 47.0.
PAPER_ROWS = {Row.NO_CONTEXT: 32.7, Row.PASSAGE_ONLY: 33.5, Row.MEAN_SELF_EDIT: 39.7, Row.TEACHER: 46.3}


def intervals(groups: list[list[Score]], n_boot: int = 2000, seed: int = 0) -> dict:
    """``{metric: {"estimate", "low", "high"}}`` of one row's per-passage grades (passage bootstrap)."""
    return {m: cluster_bootstrap(column(groups, m), n_boot, seed=seed).as_dict() for m in METRICS}


def differences(a: list[list[Score]], b: list[list[Score]], n_boot: int = 2000, seed: int = 0) -> dict:
    """``{metric: {"estimate", "low", "high"}}`` of ``a - b``, paired on the same passages and questions."""
    return {m: paired_difference(column(a, m), column(b, m), n_boot, seed=seed).as_dict() for m in METRICS}


def eval_table(db, run_id: str, n_boot: int = 2000, seed: int = 0) -> dict:
    """Accuracy per row and paired differences, each with a 95% passage-bootstrap interval.

    Args:
        db: an open ``runs.db``.
        run_id: a run with at least one recorded passage.
        n_boot: bootstrap replicates.
        seed: bootstrap RNG seed.

    Returns:
        ``{"passages", "questions", "conditions": {row: {"label", "n", metric: {"estimate", "low", "high"}}},
        "differences": [{"a", "b", metric: {...}}]}``; metrics are ``contains``, ``em``, ``f1`` in [0, 1].

    Raises:
        ValueError: the run has no recorded passages.
    """
    scores = scores_by_passage(db, run_id)
    if not scores[Row.NO_CONTEXT]:
        raise ValueError(f"run {run_id} has no recorded passages")
    return comparison_table(scores, n_boot, seed)


def comparison_table(scores: dict, n_boot: int = 2000, seed: int = 0) -> dict:
    """:func:`eval_table` of per-question grades already read: ``Row`` -> one list per passage of a
    :class:`~sealq.metrics.Score` per question (:func:`~sealq.analysis.summary.scores_by_passage`, or several
    runs' grades averaged, as ``scripts/pool_seeds.py`` does); rows in table order, :data:`PAIRS` that both
    sides have.

    Raises:
        ValueError: a passage without questions.
    """
    conditions = {row: {"label": ROW_LABELS[row], "n": sum(len(p) for p in scores[row]),
                        **intervals(scores[row], n_boot, seed)} for row in ROW_LABELS if row in scores}
    diffs = [{"a": a, "b": b, **differences(scores[a], scores[b], n_boot, seed)}
             for a, b in PAIRS if a in scores and b in scores]
    return {"passages": len(scores[Row.NO_CONTEXT]), "questions": conditions[Row.NO_CONTEXT]["n"],
            "conditions": conditions, "differences": diffs}


def policy_pairs(db, run_id: str, round_: int) -> list[dict]:
    """The E-step of ReST-EM: per training passage of ``round_``, its best-of-K self-edit if its reward is
    positive.

    Returns:
        ``[{"self_edit_id", "prompt", "text", "reward"}]`` in passage order.
    """
    return list(db.query(
        """select s.id self_edit_id, s.prompt, s.text, s.reward from self_edits s join passages p on p.id = s.passage_id
           where p.run_id = ? and p.round = ? and p.split = ? and s.source = ? and s.is_best = 1
             and s.status = ? and s.reward > 0 order by p.idx""",
        [run_id, round_, Split.TRAIN.value, Source.SELF_EDIT.value, EditStatus.OK.value]))


def _holdout_self_edits(db, run_id: str, round_: int) -> list[dict]:
    return list(db.query(
        """select s.text, s.n_items, s.status, p.context from self_edits s join passages p on p.id = s.passage_id
           where p.run_id = ? and p.round = ? and p.split = ? and s.source = ?""",
        [run_id, round_, Split.HOLDOUT.value, Source.SELF_EDIT.value]))


def _describe_self_edits(edits: list[dict]) -> dict:
    n = max(len(edits), 1)
    return {
        "n": len(edits), "skipped": sum(e["status"] != EditStatus.OK for e in edits),
        "mean_words": sum(len(e["text"].split()) for e in edits) / n,
        "mean_items": sum(e["n_items"] or 0 for e in edits) / n,
        "copied_5grams": sum(copied_ngram_share(e["text"], e["context"]) for e in edits) / n,
    }


def _gains(scores: dict) -> list[list[Score]]:
    """Per question: mean self-edit minus no passage."""
    return [[a.minus(b) for a, b in zip(pe, pb)] for pe, pb in zip(scores[Row.MEAN_SELF_EDIT], scores[Row.NO_CONTEXT])]


def _vs_round0(s: dict, s0: dict, n_boot: int) -> dict:
    """A round minus round 0, paired on the same held-out questions."""
    return {"mean_self_edit": differences(s[Row.MEAN_SELF_EDIT], s0[Row.MEAN_SELF_EDIT], n_boot),
            "mean_gain": differences(_gains(s), _gains(s0), n_boot),
            "no_context": differences(s[Row.NO_CONTEXT], s0[Row.NO_CONTEXT], n_boot)}


def _holdout(s: dict, n_boot: int) -> dict:
    h: dict = {"passages": len(s[Row.NO_CONTEXT]), "questions": sum(len(p) for p in s[Row.NO_CONTEXT])}
    for row in (Row.NO_CONTEXT, Row.WITH_CONTEXT, Row.MEAN_SELF_EDIT, Row.BEST_OF_K):
        h[row] = intervals(s[row], n_boot)
    h["mean_gain"] = differences(s[Row.MEAN_SELF_EDIT], s[Row.NO_CONTEXT], n_boot)
    h["best_gain"] = differences(s[Row.BEST_OF_K], s[Row.NO_CONTEXT], n_boot)
    return h


def _train_side(db, run_id: str, r: int) -> dict | None:
    t = db.execute(
        """select count(distinct p.id), avg(s.reward) from passages p join self_edits s on s.passage_id = p.id
           where p.run_id = ? and p.round = ? and p.split = ? and s.source = ?""",
        [run_id, r, Split.TRAIN.value, Source.SELF_EDIT.value]).fetchone()
    if not t[0]:
        return None
    nxt = db.execute("select n_pairs from policies where run_id = ? and round = ?", [run_id, r + 1]).fetchone()
    return {"passages": t[0], "mean_reward": t[1], "kept_pairs": len(policy_pairs(db, run_id, r)),
            "policy_trained": bool(nxt and nxt[0])}


def _policy(db, run_id: str, r: int) -> dict | None:
    pol = db.execute("select id, status, n_pairs, final_loss, gguf_path from policies where run_id = ? and round = ?",
                     [run_id, r]).fetchone()
    return None if pol is None else dict(zip(("id", "status", "n_pairs", "final_loss", "gguf_path"), pol))


def restem_table(db, run_id: str, n_boot: int = 2000) -> list[dict]:
    """Per-round results of a ReST-EM run.

    Returns:
        One dict per round r with ``"round"``, ``"holdout"`` (passages, questions; ``no_context``,
        ``with_context``, ``mean_self_edit``, ``best_of_k`` accuracy and ``mean_gain`` / ``best_gain``
        paired differences against ``no_context``, each ``{metric: {"estimate", "low", "high"}}``),
        ``"train"`` (passages, mean reward, kept pairs; absent in the last round) and ``"policy"``
        (the policy the round's model carries: id, status, pairs, final loss; None in round 0). From
        round 1 on, when its held-out evaluation is complete, ``"holdout"`` also has ``"vs_round0"``:
        ``mean_self_edit``, ``mean_gain`` and ``no_context`` minus round 0's, paired on the same
        held-out questions (the direct test of whether the outer loop made the first try better), and
        ``"self_edits"``: what the round's model wrote for the held-out passages (``n``, ``skipped``,
        ``mean_words``, ``mean_items``, ``copied_5grams``: :func:`sealq.metrics.copied_ngram_share`).
    """
    rounds = [r for (r,) in db.execute("select distinct round from passages where run_id = ? order by round", [run_id])]
    out, s0, n0 = [], None, 0
    for r in rounds:
        s = scores_by_passage(db, run_id, round=r, split=Split.HOLDOUT)
        entry: dict = {"round": r}
        if s.get(Row.NO_CONTEXT):
            h, edits = _holdout(s, n_boot), _holdout_self_edits(db, run_id, r)
            if r == 0:
                s0, n0 = s, len(edits)
            elif (s0 is not None and len(edits) == n0  # complete: every passage, every sample, as in round 0
                  and [len(p) for p in s[Row.NO_CONTEXT]] == [len(p) for p in s0[Row.NO_CONTEXT]]):
                h["vs_round0"] = _vs_round0(s, s0, n_boot)
            h["self_edits"] = _describe_self_edits(edits)
            entry["holdout"] = h
        train = _train_side(db, run_id, r)
        if train is not None:
            entry["train"] = train
        entry["policy"] = _policy(db, run_id, r)
        out.append(entry)
    return out


def run_summary(db, run_id: str) -> dict:
    """The summary a run stores when it finishes (``runs.summary_json``, ``sealq loop --json``):
    :func:`sealq.analysis.summary.summarize` over the results' passages (a ReST-EM run: the last round's
    held-out passages), plus ``"rounds"`` (:func:`restem_table`) for a ReST-EM run and ``"eval"``
    (:func:`eval_table`) for a run with passage-only or teacher rows."""
    row = db.execute("select config_json from runs where id = ?", [run_id]).fetchone()
    config = json.loads((row and row[0]) or "{}")
    summary = summarize(db, run_id, **results_scope(config))
    if config.get("rounds"):
        summary["rounds"] = restem_table(db, run_id)
    if config.get("passage_only") or config.get("teacher"):
        summary["eval"] = eval_table(db, run_id)
    return summary
