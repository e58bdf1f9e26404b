"""The summary of a learn run (``sealq learn``), read from ``runs.db``.

The continual summary of the document's one sequence (:func:`sealq.analysis.continual.continual_summary`:
on gold questions when the passages have them, else on the probes), plus:

* ``probes``: candidates written and kept, per passage and in all, and why the others were dropped;
* ``validation`` (passages with gold questions only; docs/learn.md): per passage t, gold contains accuracy
  of the model *before* step t, with the probe-picked self-edit (the best-of-K the learner chose), with the
  gold-picked one (an oracle: the best of the same K on the gold questions), the mean self-edit, a LoRA on
  the passage alone (all on top of the model before step t), right after step t and at the end. Each a
  micro mean over gold questions with a 95% passage-bootstrap interval; differences paired by question.
  ``correlation``: Pearson r between probe reward and gold reward over every self-edit (a passage-bootstrap
  interval); ``probe_decisive`` / ``gold_decisive``: passages whose K self-edits got different contains
  rewards on the probes / on gold; ``pick_is_gold_best``: on the gold-decisive passages, the share where the
  probe pick is a gold-best self-edit (None when there is none).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sealq.analysis.continual import _row_models, continual_summary, final_model, model_updates
from sealq.analysis.stats import cluster_bootstrap, paired_difference
from sealq.errors import SealqError
from sealq.vocab import Command, EditStatus, ProbeReason, QuestionRole, Source, Split

__all__ = ["learn_summary", "learned_model", "VALIDATION_ROWS"]

#: validation rows in table order: key -> label
VALIDATION_ROWS = {
    "before": "before the step (the model so far)",
    "passage_only": "LoRA on the passage",
    "mean_self_edit": "mean self-edit",
    "probe_pick": "best-of-K picked on probes (learned)",
    "gold_pick": "best-of-K picked on gold (oracle)",
    "just_learned": "right after the step",
    "final": "after the whole document",
}


def _has_gold(db, run_id: str) -> bool:
    return db.execute("select 1 from questions q join passages p on p.id = q.passage_id where p.run_id = ? and "
                      "q.role = ? limit 1", [run_id, QuestionRole.SCORED.value]).fetchone() is not None


def _probes(db, run_id: str) -> dict:
    per = [{"idx": r["idx"], "title": r["title"], "written": r["written"] or 0, "kept": r["n_probes"]} for r in db.query(
        """select p.idx, p.title, p.n_probes, (select count(*) from probes b where b.passage_id = p.id) as written
           from passages p where p.run_id = ? and p.split = ? order by p.idx""", [run_id, Split.CONTINUAL.value])]
    reasons = {r.value: 0 for r in ProbeReason}
    for reason, n in db.execute("select reason, count(*) from probes where run_id = ? group by reason", [run_id]):
        reasons[reason] = n
    written = sum(x["written"] for x in per)
    kept = sum(x["kept"] or 0 for x in per)
    return {"written": written, "kept": kept, "reasons": reasons, "passages_without": sum(1 for x in per if x["kept"] == 0),
            "per_passage": per}


def learn_summary(db, run_id: str) -> dict:
    """The summary of a learn run (module docstring).

    Returns:
        :func:`~sealq.analysis.continual.continual_summary`'s keys (``kind`` ``learn``), ``matrix_on``
        (``gold`` or ``probes``), ``probes``, and ``validation`` (None without gold questions).
    """
    gold = _has_gold(db, run_id)
    out = continual_summary(db, run_id, QuestionRole.SCORED if gold else QuestionRole.GATE)
    out.update({"kind": Command.LEARN.value, "matrix_on": "gold" if gold else "probes", "probes": _probes(db, run_id),
                "validation": _validation(db, run_id, out["gate_order"][0], out["length"]) if gold else None})
    return out


def _gold_scores(db, model_id, candidate_id, qids) -> list | None:
    if model_id is None:
        return None
    rows = {r[0]: r[1] for r in db.execute(
        f"select question_id, contains from continual_answers where model_id = ? and candidate_id is ? and "
        f"question_id in ({','.join('?' * len(qids))})", [model_id, candidate_id, *qids])}
    return [rows[q] for q in qids] if len(rows) == len(qids) else None


def _per_passage(db, run_id: str, gate: str, length: int) -> list[dict]:
    """Per passage with a complete step: the gold scores of every validation row, and every self-edit's
    (probe reward, gold reward, picked)."""
    models = _row_models(db, run_id, 0, gate, length)
    out = []
    for t in range(length):
        p = db.execute("select id from passages where run_id = ? and round = 0 and split = ? and idx = ?",
                       [run_id, Split.CONTINUAL.value, t]).fetchone()
        m = models[t]
        if p is None or m is None:
            continue
        qids = [r[0] for r in db.execute("select id from questions where passage_id = ? and role = ? order by idx",
                                         [p[0], QuestionRole.SCORED.value])]
        before = _gold_scores(db, m, None, qids)
        edits = list(db.query("select id, source, reward, is_best, status from self_edits where passage_id = ? and "
                              "continual_model_id = ? order by sample_idx", [p[0], m]))
        se = [e for e in edits if e["source"] == Source.SELF_EDIT]
        po = [e for e in edits if e["source"] == Source.PASSAGE_ONLY]
        golds: list = [before if e["status"] != EditStatus.OK else _gold_scores(db, m, e["id"], qids) for e in se]
        pick = next((i for i, e in enumerate(se) if e["is_best"]), None)
        if before is None or pick is None or any(g is None for g in golds) or not po:
            continue  # the step is not complete yet
        gains = [float(np.mean(g)) - float(np.mean(before)) for g in golds]
        oracle = max(range(len(se)), key=lambda i: (gains[i], -i))
        row = {"before": before, "passage_only": _gold_scores(db, m, po[0]["id"], qids),
               "mean_self_edit": list(np.mean(golds, axis=0)), "probe_pick": golds[pick], "gold_pick": golds[oracle],
               "just_learned": _gold_scores(db, models[t + 1], None, qids),
               "final": _gold_scores(db, models[length], None, qids)}
        out.append({"idx": t, "scores": row, "edits": [(e["reward"], g, i == pick) for i, (e, g) in enumerate(zip(se, gains))],
                    "probe_decisive": len({e["reward"] for e in se}) > 1, "gold_decisive": len(set(gains)) > 1,
                    "pick_is_gold_best": gains[pick] == max(gains)})
    return out


def _correlation(per: list[dict], n_boot: int = 2000, seed: int = 0) -> dict | None:
    """Pearson r of (probe reward, gold reward) over self-edits, with a 95% interval resampling passages."""
    def r_of(groups):
        x = np.array([e[0] for g in groups for e in g], dtype=float)
        y = np.array([e[1] for g in groups for e in g], dtype=float)
        if len(x) < 3 or x.std() == 0 or y.std() == 0:
            return None
        return float(np.corrcoef(x, y)[0, 1])

    groups = [p["edits"] for p in per]
    r = r_of(groups)
    if r is None:
        return {"r": None, "low": None, "high": None, "n_self_edits": sum(len(g) for g in groups)}
    rng = np.random.default_rng(seed)
    boots = [b for b in (r_of([groups[i] for i in rng.integers(0, len(groups), len(groups))]) for _ in range(n_boot))
             if b is not None]
    return {"r": r, "low": float(np.quantile(boots, 0.025)), "high": float(np.quantile(boots, 0.975)),
            "n_self_edits": sum(len(g) for g in groups)}


def _agreement(per: list[dict]) -> dict:
    """How often the probes could tell the K self-edits apart (their contains rewards differ), how often the
    gold questions could, and, on the passages where the gold rewards differ, how often the probe pick is a
    gold-best one (passages where all K tie on gold say nothing about the pick)."""
    decisive = [p for p in per if p["gold_decisive"]]
    return {"probe_decisive": sum(p["probe_decisive"] for p in per), "gold_decisive": len(decisive),
            "pick_is_gold_best": (sum(p["pick_is_gold_best"] for p in decisive) / len(decisive)) if decisive else None}


def _validation(db, run_id: str, gate: str, length: int) -> dict | None:
    per = _per_passage(db, run_id, gate, length)
    if not per:
        return None
    rows: dict = {}  # row -> its interval dict, or None
    for key in VALIDATION_ROWS:
        groups = [p["scores"][key] for p in per if p["scores"][key] is not None]
        if len(groups) != len(per):
            rows[key] = None
            continue
        rows[key] = {**cluster_bootstrap(groups).as_dict(), "n_passages": len(groups)}
        if key != "passage_only":
            rows[key]["vs_passage_only"] = paired_difference(groups, [p["scores"]["passage_only"] for p in per]).as_dict()
    return {"gate": gate, "passages": len(per), "questions": sum(len(p["scores"]["before"]) for p in per),
            "rows": rows, "correlation": _correlation(per), **_agreement(per),
            "per_passage": [{"idx": p["idx"], **{k: (None if v is None else float(np.mean(v))) for k, v in p["scores"].items()},
                             "edits": [{"probe_reward": a, "gold_reward": b, "picked": c} for a, b, c in p["edits"]]}
                            for p in per]}


def learned_model(db, run_id: str, gate: str | None) -> tuple[list[tuple[str, str]], str, str]:
    """The model a learn run has learned so far under ``gate`` (a normalized spec, :attr:`Gate.spec`;
    default: its first): the (PEFT folder, GGUF)
    of its accepted updates in order, the base model's path, and a description ("gate none, 6 of 8
    passages decided, 5 updates accepted").

    Raises:
        SealqError: not a learn run, an unknown gate, nothing decided yet, or an update's file is gone.
    """
    row = db["runs"].get(run_id)
    if row["command"] != Command.LEARN:
        raise SealqError(f"run {run_id} is a `sealq {row['command']}` run, not a learn run")
    config = json.loads(row["config_json"])
    gate = gate or config["gates"][0]
    if gate not in config["gates"]:
        raise SealqError(f"run {run_id} has no gate {gate!r} (its gates: {', '.join(config['gates'])})")
    model_id, decided = final_model(db, run_id, gate)
    if not decided:
        raise SealqError(f"run {run_id} has not decided on any passage yet: nothing learned")
    updates = model_updates(db, model_id)
    for _, g in updates:
        if not Path(g).exists():
            raise SealqError(f"run {run_id}: the accepted update {g} is missing (deleted?)")
    return updates, row["model_path"], (f"gate {gate}, {decided} of {config['length']} passages decided, "
                                        f"{len(updates)} update(s) accepted")
