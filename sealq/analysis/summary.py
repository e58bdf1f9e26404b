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

Every figure the views show about a run (``sealq loop``'s closing lines and ``--json``, ``sealq runs``,
``sealq show``, ``sealq report``) is derived here, once: the status (:func:`sealq.store.run_status`)
and how to continue the run, the duration, the passage and question counts, the self-edit counts
(:func:`edit_counts`: self-edits, skipped, directive fallbacks) and the headline accuracies
(:func:`run_overview`). A continual run's views read its own summary (:func:`continual_results`: the
forgetting matrix per gate, :mod:`sealq.analysis.continual`) and gate decisions (:func:`continual_decisions`).
"""

from __future__ import annotations

import json

from sealq.metrics import METRICS, Score
from sealq.vocab import CORE_ROWS, RESUMABLE, Command, Condition, EditStatus, PolicyStatus, Row, RunStatus, Source, Split

__all__ = ["summarize", "scores_by_passage", "column", "directive_fallbacks",
           "edit_counts", "results_scope", "format_duration", "plural", "describe_edits", "describe_status", "run_overview",
           "continual_overview", "continual_results", "continual_decisions"]



def _where(round_, split) -> tuple[str, list]:
    params: list
    sql, params = "", []
    if round_ is not None:
        sql, params = sql + " and round = ?", params + [round_]
    if split is not None:
        sql, params = sql + " and split = ?", params + [str(split)]
    return sql, params


def _grades(db, qids: list, where: str, params: list) -> list[Score]:
    """Per question (in ``qids`` order) the grades of the answers matching ``where`` (zeros if none)."""
    rows = {r["question_id"]: Score(r["contains"], r["em"], r["f1"])
            for r in db.query(f"select question_id, contains, em, f1 from answers where {where}", params)}
    return [rows.get(q, Score(0.0, 0.0, 0.0)) for q in qids]


def _per_question_mean(sets: list[list[Score]]) -> list[Score]:
    """Per-question mean over several answer sets of the same questions."""
    return [Score.mean(col) for col in zip(*sets)]


def _passage_scores(db, pid: int) -> dict:
    """Every table row's per-question grades for one passage (rows the passage lacks are left out)."""
    qids = [r["id"] for r in db.query("select id from questions where passage_id = ? order by idx", [pid])]
    in_passage = f"question_id in (select id from questions where passage_id = {int(pid)})"
    base = _grades(db, qids, f"{in_passage} and condition = ?", [Condition.NO_CONTEXT.value])
    out = {Row.NO_CONTEXT: base, Row.WITH_CONTEXT: _grades(db, qids, f"{in_passage} and condition = ?",
                                                           [Condition.WITH_CONTEXT.value])}
    edits = list(db.query("select id, source, status, is_best from self_edits where passage_id = ? "
                          "order by source, seed_idx, sample_idx", [pid]))
    # a skipped step (nothing trained) counts with the unchanged model's answers, the baseline
    per_edit = {e["id"]: _grades(db, qids, "self_edit_id = ?", [e["id"]]) if e["status"] == EditStatus.OK else base
                for e in edits}
    sampled = [e for e in edits if e["source"] == Source.SELF_EDIT]
    out[Row.MEAN_SELF_EDIT] = _per_question_mean([per_edit[e["id"]] for e in sampled]) if sampled else base
    best = [per_edit[e["id"]] for e in sampled if e["is_best"]]
    out[Row.BEST_OF_K] = _per_question_mean(best) if best else base
    for row, source in ((Row.PASSAGE_ONLY, Source.PASSAGE_ONLY), (Row.TEACHER, Source.TEACHER)):
        sets = [per_edit[e["id"]] for e in edits if e["source"] == source]
        if sets:
            out[row] = _per_question_mean(sets)
    return out


