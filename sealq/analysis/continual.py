"""The forgetting matrix of a continual run and its summary figures, read from ``runs.db``.

SEAL (Zweiger et al. 2025, sec. 4.3, Fig. 6): after each of L self-edit updates every passage seen so far is
scored; the mean over sequences is a lower-triangular (L+1) x L matrix R, where R[i][j] is the accuracy on
passage j of the model after i steps (row 0: the base model; under a gate, a rejected update leaves the
model as it was). Here a row i scores passages 0..min(i, L-1): R[j][j] is passage j just *before* it is
learned (with the model the earlier steps made), R[j+1][j] right after, R[L][j] at the end.

Summary figures per gate (each the mean over sequences with a 95% bootstrap interval that resamples
sequences; a sequence's value averages its passages equally):

* ``before``: mean of R[j][j]; ``just_learned``: mean of R[j+1][j] (the diagonal under the main one);
* ``retention``: element d is the mean of R[j+1+d][j] over the passages that have d more steps after them
  (d = 0 is ``just_learned``); ``passage0``: column 0, rows 0..L (SEAL's plotted curve);
* ``final``: mean of R[L][j]; ``backward_transfer``: mean over j < L-1 of R[L][j] - R[j+1][j] (Lopez-Paz &
  Ranzato 2017, GEM: negative is forgetting);
* ``updates``: accepted / rejected / no-update counts and the share of updates the gate rejected, with the
  gate's mean measurement.

Each entry is the contains accuracy on a passage's *scored* questions only; the gates never saw them.
"""

from __future__ import annotations

import json

import numpy as np

from sealq.analysis.stats import cluster_bootstrap
from sealq.vocab import Command, QuestionRole, Split, UpdateStatus

__all__ = ["continual_summary", "matrices", "model_updates", "final_model", "SEAL_PASSAGE0"]

#: SEAL's figures for passage 0 (sec. 4.3, Qwen2.5-7B, 8-passage sequences): before, just after learning it,
#: then after each further update.
SEAL_PASSAGE0 = (0.331, 0.383, 0.364, 0.288, 0.272, 0.235, 0.233, 0.186, 0.189)


def _config(db, run_id: str) -> dict:
    return json.loads(db["runs"].get(run_id)["config_json"])


def model_updates(db, model_id: int | None) -> list[tuple[str, str]]:
    """The (PEFT folder, GGUF file) of the accepted updates that make model state ``model_id``, oldest first
    (empty for a base state)."""
    out = []
    while model_id is not None:
        m = db["continual_models"].get(model_id)
        if m["update_self_edit_id"] is not None:
            a = db.execute("select peft_path, gguf_path from adapters where self_edit_id = ?",
                           [m["update_self_edit_id"]]).fetchone()
            out.append((a[0], a[1]))
        model_id = m["parent_id"]
    return out[::-1]


def final_model(db, run_id: str, gate: str, sequence: int = 0) -> tuple[int | None, int]:
    """(model state id, steps decided) of sequence ``sequence`` under ``gate`` after its last recorded
    decision: the model the run has learned so far (the base state, or None, before any decision)."""
    row = db.execute("select next_model_id, step from continual_decisions where run_id = ? and sequence = ? and gate = ? "
                     "order by step desc limit 1", [run_id, sequence, gate]).fetchone()
    if row:
        return row[0], row[1] + 1
    base = db.execute("select id from continual_models where run_id = ? and sequence = ? and history = ''",
                      [run_id, sequence]).fetchone()
    return (base[0] if base else None), 0


def _entries(db, run_id: str, role: QuestionRole = QuestionRole.SCORED) -> dict:
    """(model_id, sequence, passage idx) -> mean contains over the passage's questions of ``role``."""
    rows = db.execute(
        """select a.model_id, p.round, p.idx, avg(a.contains) from continual_answers a
           join questions q on q.id = a.question_id join passages p on p.id = q.passage_id
           where a.run_id = ? and a.candidate_id is null and q.role = ? and p.split = ?
           group by a.model_id, p.round, p.idx""", [run_id, role.value, Split.CONTINUAL.value])
    return {(m, s, j): v for m, s, j, v in rows}


def _row_models(db, run_id: str, sequence: int, gate: str, length: int) -> list[int | None]:
    """Model state ids of rows 0..L of one sequence under one gate (None where not yet recorded)."""
    base = db.execute("select id from continual_models where run_id = ? and sequence = ? and history = ''",
                      [run_id, sequence]).fetchone()
    out = [base[0] if base else None]
    nxt = {r[0]: r[1] for r in db.execute(
        "select step, next_model_id from continual_decisions where run_id = ? and sequence = ? and gate = ?",
        [run_id, sequence, gate])}
    for t in range(length):
        out.append(nxt.get(t))
    return out


