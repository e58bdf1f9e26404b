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

__all__ = ["summarize", "METRICS"]

METRICS = ("contains", "em", "f1")


def _avg(db, sql: str, params) -> dict:
    row = db.execute(
        f"select count(*), avg(contains), avg(em), avg(f1) from ({sql})", params
    ).fetchone()
    return {"n": row[0], "contains": row[1] or 0.0, "em": row[2] or 0.0, "f1": row[3] or 0.0}


def summarize(db, run_id: str) -> dict:
    """Summarize one run.

    Returns:
        ``{"run_id", "passages", "questions", "self_edits", "skipped", "directive_fallbacks",
        "conditions": {name: {"n", "contains", "em", "f1"}}, "mean_reward", "best_reward"}``.
    """
    p = {"run": run_id}
    conditions = {
        "no_context": _avg(db, "select contains, em, f1 from answers where run_id = :run and condition = 'no_context'", p),
        "with_context": _avg(db, "select contains, em, f1 from answers where run_id = :run and condition = 'with_context'", p),
        "mean_self_edit": _avg(
            db,
            """
            select a.contains, a.em, a.f1 from answers a
              where a.run_id = :run and a.condition = 'adapted'
            union all
            select b.contains, b.em, b.f1 from self_edits s
              join questions q on q.passage_id = s.passage_id
              join answers b on b.question_id = q.id and b.condition = 'no_context'
              where s.run_id = :run and s.status = 'skipped'
            """,
            p,
        ),
        "best_of_k": _avg(
            db,
            """
            select a.contains, a.em, a.f1 from answers a
              join self_edits s on s.id = a.self_edit_id
              where a.run_id = :run and s.is_best = 1
            union all
            select b.contains, b.em, b.f1 from passages ps
              join questions q on q.passage_id = ps.id
              join answers b on b.question_id = q.id and b.condition = 'no_context'
              where ps.run_id = :run
                and not exists (select 1 from self_edits s
                                where s.passage_id = ps.id and s.is_best = 1 and s.status = 'ok')
            """,
            p,
        ),
    }
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