def scores_by_passage(db, run_id: str, round: int | None = None, split: str | None = None) -> dict:
    """Per-question grades of every table row, grouped by passage (the unit the bootstrap resamples).

    Returns:
        :class:`~sealq.vocab.Row` -> one list per passage (in passage order) of a :class:`~sealq.metrics.Score`
        per question. ``mean_self_edit`` averages a question's grades over all K (x seeds) self-edits;
        ``best_of_k`` over the best self-edit of each seed; ``passage_only`` and ``teacher`` over seeds. Rows
        the run did not train are left out. ``round`` / ``split`` restrict a ReST-EM run to one round and
        one side (``train`` / ``holdout``).
    """
    extra, params = _where(round, split)
    passages = [r["id"] for r in db.query(f"select id from passages where run_id = ?{extra} order by round, split, idx",
                                          [run_id, *params])]
    out: dict = {row: [] for row in Row}
    for pid in passages:
        for row, grades in _passage_scores(db, pid).items():
            out[row].append(grades)
    return {row: v for row, v in out.items() if len(v) == len(passages) and (v or row in CORE_ROWS)}


def column(groups: list[list[Score]], metric: str) -> list[list[float]]:
    """One metric of per-passage grades (:func:`scores_by_passage` values): the bootstrap's input."""
    return [[getattr(g, metric) for g in passage] for passage in groups]


def directive_fallbacks(edit: dict) -> list[str] | None:
    """The directive fields of one self-edit that fell back to the default (``[]``: the model's directive
    parsed whole), or None when no model-written directive was asked for: fixed settings (``--directives
    off``, a passage-only or teacher row, recorded as ``{"all": ...}``) or a skipped self-edit (no usable
    items: nothing was trained, no directive was generated). The one definition every count and view uses.

    Args:
        edit: a ``self_edits`` row (``source``, ``status``, ``directive_fallback_json`` as text or dict).
    """
    fb = edit["directive_fallback_json"]
    fb = json.loads(fb or "{}") if isinstance(fb, str) else (fb or {})
    if edit["source"] != Source.SELF_EDIT or edit["status"] != EditStatus.OK or "all" in fb:
        return None
    return list(fb)


def edit_counts(db, run_id: str, round: int | None = None, split: str | None = None, *,
                by_type: bool = False, model_only: bool = True):
    """Self-edit counts of a run (or one round and split of it), computed in one place for every view.

    Returns:
        ``{"self_edits", "skipped", "directive_fallbacks", "best", "mean_reward"}`` (``directive_fallbacks``:
        self-edits whose model-written directive had a field fall back to the default, see
        :func:`directive_fallbacks`; ``mean_reward`` None without self-edits), or with ``by_type`` one such
        dict per edit type (plus ``"edit_type"``), highest mean reward first. ``model_only``: sampled
        self-edits only (``source = 'self_edit'``), as in :func:`summarize`; else passage-only and teacher rows too.
    """
    extra, params = _where(round, split)
    rows = list(db.query(
        f"""select edit_type, source, status, reward, is_best, directive_fallback_json from self_edits
            where passage_id in (select id from passages where run_id = ?{extra})
            {"and source = ?" if model_only else ""} order by id""", [run_id, *params, *([Source.SELF_EDIT.value] if model_only else [])]))

    def count(group):
        rewards = [r["reward"] for r in group if r["reward"] is not None]
        return {"self_edits": len(group), "skipped": sum(r["status"] == EditStatus.SKIPPED for r in group),
                "directive_fallbacks": sum(bool(directive_fallbacks(r)) for r in group),
                "best": sum(bool(r["is_best"]) for r in group),
                "mean_reward": sum(rewards) / len(rewards) if rewards else None}

    if not by_type:
        return count(rows)
    types: dict[str, list] = {}
    for r in rows:
        types.setdefault(r["edit_type"], []).append(r)
    out = [{"edit_type": t, **count(g)} for t, g in types.items()]
    return sorted(out, key=lambda c: -(c["mean_reward"] if c["mean_reward"] is not None else float("-inf")))


def results_scope(config: dict) -> dict:
    """Which passages a run's results are over: all of them, or for a ReST-EM run the last round's
    held-out passages (``{"round": R, "split": "holdout"}``); pass as keywords to :func:`summarize`."""
    rounds = config.get("rounds") or 0
    return {"round": rounds, "split": "holdout"} if rounds else {"round": None, "split": None}


