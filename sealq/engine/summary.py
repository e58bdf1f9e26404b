"""Run summary: baseline, ceiling, mean self-edit and best-of-K accuracy, computed from ``runs.db``.

All accuracies are micro-averages over questions (each question counts once per condition), in [0, 1].

* ``no_context``: the base model without the passage (SEAL's "base model" row).
* ``with_context``: the base model with the passage in the prompt (ceiling).
* ``passage_only`` (``sealq eval``): a LoRA trained on the passage alone (SEAL's "train on passage").
* ``mean_self_edit``: every sampled self-edit's adapted answers, averaged (what one self-edit gives).
  A skipped self-edit (no usable items) counts with the unchanged model's baseline answers.
* ``teacher`` (``sealq eval --teacher``): a LoRA on passage + a teacher-written self-edit.
* ``best_of_k``: per passage, the answers of the self-edit with the highest reward (a skipped self-edit
  is a candidate with reward 0 and the baseline answers). The pick is made on the same questions it is
  scored on, so it is an oracle upper bound, not a held-out estimate.
"""

from __future__ import annotations

__all__ = ["summarize", "scores_by_passage", "CONDITIONS", "CORE_CONDITIONS", "METRICS"]

METRICS = ("contains", "em", "f1")


CONDITIONS = {
    "no_context": "baseline (no passage)",
    "with_context": "ceiling (passage in prompt)",
    "passage_only": "LoRA on the passage only",
    "mean_self_edit": "mean self-edit",
    "best_of_k": "best-of-K (oracle pick)",
    "teacher": "teacher self-edit",
}

#: Conditions every run has; ``passage_only`` and ``teacher`` exist only in runs that trained them.
CORE_CONDITIONS = ("no_context", "with_context", "mean_self_edit", "best_of_k")


def _avg(lists: list[list[tuple]]) -> list[tuple]:
    """Per-question average over several answer sets of the same questions."""
    return [tuple(sum(g[i] for g in col) / len(col) for i in range(3)) for col in zip(*lists)]


def _where(round_, split) -> tuple[str, list]:
    sql, params = "", []
    if round_ is not None:
        sql, params = sql + " and round = ?", params + [round_]
    if split is not None:
        sql, params = sql + " and split = ?", params + [split]
    return sql, params


def scores_by_passage(db, run_id: str, round: int | None = None, split: str | None = None) -> dict:
    """Per-question grades of every condition, grouped by passage (the unit the bootstrap resamples).

    Returns:
        condition -> one list per passage (in passage order) of ``(contains, em, f1)`` per question.
        ``mean_self_edit`` averages a question's grades over all K (x seeds) self-edits; ``best_of_k``
        over the best self-edit of each seed; ``passage_only`` and ``teacher`` over seeds. Conditions
        the run did not train are left out. ``round`` / ``split`` restrict a ReST-EM run to one round
        and one side (``train`` / ``holdout``).
    """
    extra, params = _where(round, split)
    passages = [r["id"] for r in db.query(f"select id from passages where run_id = ?{extra} order by round, split, idx",
                                          [run_id, *params])]
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
        edits = list(db.query("select id, source, status, is_best from self_edits where passage_id = ? "
                              "order by source, seed_idx, sample_idx", [pid]))
        per_edit = {e["id"]: grades("select * from answers where self_edit_id = ?", [e["id"]])
                    if e["status"] == "ok" else base for e in edits}
        model = [per_edit[e["id"]] for e in edits if e["source"] == "model"]
        out["mean_self_edit"].append(_avg(model) if model else base)
        best = [per_edit[e["id"]] for e in edits if e["source"] == "model" and e["is_best"]]
        out["best_of_k"].append(_avg(best) if best else base)
        for cond, source in (("passage_only", "passage"), ("teacher", "teacher")):
            sets = [per_edit[e["id"]] for e in edits if e["source"] == source]
            if sets:
                out[cond].append(_avg(sets))
    return {c: v for c, v in out.items() if len(v) == len(passages) and (v or c in CORE_CONDITIONS)}


def summarize(db, run_id: str, round: int | None = None, split: str | None = None) -> dict:
    """Summarize one run (or, for a ReST-EM run, one round and split of it).

    Returns:
        ``{"run_id", "passages", "questions", "self_edits", "skipped", "directive_fallbacks",
        "conditions": {name: {"n", "contains", "em", "f1"}}, "mean_reward", "best_reward"}``; rewards
        and counts are over sampled self-edits (``source = 'model'``) only; ``n`` is the number of
        questions graded.
    """
    extra, params = _where(round, split)
    conditions = {}
    for name, groups in scores_by_passage(db, run_id, round, split).items():
        grades = [g for passage in groups for g in passage]
        n = len(grades)
        conditions[name] = {"n": n, **{m: (sum(g[i] for g in grades) / n if n else 0.0) for i, m in enumerate(METRICS)}}
    scope = f"passage_id in (select id from passages where run_id = ?{extra})"
    counts = db.execute(
        f"""select count(*), sum(status = 'skipped'), sum(directive_fallback_json != '{{}}'), avg(reward)
           from self_edits where {scope} and source = 'model'""",
        [run_id, *params],
    ).fetchone()
    best = db.execute(f"select avg(reward) from self_edits where {scope} and is_best = 1", [run_id, *params]).fetchone()
    return {
        "run_id": run_id,
        "passages": db.execute(f"select count(*) from passages where run_id = ?{extra}", [run_id, *params]).fetchone()[0],
        "questions": conditions["no_context"]["n"],
        "self_edits": counts[0] or 0,
        "skipped": counts[1] or 0,
        "directive_fallbacks": counts[2] or 0,
        "mean_reward": counts[3] or 0.0,
        "best_reward": best[0] or 0.0,
        "conditions": conditions,
    }
