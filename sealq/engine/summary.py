"""Run summary: baseline, ceiling, mean self-edit and best-of-K accuracy, computed from ``runs.db``.

All accuracies are micro-averages over questions (each question counts once per condition), in [0, 1].

* ``no_context``: the base model without the passage (SEAL's "base model" row).
* ``with_context``: the base model with the passage in the prompt (ceiling).
* ``mean_self_edit``: every sampled self-edit's adapted answers, averaged (what one self-edit gives).
  A skipped self-edit (no usable items) counts with the unchanged model's baseline answers.
* ``best_of_k``: per passage, the answers of the self-edit with the highest reward (a skipped self-edit
  is a candidate with reward 0 and the baseline answers). The pick is made on the same questions it is
  scored on, so it is an oracle upper bound, not a held-out estimate.
"""

from __future__ import annotations

__all__ = ["summarize", "scores_by_passage", "CONDITIONS", "METRICS"]

METRICS = ("contains", "em", "f1")


CONDITIONS = {
    "no_context": "baseline (no passage)",
    "with_context": "ceiling (passage in prompt)",
    "mean_self_edit": "mean self-edit",
    "best_of_k": "best-of-K (oracle pick)",
}


def scores_by_passage(db, run_id: str) -> dict:
    """Per-question grades of every condition, grouped by passage (the unit the bootstrap resamples).

    Returns:
        condition -> one list per passage (in passage order) of ``(contains, em, f1)`` triples. For
        ``mean_self_edit`` a passage's list holds K x questions triples; the others hold one per question.
    """
    passages = [r["id"] for r in db.query("select id from passages where run_id = ? order by idx", [run_id])]
    out = {c: [] for c in CONDITIONS}
    for pid in passages:
        qids = [r["id"] for r in db.query("select id from questions where passage_id = ? order by idx", [pid])]

        def grades(sql, params):
            rows = {r["question_id"]: (r["contains"], r["em"], r["f1"]) for r in db.query(sql, params)}
            return [rows.get(q, (0.0, 0.0, 0.0)) for q in qids]

        base = grades("select a.* from answers a join questions q on q.id = a.question_id "
                      "where q.passage_id = ? and a.condition = 'no_context'", [pid])
        out["no_context"].append(base)
        out["with_context"].append(grades("select a.* from answers a join questions q on q.id = a.question_id "
                                          "where q.passage_id = ? and a.condition = 'with_context'", [pid]))
        edits = list(db.query("select id, status, is_best from self_edits where passage_id = ? order by sample_idx", [pid]))
        per_edit = [grades("select * from answers where self_edit_id = ?", [e["id"]]) if e["status"] == "ok" else base
                    for e in edits]
        out["mean_self_edit"].append([g for e in per_edit for g in e] or base)
        best = [g for e, pe in zip(edits, per_edit) if e["is_best"] for g in pe]
        out["best_of_k"].append(best or base)
    return out


def summarize(db, run_id: str) -> dict:
    """Summarize one run.

    Returns:
        ``{"run_id", "passages", "questions", "self_edits", "skipped", "directive_fallbacks",
        "conditions": {name: {"n", "contains", "em", "f1"}}, "mean_reward", "best_reward"}``.
    """
    p = {"run": run_id}
    conditions = {}
    for name, groups in scores_by_passage(db, run_id).items():
        grades = [g for passage in groups for g in passage]
        n = len(grades)
        conditions[name] = {"n": n, **{m: (sum(g[i] for g in grades) / n if n else 0.0) for i, m in enumerate(METRICS)}}
    counts = db.execute(
        """select count(*), sum(status = 'skipped'), sum(directive_fallback_json != '{}'), avg(reward)
           from self_edits where run_id = :run""",
        p,
    ).fetchone()
    best = db.execute("select avg(reward) from self_edits where run_id = :run and is_best = 1", p).fetchone()
    return {
        "run_id": run_id,
        "passages": db.execute("select count(*) from passages where run_id = :run", p).fetchone()[0],
        "questions": conditions["no_context"]["n"],
        "self_edits": counts[0] or 0,
        "skipped": counts[1] or 0,
        "directive_fallbacks": counts[2] or 0,
        "mean_reward": counts[3] or 0.0,
        "best_reward": best[0] or 0.0,
        "conditions": conditions,
    }