def format_duration(ms: int | None) -> str:
    """A run's wall time as the views print it: ``42 s``, ``3.5 min``, ``2 h 05 min``."""
    s = (ms or 0) / 1000
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def plural(n: int, word: str) -> str:
    """``1 passage``, ``3 passages``."""
    return f"{n} {word}" + ("" if n == 1 else "s")


def describe_edits(counts: dict) -> str:
    """The self-edit sentence of every view: skipped self-edits and, when the model wrote directives,
    how many had a field fall back to the default (``counts``: :func:`summarize` or :func:`run_overview`)."""
    out = f"{plural(counts['self_edits'], 'self-edit')}, {counts['skipped']} skipped"
    if counts.get("directives") == "off":
        return out + "; directives off: every adapter trained with the default directive"
    n = counts["directive_fallbacks"]
    return out + f"; {n} of the model-written directives had a field fall back to the default"


def describe_status(run_id: str, status: str, error: str | None = None, command: str = "loop") -> str:
    """The status of a run in words, with how to continue it when it stopped before the end (``command``:
    ``runs.command``, which says whether ``sealq loop`` or ``sealq continual`` resumes it)."""
    from sealq.store import resume_command

    what = {
        RunStatus.DONE: "done",
        RunStatus.RUNNING: "running (a live process holds its lock)",
        RunStatus.DEAD: "dead: recorded as running, but no process holds its lock (killed or crashed)",
        RunStatus.INTERRUPTED: "interrupted (Ctrl-C)",
        RunStatus.FAILED: "failed" + (f" ({error.splitlines()[0][:200]})" if error else ""),
    }.get(status, status)  # type: ignore[call-overload]  # typeshed: a str key finds a RunStatus (a Name hashes as its value)
    if status in RESUMABLE:
        what += f"; continue it with `{resume_command(run_id, command)}`"
    return what


def run_overview(db, run) -> dict:
    """Everything the views say about a run as a whole, derived once (``sealq runs`` rows, the header of
    ``sealq show``, the setup of ``sealq report``).

    Args:
        db: the open ``runs.db``.
        run: a run id or its ``runs`` row.

    Returns:
        ``id``, ``command``, ``started_utc``, ``finished_utc``, ``status`` (:func:`sealq.store.run_status`:
        ``dead`` for a killed run), ``status_text`` (:func:`describe_status`), ``resume`` (the command that
        continues the run, None unless it is failed, interrupted or dead), ``resumes``, ``duration_ms``,
        ``duration``, ``model``, ``data``, ``k``, ``directives``, ``rounds``, ``passages`` and ``questions``
        (over the results' passages, :func:`results_scope`), the :func:`edit_counts` over them, ``edits_text``
        (:func:`describe_edits`) and ``conditions`` (as in :func:`summarize`: the stored summary of a done
        run, else computed from what is recorded so far). A continual run (:func:`continual_overview`) has
        no ``conditions`` (``{}``) but a ``continual`` entry instead.
    """
    row = db["runs"].get(run) if isinstance(run, str) else run
    config = json.loads(row["config_json"] or "{}")
    if row["command"] in (Command.CONTINUAL, Command.LEARN):
        return continual_overview(db, row, config)
    scope = results_scope(config)
    stored = json.loads(row["summary_json"] or "null") if row["status"] == RunStatus.DONE else None
    summary = stored if stored and "conditions" in stored else summarize(db, row["id"], **scope)
    counts = edit_counts(db, row["id"], **scope)
    out = {
        **_run_basics(db, row), "k": config.get("selfedit", {}).get("k"),
        "directives": config.get("selfedit", {}).get("directives"), "rounds": config.get("rounds") or 0,
        "passages": _count_passages(db, row["id"], **scope), "questions": _count_questions(db, row["id"], **scope),
        **{k: counts[k] for k in ("self_edits", "skipped", "directive_fallbacks")},
        "conditions": summary["conditions"],
    }
    out["edits_text"] = describe_edits(out)
    return out