def matrices(db, run_id: str, role: QuestionRole = QuestionRole.SCORED) -> dict:
    """Per gate, per sequence, the matrix R as nested lists (None where a value is missing or undefined),
    on the questions of ``role`` (``sealq learn`` of a plain document: its probes, the gate questions).

    Returns:
        ``{gate: [R_sequence0, R_sequence1, ...]}``, each R of shape (L+1) x L.
    """
    cfg = _config(db, run_id)
    n_seq, length = cfg["sequences"], cfg["length"]
    entries = _entries(db, run_id, role)
    out = {}
    for gate in cfg["gates"]:
        per_seq = []
        for s in range(n_seq):
            models = _row_models(db, run_id, s, gate, length)
            per_seq.append([[entries.get((models[i], s, j)) if j <= i and models[i] is not None else None
                             for j in range(length)] for i in range(length + 1)])
        out[gate] = per_seq
    return out


def _interval(values: list) -> dict | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    d = cluster_bootstrap([[v] for v in vals]).as_dict()
    return {**d, "n": len(vals)}


def _per_sequence(mats: list, pick) -> list:
    """Per sequence, the mean of the entries ``pick(R)`` yields (None when it yields none)."""
    out = []
    for r in mats:
        vals = [v for v in pick(r) if v is not None]
        out.append(float(np.mean(vals)) if vals else None)
    return out


def _gate_summary(db, run_id: str, gate: str, mats: list, length: int) -> dict:
    cell = [[_interval([m[i][j] for m in mats]) for j in range(length)] for i in range(length + 1)]
    retention = [_interval(_per_sequence(mats, lambda r, d=d: [r[j + 1 + d][j] for j in range(length - d)]))
                 for d in range(length)]
    bwt = _per_sequence(mats, lambda r: [None if r[length][j] is None or r[j + 1][j] is None
                                         else r[length][j] - r[j + 1][j] for j in range(length - 1)])
    counts = {s.value: 0 for s in UpdateStatus}
    measured = []
    for st, m in db.execute("select status, measurement from continual_decisions where run_id = ? and gate = ?",
                            [run_id, gate]):
        counts[st] += 1
        if m is not None:
            measured.append(m)
    decided = counts[UpdateStatus.ACCEPTED] + counts[UpdateStatus.REJECTED]
    return {
        "matrix": cell,
        "before": _interval(_per_sequence(mats, lambda r: [r[j][j] for j in range(length)])),
        "just_learned": retention[0],
        "retention": retention,
        "passage0": [cell[i][0] for i in range(length + 1)],
        "final": _interval(_per_sequence(mats, lambda r: r[length])),
        "backward_transfer": _interval(bwt) if length > 1 else None,
        "updates": {**counts, "rejected_share": counts[UpdateStatus.REJECTED] / decided if decided else None,
                    "mean_measurement": float(np.mean(measured)) if measured else None},
    }


def _parity(db, run_id: str) -> dict | None:
    rows = list(db.query("select parity_corr, parity_scale, parity_max_abs from continual_models "
                         "where run_id = ? and parity_corr is not null", [run_id]))
    if not rows:
        return None
    return {"model_states": len(rows), "min_corr": min(r["parity_corr"] for r in rows),
            "scale_range": [min(r["parity_scale"] for r in rows), max(r["parity_scale"] for r in rows)],
            "max_abs": max(r["parity_max_abs"] for r in rows)}


def continual_summary(db, run_id: str, role: QuestionRole = QuestionRole.SCORED) -> dict:
    """The summary of a continual run (module docstring): per gate the mean matrix with intervals and
    the summary figures; the stacking parity over all model states; SEAL's passage-0 curve. ``role``: the
    questions the matrix scores (scored ones; a learn run of a plain document: its probes).

    Returns:
        ``{"run_id", "sequences", "length", "gates": {spec: {...}}, "gate_order", "parity", "seal_passage0"}``.
    """
    cfg = _config(db, run_id)
    length = cfg["length"]
    mats = matrices(db, run_id, role)
    return {
        "run_id": run_id, "kind": Command.CONTINUAL.value, "sequences": cfg["sequences"], "length": length,
        "k": cfg["loop"]["selfedit"]["k"], "gate_order": list(cfg["gates"]),
        "gates": {g: _gate_summary(db, run_id, g, mats[g], length) for g in cfg["gates"]},
        "parity": _parity(db, run_id), "seal_passage0": list(SEAL_PASSAGE0),
    }
