"""A run's recorded work as comparable rows: what two runs of the same settings and seed must share.

Ids, the run id, timings, durations and folders are left out (adapter files are named by file name and
content hash), so two workspaces, or one run before and after a crash and ``--resume``, or the same
run before and after a code change, can be compared table by table. Used by the crash tests and by
``scripts/diff_runs.py``.
"""

from __future__ import annotations

__all__ = ["snapshot", "TABLES"]

_QUERIES = {
    "runs": "select command, status, model_name, model_sha256, seed, selection_sha256 from runs",
    "passages": "select idx, key, title, context, n_questions, round, split from passages",
    "questions": """select p.round, p.split, p.idx, q.idx, q.question, q.answers_json
                    from questions q join passages p on p.id = q.passage_id""",
    "self_edits": """select p.round, p.split, p.idx, s.source, s.seed_idx, s.sample_idx, s.edit_type, s.prompt, s.text,
                            s.items_json, s.n_items, s.gen_tokens, s.directive_raw, s.directive_json,
                            s.directive_fallback_json, s.status, s.skip_reason, s.accuracy, s.reward, s.reward_em,
                            s.reward_f1, s.is_best
                     from self_edits s join passages p on p.id = s.passage_id""",
    "adapters": """select p.round, p.split, p.idx, s.source, s.seed_idx, s.sample_idx, a.rank, a.alpha, a.epochs, a.lr,
                          a.n_sequences, a.tokens_trained, round(a.final_loss, 4), a.kept, a.gguf_sha256, a.threads,
                          replace(a.gguf_path, rtrim(a.gguf_path, replace(a.gguf_path, '/', '')), '')
                   from adapters a join self_edits s on s.id = a.self_edit_id join passages p on p.id = s.passage_id""",
    "answers": """select p.round, p.split, p.idx, q.idx, a.condition, s.seed_idx, s.sample_idx, a.prediction, a.em, a.f1,
                         a.contains, a.tokens
                  from answers a join questions q on q.id = a.question_id join passages p on p.id = q.passage_id
                  left join self_edits s on s.id = a.self_edit_id""",
    "policies": """select round, status, n_pairs, rank, alpha, epochs, lr, tokens_trained, round(final_loss, 4),
                          gguf_sha256, threads, replace(gguf_path, rtrim(gguf_path, replace(gguf_path, '/', '')), '') from policies""",
    "policy_pairs": """select pol.round, p.round, p.split, p.idx, s.sample_idx from policy_pairs pp
                       join policies pol on pol.id = pp.policy_id join self_edits s on s.id = pp.self_edit_id
                       join passages p on p.id = s.passage_id""",
    "question_roles": """select p.round, p.split, p.idx, q.idx, q.role from questions q
                         join passages p on p.id = q.passage_id where q.role is not null""",
    "continual_self_edits": """select p.round, p.idx, s.sample_idx, m.history from self_edits s
                               join passages p on p.id = s.passage_id
                               join continual_models m on m.id = s.continual_model_id""",
    "continual_models": """select m.sequence, m.history, parent.history, round(m.parity_corr, 4), round(m.parity_scale, 4)
                           from continual_models m left join continual_models parent on parent.id = m.parent_id""",
    "continual_answers": """select m.sequence, m.history, s.sample_idx, p.idx, q.idx, a.prediction, a.em, a.f1,
                                   a.contains, a.tokens
                            from continual_answers a join continual_models m on m.id = a.model_id
                            join questions q on q.id = a.question_id join passages p on p.id = q.passage_id
                            left join self_edits s on s.id = a.candidate_id""",
    "continual_measures": """select m.sequence, m.history, p.idx, x.kind, x.before, x.after, round(x.value, 5)
                             from continual_measures x join continual_models m on m.id = x.model_id
                             join self_edits s on s.id = x.self_edit_id join passages p on p.id = s.passage_id""",
    "probes": """select p.idx, b.idx, b.sentence, b.question, b.answer_text, b.answer, b.reason, q.idx, p.n_probes
                 from probes b join passages p on p.id = b.passage_id left join questions q on q.id = b.question_id""",
    "continual_decisions": """select d.sequence, d.gate, d.step, m.history, d.status, round(d.measurement, 5),
                                     d.threshold, n.history
                              from continual_decisions d join continual_models m on m.id = d.model_id
                              join continual_models n on n.id = d.next_model_id""",
}

#: The tables a snapshot compares.
TABLES = tuple(_QUERIES)


def snapshot(db) -> dict[str, list[tuple]]:
    """Every recorded row that describes the work of the runs in ``db``, sorted, per table.

    Args:
        db: an open ``runs.db`` (sqlite-utils Database; :func:`sealq.store.open_db` migrates it first).

    Returns:
        table name -> sorted row tuples (ids, run ids, timings and durations left out).
    """
    return {t: sorted((tuple(r) for r in db.execute(sql).fetchall()), key=_none_first) for t, sql in _QUERIES.items()}


def _none_first(row: tuple) -> list:
    """Sort key of a row that may hold NULLs (None sorts before any value of its column)."""
    return [(v is not None, v) for v in row]