def thread_use(db, row: dict) -> dict:
    """The thread counts of a run: ``run`` (torch and llama.cpp threads decided when it started or last
    resumed, from ``config_json``; None for a run recorded before they were stored), ``automatic`` (True:
    chosen from the free cores, a training may have used fewer; False: given with ``--threads`` or
    ``SEALQ_THREADS``), ``adapters`` (``{threads: adapters and policies trained with that many}``, the
    ``threads`` column, m008; None for rows recorded before it) and ``text`` (one line for the views)."""
    config = json.loads(row["config_json"] or "{}")
    train = config.get("loop", config).get("train", {})
    counts = dict(db.execute(
        """select threads, count(*) from (select threads from adapters where run_id = ?
           union all select threads from policies where run_id = ? and status = ?)
           group by threads order by threads desc""", [row["id"], row["id"], PolicyStatus.TRAINED.value]).fetchall())
    run, automatic = train.get("threads") or None, bool(train.get("lower_when_busy"))
    used = ", ".join(f"{'unrecorded' if n is None else n}: {c}" for n, c in counts.items())
    text = "threads " + ("not recorded" if run is None else f"{run} ({'automatic' if automatic else 'fixed'})")
    if used:
        text += f"; adapters trained with {used}"
    if run and automatic and any(n is not None and n < run for n in counts):
        text += " (fewer: other processes held cores, or workers with their own count)"
    return {"run": run, "automatic": automatic, "adapters": {str(n): c for n, c in counts.items()}, "text": text}


def _run_basics(db, row: dict) -> dict:
    """What every run's overview starts with: ids, times, status and how to continue it, model and data,
    thread counts (:func:`thread_use`)."""
    from sealq.store import resume_command, run_status

    status = run_status(db, row)
    return {"threads": thread_use(db, row),
        "id": row["id"], "command": row["command"], "started_utc": row["started_utc"],
        "finished_utc": row["finished_utc"], "status": status,
        "status_text": describe_status(row["id"], status, row["error"], row["command"]),
        "resume": resume_command(row["id"], row["command"]) if status in RESUMABLE else None,
        "resumes": row["resumes"] or 0, "duration_ms": row["duration_ms"],
        "duration": format_duration(row["duration_ms"]), "model": row["model_name"], "data": row["data_path"],
    }


def continual_overview(db, row: dict, config: dict) -> dict:
    """:func:`run_overview` of a continual run (``sealq continual``).

    Returns:
        The keys of :func:`run_overview`, with ``k`` and ``directives`` from ``config["loop"]``, ``passages``
        = sequences x length (as configured), ``questions`` (gate and scored, as recorded), self-edit counts
        over every sequence and model state, ``conditions`` ``{}``, and ``continual``: ``{"gate", "sequences",
        "length", "before", "just_learned", "final"}``, the last three the first gate's intervals
        (:func:`sealq.analysis.continual.continual_summary`; None while nothing is scored).
    """
    selfedit = config.get("loop", {}).get("selfedit", {})
    results = continual_results(db, row)
    gate = results["gate_order"][0] if results["gate_order"] else None
    figures = results["gates"].get(gate) or {}
    counts = edit_counts(db, row["id"])
    out = {
        **_run_basics(db, row), "k": selfedit.get("k"), "directives": selfedit.get("directives"), "rounds": 0,
        "passages": config["sequences"] * config["length"], "questions": _count_questions(db, row["id"]),
        **{k: counts[k] for k in ("self_edits", "skipped", "directive_fallbacks")}, "conditions": {},
        "continual": {"gate": gate, "sequences": config["sequences"], "length": config["length"],
                      **{k: figures.get(k) for k in ("before", "just_learned", "final")}},
    }
    out["edits_text"] = describe_edits(out)
    return out


def continual_results(db, run) -> dict:
    """The summary of a continual run the views show: the stored one of a done run, else
    :func:`sealq.analysis.continual.continual_summary` of what is recorded so far (missing values None).

    Args:
        run: a run id or its ``runs`` row (``runs.command`` is ``continual``, or ``learn``: then
            :func:`sealq.analysis.learn.learn_summary`, always computed from what is recorded).
    """
    from sealq.analysis.continual import continual_summary

    row = db["runs"].get(run) if isinstance(run, str) else run
    if row["command"] == Command.LEARN:
        from sealq.analysis.learn import learn_summary

        return learn_summary(db, row["id"])  # computed now: a stored one may lack figures a newer sealq adds
    stored = json.loads(row["summary_json"] or "null") if row["status"] == RunStatus.DONE else None
    return stored if stored and stored.get("kind") == Command.CONTINUAL else continual_summary(db, row["id"])


