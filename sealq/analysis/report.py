"""The run report: one self-contained HTML file (figures embedded as PNG data URIs) and a Markdown twin.

Sections: setup, results (accuracy per condition with 95% intervals resampled by passage), which edits
worked (gain by edit type, gain against directive epochs and learning rate), training loss curves,
examples (the best and the worst self-edit beside its passage, with answers before and after), and
limitations. A continual run gets its own report (:mod:`sealq.analysis.continual_report`); the parts both
share are in :mod:`sealq.analysis.render`.

:func:`build_report` gathers what both renderings show (:class:`_Content`: the tables' rows, the
examples, the limitations, the figures), then renders it as HTML (:func:`_render_html`) and as Markdown
(:func:`_render_markdown`).
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass

from sealq.analysis.continual_report import build_continual_report
from sealq.analysis.render import Report, html_img, html_page, html_table, md_table, png, pyplot
from sealq.analysis.stats import cluster_bootstrap, format_interval
from sealq.analysis.summary import edit_counts, results_scope, run_overview, scores_by_passage
from sealq.analysis.tables import intervals as row_intervals
from sealq.analysis.tables import restem_table
from sealq.errors import SealqError
from sealq.metrics import METRICS
from sealq.vocab import ROW_LABELS, Command, Condition, EditStatus, Row, RunStatus, Source

__all__ = ["build_report", "Report"]

_RESULTS_HEAD = ["condition", "contains", "EM", "F1"]
_TYPES_HEAD = ["edit type", "self-edits", "mean reward", "best picks", "skipped", "directive fallbacks"]
_ROUNDS_HEAD = ["round", "policy (pairs)", "no passage", "mean self-edit", "best-of-K", "mean gain", "best-of-K gain",
                "mean self-edit minus round 0 (paired)"]
_COLORS = {Row.NO_CONTEXT: "#999", Row.WITH_CONTEXT: "#bbb", Row.PASSAGE_ONLY: "#8172b3",
           Row.MEAN_SELF_EDIT: "#4c72b0", Row.BEST_OF_K: "#dd8452", Row.TEACHER: "#55a868"}


@dataclass(frozen=True)
class _Content:
    """What the HTML and the Markdown both show: table rows as text, examples, limitations, figures."""

    run_id: str
    note: str | None
    setup: list
    results: list
    rounds: list
    edit_types: list
    examples: list  # [(heading, example dict or None)]
    limitations: list
    figures: dict


def build_report(db, run_id: str) -> Report:
    """Render the report of one run (a continual run's: :func:`sealq.analysis.continual_report.build_continual_report`).

    Args:
        db: an open ``runs.db`` (sqlite-utils Database).
        run_id: a run whose status is ``done``.

    Raises:
        SealqError: the run has no recorded passages.
    """
    if db["runs"].get(run_id)["command"] in (Command.CONTINUAL, Command.LEARN):
        return build_continual_report(db, run_id)
    c = _gather(db, run_id)
    return Report(_render_html(c), _render_markdown(c), c.figures, c.note)


# ---- gathering


def _gather(db, run_id: str) -> _Content:
    """Everything the report shows, read from ``runs.db``."""
    run = db["runs"].get(run_id)
    config = json.loads(run["config_json"] or "{}")
    overview = run_overview(db, run)
    # a ReST-EM run: the results are the last round's held-out passages; every round is in its own table
    scores = scores_by_passage(db, run_id, **results_scope(config))
    if not scores[Row.NO_CONTEXT]:
        raise SealqError(f"run {run_id} has no recorded passages to report on"
                         + (f" (it is {overview['status_text']})" if overview["status"] != RunStatus.DONE else ""))
    intervals = {row: row_intervals(groups) for row, groups in scores.items()}
    note = None if overview["status"] == RunStatus.DONE else (
        f"run {run_id} is {overview['status_text']}. The figures below cover only what it recorded so far.")
    # every self-edit of the run, passage-only and teacher rows included, all rounds
    by_type = edit_counts(db, run_id, by_type=True, model_only=False)
    return _Content(
        run_id=run_id, note=note, setup=_setup_rows(run, config, overview),
        results=[(ROW_LABELS[row], *[format_interval(intervals[row][m]) for m in METRICS])
                 for row in ROW_LABELS if row in intervals],
        rounds=_round_rows(db, run_id) if config.get("rounds") else [],
        edit_types=[(r["edit_type"], str(r["self_edits"]), f"{r['mean_reward']:+.3f}", str(r["best"]),
                     str(r["skipped"]), str(r["directive_fallbacks"])) for r in by_type],
        examples=[("Best self-edit", _example(db, run_id, "desc")), ("Worst self-edit", _example(db, run_id, "asc"))],
        limitations=_limitations(intervals, overview, config.get("rounds") or 0),
        figures=_figures(db, run_id, intervals),
    )


def _setup_rows(run, config: dict, overview: dict) -> list[tuple[str, str]]:
    dc = config["train"]["default"]
    se = config["selfedit"]
    return [
        ("run", run["id"]), ("model", f"{run['model_name']} ({run['model_path']}, sha256 {run['model_sha256'][:12]}…)"),
        ("data", run["data_path"]), ("passages / questions", f"{overview['passages']} / {overview['questions']}"),
        ("self-edits per passage (K)", str(se["k"])),
        ("edit types", ", ".join(se["edit_types"])),
        ("directives", f"{se['directives']} (default epochs={dc['epochs']}, lr={dc['lr']:g}, rank={dc['rank']})"),
        ("self-edits" + (" (last round, held out)" if config.get("rounds") else ""), overview["edits_text"]),
        ("seed", str(run["seed"])), ("status", overview["status_text"]),
        ("duration", overview["duration"]),
    ]


def _round_rows(db, run_id: str) -> list[tuple]:
    """The ReST-EM rounds table: held-out contains accuracy and gains per round."""
    ci = format_interval
    rows = []
    for r in restem_table(db, run_id):
        h, pol = r.get("holdout"), r.get("policy")
        if h:
            rows.append((r["round"], "base" if pol is None else f"{pol['status']} ({pol['n_pairs']})",
                         ci(h[Row.NO_CONTEXT]["contains"]), ci(h[Row.MEAN_SELF_EDIT]["contains"]),
                         ci(h[Row.BEST_OF_K]["contains"]), ci(h["mean_gain"]["contains"], True),
                         ci(h["best_gain"]["contains"], True),
                         ci(h["vs_round0"][Row.MEAN_SELF_EDIT]["contains"], True) if "vs_round0" in h else "-"))
    return rows


def _limitations(intervals: dict, overview: dict, rounds: int) -> list[str]:
    widths = [iv["contains"]["high"] - iv["contains"]["low"] for iv in intervals.values()]
    return [
        f"Model size: a 135M-parameter model; its answers are long and often wrong even with the passage in the "
        f"prompt (ceiling {intervals[Row.WITH_CONTEXT]['contains']['estimate']:.2f}).",
        f"Sample size: {overview['questions']} questions over {overview['passages']} passages; 95% intervals are "
        f"{min(widths):.2f}–{max(widths):.2f} wide, so differences smaller than that are not established.",
        "Best-of-K selects the self-edit on the same questions it is scored on: an oracle upper bound, not a "
        "held-out estimate.",
        "Forgetting is not measured: no test checks what the adapters did to knowledge outside the passage.",
        (f"ReST-EM: {rounds} rounds; the results above are the last round's model on the held-out passages, the "
         "rounds table compares rounds." if rounds else "The ReST-EM outer loop did not run in this run: no per-round table."),
        "Metric: contains accepts any answer that includes the gold span, so a long answer listing several "
        "candidates could be counted correct; EM and F1 are reported beside it.",
    ]


def _example(db, run_id: str, order: str) -> dict | None:
    """The trained self-edit with the highest (``order="desc"``) or lowest (``"asc"``) reward, with its
    passage and every question's answer before and after."""
    row = db.execute(
        f"""select s.id, s.edit_type, s.text, s.reward, s.directive_json, p.title, p.context, p.id
            from self_edits s join passages p on p.id = s.passage_id
            where s.run_id = ? and s.status = ? and s.source = ? order by s.reward {order}, s.id limit 1""",
        [run_id, EditStatus.OK.value, Source.SELF_EDIT.value]).fetchone()
    if row is None:
        return None
    se_id, edit_type, text, reward, directive, title, context, pid = row
    qa = db.execute(
        """select q.question, q.answers_json,
                  (select prediction from answers where question_id = q.id and condition = ?),
                  (select prediction from answers where question_id = q.id and self_edit_id = ?),
                  (select contains from answers where question_id = q.id and self_edit_id = ?)
           from questions q where q.passage_id = ? order by q.idx""",
        [Condition.NO_CONTEXT.value, se_id, se_id, pid]).fetchall()
    return {"id": se_id, "edit_type": edit_type, "text": text, "reward": reward, "directive": json.loads(directive),
            "title": title, "context": context,
            "qa": [{"question": q, "gold": json.loads(g), "before": b, "after": a, "correct": bool(c)}
                   for q, g, b, a, c in qa]}


# ---- figures


def _figures(db, run_id: str, intervals: dict) -> dict:
    """The report's four figures, name -> PNG bytes."""
    edits = list(db.query(
        """select s.edit_type, s.reward, s.status, a.epochs, a.lr, a.loss_curve_json, s.id
           from self_edits s left join adapters a on a.self_edit_id = s.id where s.run_id = ?""", [run_id]))
    trained = [e for e in edits if e["epochs"] is not None]
    return {"accuracy": _accuracy_figure(intervals), "edit_types": _edit_type_figure(edits),
            "directives": _directive_figure(trained), "loss": _loss_figure(trained)}


def _accuracy_figure(intervals: dict) -> bytes:
    """Contains accuracy per table row with its 95% interval."""
    fig, ax = pyplot().subplots(figsize=(7, 3.2))
    rows = [row for row in ROW_LABELS if row in intervals]
    est = [intervals[row]["contains"]["estimate"] for row in rows]
    err = [[e - intervals[row]["contains"]["low"] for row, e in zip(rows, est)],
           [intervals[row]["contains"]["high"] - e for row, e in zip(rows, est)]]
    ax.bar([ROW_LABELS[row].replace(" (", "\n(") for row in rows], est, yerr=err, capsize=5,
           color=[_COLORS[row] for row in rows])
    ax.set_ylabel("contains accuracy")
    ax.set_ylim(0, 1)
    ax.set_title("Accuracy per condition (95% bootstrap interval, resampled by passage)")
    ax.tick_params(axis="x", labelsize=8)
    return png(fig)


def _edit_type_figure(edits: list[dict]) -> bytes:
    """Mean reward per edit type with a 95% interval (each self-edit its own cluster)."""
    types = sorted({e["edit_type"] for e in edits})
    fig, ax = pyplot().subplots(figsize=(6, 3))
    for i, t in enumerate(types):
        r = [e["reward"] for e in edits if e["edit_type"] == t]
        iv = cluster_bootstrap([[x] for x in r])
        ax.bar(i, iv.estimate, yerr=[[iv.estimate - iv.low], [iv.high - iv.estimate]], capsize=5, color="#4c72b0")
        ax.text(i, 0, f"n={len(r)}", ha="center", va="bottom", fontsize=8, color="white")
    ax.set_xticks(range(len(types)), types)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel("reward (contains gain)")
    ax.set_title("Gain by edit type (mean, 95% interval)")
    return png(fig)


def _directive_figure(trained: list[dict]) -> bytes:
    """Reward against the epochs and the learning rate each adapter trained with."""
    fig, axes = pyplot().subplots(1, 2, figsize=(8, 3), sharey=True)
    axes[0].scatter([e["epochs"] for e in trained], [e["reward"] for e in trained], alpha=0.7)
    axes[0].set_xlabel("epochs")
    axes[0].set_ylabel("reward (contains gain)")
    axes[1].scatter([e["lr"] for e in trained], [e["reward"] for e in trained], alpha=0.7, color="#dd8452")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("learning rate")
    fig.suptitle("Gain against the directive used")
    return png(fig)


def _loss_figure(trained: list[dict]) -> bytes:
    """Training loss curves of the first six adapters."""
    fig, ax = pyplot().subplots(figsize=(6, 3))
    for e in trained[:6]:
        curve = json.loads(e["loss_curve_json"])
        ax.plot(range(1, len(curve) + 1), curve, label=f"self-edit {e['id']} ({e['edit_type']})", lw=1)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title("Training loss of the first adapters")
    return png(fig)


# ---- HTML


def _qa_rows(ex: dict) -> list[tuple]:
    return [(q["question"], " / ".join(q["gold"]), q["before"] or "", q["after"] or "", "yes" if q["correct"] else "no")
            for q in ex["qa"]]


def _html_example(title: str, ex: dict | None) -> str:
    if ex is None:
        return f"<h3>{title}</h3><p>No trained self-edit.</p>"
    d = ex["directive"]
    return (f"<h3>{title}: {html.escape(ex['title'])} ({ex['edit_type']}, reward {ex['reward']:+.2f}, "
            f"epochs={d['epochs']} lr={d['lr']:g} r={d['rank']})</h3>"
            f'<div class="pair"><div><h4>Passage</h4><p>{html.escape(ex["context"])}</p></div>'
            f'<div><h4>Self-edit</h4><pre>{html.escape(ex["text"])}</pre></div></div>'
            + html_table(["question", "gold", "before (base, no passage)", "after (adapted, no passage)",
                           "correct after"], _qa_rows(ex)))


def _render_html(c: _Content) -> str:
    """The self-contained HTML page (figures as data URIs)."""
    figs = c.figures
    body = [
        f"<h1>sealq report — run {c.run_id}</h1>",
        *([f'<p class="note"><strong>{html.escape(c.note)}</strong></p>'] if c.note else []),
        "<h2>Setup</h2>", html_table(["", ""], c.setup),
        "<h2>Results</h2><p>Contains accuracy, exact match and F1 with 95% bootstrap intervals (passages resampled). "
        "All answers are given without the passage except the ceiling.</p>",
        html_table(_RESULTS_HEAD, c.results), html_img(figs["accuracy"], "accuracy per condition"),
        *(["<h2>ReST-EM rounds</h2><p>Held-out passages, contains accuracy, 95% intervals.</p>",
           html_table(_ROUNDS_HEAD, c.rounds)] if c.rounds else []),
        "<h2>Which edits worked</h2>", html_table(_TYPES_HEAD, c.edit_types),
        html_img(figs["edit_types"], "gain by edit type"),
        html_img(figs["directives"], "gain against directive epochs and learning rate"),
        "<h2>Training</h2>", html_img(figs["loss"], "training loss curves"),
        "<h2>Examples</h2>", *[_html_example(t, e) for t, e in c.examples],
        "<h2>Limitations</h2><ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in c.limitations) + "</ul>",
    ]
    return html_page(f"sealq report {c.run_id}", body)


# ---- Markdown


def _md_example(title: str, ex: dict) -> list[str]:
    return [f"### {title}: {ex['title']} ({ex['edit_type']}, reward {ex['reward']:+.2f})\n", f"Passage: {ex['context']}\n",
            "Self-edit:\n", "```\n" + ex["text"] + "\n```\n",
            md_table(["question", "gold", "before", "after", "correct after"], _qa_rows(ex))]


def _render_markdown(c: _Content) -> str:
    """The Markdown twin; figures are linked as ``{stem}_files/NAME.png`` (:meth:`Report.write` fills in the stem)."""
    stem = "{stem}_files"
    md = [f"# sealq report — run {c.run_id}\n", *([f"**{c.note}**\n"] if c.note else []),
          "## Setup\n", md_table(["", ""], c.setup),
          "## Results\n", md_table(_RESULTS_HEAD, c.results), f"![accuracy per condition]({stem}/accuracy.png)\n",
          *(["## ReST-EM rounds\n", md_table(_ROUNDS_HEAD, c.rounds)] if c.rounds else []),
          "## Which edits worked\n", md_table(_TYPES_HEAD, c.edit_types),
          f"![gain by edit type]({stem}/edit_types.png)\n", f"![gain against directives]({stem}/directives.png)\n",
          "## Training\n", f"![training loss]({stem}/loss.png)\n", "## Examples\n"]
    for title, ex in c.examples:
        if ex is not None:
            md += _md_example(title, ex)
    md += ["## Limitations\n", *[f"- {x}" for x in c.limitations], ""]
    return "\n".join(md)