def continual_decisions(db, run_id: str) -> list[dict]:
    """Every gate decision of a continual run, by sequence, step and the run's gate order.

    Returns:
        One dict per (sequence, gate, step) recorded: ``sequence``, ``step`` (the passage's position, 0-based),
        ``passage`` (title), ``gate``, ``status`` (:class:`~sealq.vocab.UpdateStatus`), ``measurement`` (the
        gate's: KL in nats/token, or the drop in gate accuracy on earlier passages; None when the gate measures
        nothing), ``threshold``, ``reward`` (the best self-edit's contains gain on the passage's gate questions;
        None without one), ``self_edit_id``, ``model_id`` and ``next_model_id`` (``continual_models`` ids).
    """
    order = {g: i for i, g in enumerate(json.loads(db["runs"].get(run_id)["config_json"])["gates"])}
    rows = db.query(
        """select d.sequence, d.step, p.title as passage, d.gate, d.status, d.measurement, d.threshold, s.reward,
                  d.self_edit_id, d.model_id, d.next_model_id
           from continual_decisions d left join self_edits s on s.id = d.self_edit_id
           left join passages p on p.run_id = d.run_id and p.split = ? and p.round = d.sequence and p.idx = d.step
           where d.run_id = ?""", [Split.CONTINUAL.value, run_id])
    return sorted(rows, key=lambda d: (d["sequence"], d["step"], order.get(d["gate"], len(order))))


def _count_passages(db, run_id: str, round=None, split=None) -> int:
    extra, params = _where(round, split)
    return db.execute(f"select count(*) from passages where run_id = ?{extra}", [run_id, *params]).fetchone()[0]


def _count_questions(db, run_id: str, round=None, split=None) -> int:
    extra, params = _where(round, split)
    return db.execute(f"select count(*) from questions where passage_id in "
                      f"(select id from passages where run_id = ?{extra})", [run_id, *params]).fetchone()[0]


def summarize(db, run_id: str, round: int | None = None, split: str | None = None) -> dict:
    """Summarize one run (or, for a ReST-EM run, one round and split of it).

    Returns:
        ``{"run_id", "passages", "questions", "self_edits", "skipped", "directive_fallbacks", "directives",
        "conditions": {name: {"n", "contains", "em", "f1"}}, "mean_reward", "best_reward"}``; rewards
        and counts are over sampled self-edits (``source = 'self_edit'``) only (:func:`edit_counts`; a
        directive fallback is a model-written directive with a field that fell back to the default, never
        fixed settings such as ``--directives off``); ``directives`` is the run's ``--directives`` mode;
        ``n`` is the number of questions graded (a metric is None when nothing is graded yet).
    """
    extra, params = _where(round, split)
    conditions = {}
    for name, groups in scores_by_passage(db, run_id, round, split).items():
        grades = [g for passage in groups for g in passage]
        n = len(grades)
        conditions[name] = {"n": n, **{m: (sum(getattr(g, m) for g in grades) / n if n else None) for m in METRICS}}
    scope = f"passage_id in (select id from passages where run_id = ?{extra})"
    counts = edit_counts(db, run_id, round, split)
    best = db.execute(f"select avg(reward) from self_edits where {scope} and is_best = 1", [run_id, *params]).fetchone()
    row = db.execute("select config_json from runs where id = ?", [run_id]).fetchone()
    config = json.loads((row and row[0]) or "{}")
    return {
        "run_id": run_id,
        "passages": _count_passages(db, run_id, round, split),
        "questions": conditions[Row.NO_CONTEXT]["n"],
        "self_edits": counts["self_edits"],
        "skipped": counts["skipped"],
        "directive_fallbacks": counts["directive_fallbacks"],
        "directives": config.get("selfedit", {}).get("directives", "model"),
        "mean_reward": counts["mean_reward"] or 0.0,
        "best_reward": best[0] or 0.0,
        "conditions": conditions,
    }
