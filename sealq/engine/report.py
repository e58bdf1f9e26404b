"""The run report: one self-contained HTML file (figures embedded as PNG data URIs) and a Markdown twin.

Sections: setup, results (accuracy per condition with 95% intervals resampled by passage), which edits
worked (gain by edit type, gain against directive epochs and learning rate), training loss curves,
examples (the best and the worst self-edit beside its passage, with answers before and after), and
limitations.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from sealq.engine.stats import cluster_bootstrap
from sealq.engine.summary import CONDITIONS, edit_counts, results_scope, run_overview, scores_by_passage
from sealq.errors import SealqError

__all__ = ["build_report", "Report"]



@dataclass
class Report:
    """A rendered report: HTML text, Markdown text, and the figures (name -> PNG bytes)."""

    html: str
    markdown: str
    figures: dict = field(default_factory=dict)
    #: for a run that is not done: its status in words and how to continue it (the report says it too)
    note: str | None = None

    def write(self, html_path: Path) -> tuple[Path, Path]:
        """Write ``html_path``, ``html_path.with_suffix('.md')`` and the Markdown's PNGs beside it."""
        html_path = Path(html_path)
        html_path.parent.mkdir(parents=True, exist_ok=True)
        html_path.write_text(self.html, encoding="utf-8")
        md = html_path.with_suffix(".md")
        fig_dir = html_path.parent / f"{html_path.stem}_files"
        fig_dir.mkdir(exist_ok=True)
        for name, png in self.figures.items():
            (fig_dir / f"{name}.png").write_bytes(png)
        md.write_text(self.markdown.replace("{stem}_files", fig_dir.name), encoding="utf-8")
        return html_path, md


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _figures(db, run_id: str, intervals: dict) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = {}
    # 1. accuracy per condition with 95% intervals
    fig, ax = plt.subplots(figsize=(7, 3.2))
    names = [c for c in CONDITIONS if c in intervals]
    est = [intervals[c]["contains"].estimate for c in names]
    err = [[e - intervals[c]["contains"].low for c, e in zip(names, est)],
           [intervals[c]["contains"].high - e for c, e in zip(names, est)]]
    ax.bar([CONDITIONS[c].replace(" (", "\n(") for c in names], est, yerr=err, capsize=5,
           color=[{"no_context": "#999", "with_context": "#bbb", "passage_only": "#8172b3", "mean_self_edit": "#4c72b0",
                   "best_of_k": "#dd8452", "teacher": "#55a868"}[c] for c in names])
    ax.set_ylabel("contains accuracy")
    ax.set_ylim(0, 1)
    ax.set_title("Accuracy per condition (95% bootstrap interval, resampled by passage)")
    ax.tick_params(axis="x", labelsize=8)
    figs["accuracy"] = _png(fig)

    edits = list(db.query(
        """select s.edit_type, s.reward, s.status, a.epochs, a.lr, a.loss_curve_json, s.id
           from self_edits s left join adapters a on a.self_edit_id = s.id where s.run_id = ?""", [run_id]))
    # 2. gain by edit type
    types = sorted({e["edit_type"] for e in edits})
    fig, ax = plt.subplots(figsize=(6, 3))
    for i, t in enumerate(types):
        r = [e["reward"] for e in edits if e["edit_type"] == t]
        iv = cluster_bootstrap([[x] for x in r])
        ax.bar(i, iv.estimate, yerr=[[iv.estimate - iv.low], [iv.high - iv.estimate]], capsize=5, color="#4c72b0")
        ax.text(i, 0, f"n={len(r)}", ha="center", va="bottom", fontsize=8, color="white")
    ax.set_xticks(range(len(types)), types)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel("reward (contains gain)")
    ax.set_title("Gain by edit type (mean, 95% interval)")
    figs["edit_types"] = _png(fig)
    # 3. gain against directive epochs and learning rate
    trained = [e for e in edits if e["epochs"] is not None]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3), sharey=True)
    axes[0].scatter([e["epochs"] for e in trained], [e["reward"] for e in trained], alpha=0.7)
    axes[0].set_xlabel("epochs")
    axes[0].set_ylabel("reward (contains gain)")
    axes[1].scatter([e["lr"] for e in trained], [e["reward"] for e in trained], alpha=0.7, color="#dd8452")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("learning rate")
    fig.suptitle("Gain against the directive used")
    figs["directives"] = _png(fig)
    # 4. training loss curves of a few adapters
    fig, ax = plt.subplots(figsize=(6, 3))
    for e in trained[:6]:
        curve = json.loads(e["loss_curve_json"])
        ax.plot(range(1, len(curve) + 1), curve, label=f"self-edit {e['id']} ({e['edit_type']})", lw=1)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title("Training loss of the first adapters")
    figs["loss"] = _png(fig)
    return figs


def _example(db, run_id: str, order: str) -> dict | None:
    row = db.execute(
        f"""select s.id, s.edit_type, s.text, s.reward, s.directive_json, p.title, p.context, p.id
            from self_edits s join passages p on p.id = s.passage_id
            where s.run_id = ? and s.status = 'ok' and s.source = 'model' order by s.reward {order}, s.id limit 1""", [run_id]).fetchone()
    if row is None:
        return None
    se_id, edit_type, text, reward, directive, title, context, pid = row
    qa = db.execute(
        """select q.question, q.answers_json,
                  (select prediction from answers where question_id = q.id and condition = 'no_context'),
                  (select prediction from answers where question_id = q.id and self_edit_id = ?),
                  (select contains from answers where question_id = q.id and self_edit_id = ?)
           from questions q where q.passage_id = ? order by q.idx""", [se_id, se_id, pid]).fetchall()
    return {"id": se_id, "edit_type": edit_type, "text": text, "reward": reward, "directive": json.loads(directive),
            "title": title, "context": context,
            "qa": [{"question": q, "gold": json.loads(g), "before": b, "after": a, "correct": bool(c)}
                   for q, g, b, a, c in qa]}


def build_report(db, run_id: str) -> Report:
    """Render the report of one run.

    Args:
        db: an open ``runs.db`` (sqlite-utils Database).
        run_id: a run whose status is ``done``.

    Raises:
        SealqError: the run has no recorded passages.
    """
    run = db["runs"].get(run_id)
    config = json.loads(run["config_json"] or "{}")
    rounds = config.get("rounds") or 0
    overview = run_overview(db, run)
    # a ReST-EM run: the results are the last round's held-out passages; every round is in its own table
    scores = scores_by_passage(db, run_id, **results_scope(config))
    if not scores["no_context"]:
        raise SealqError(f"run {run_id} has no recorded passages to report on"
                         + (f" (it is {overview['status_text']})" if overview["status"] != "done" else ""))
    intervals = {c: {m: cluster_bootstrap([[g[i] for g in p] for p in scores[c]]) for i, m in enumerate(("contains", "em", "f1"))}
                 for c in scores}
    figs = _figures(db, run_id, intervals)
    n_pass, n_q = overview["passages"], overview["questions"]
    # every self-edit of the run, passage-only and teacher rows included, all rounds
    by_type = edit_counts(db, run_id, by_type=True, model_only=False)
    examples = [("Best self-edit", _example(db, run_id, "desc")), ("Worst self-edit", _example(db, run_id, "asc"))]
    widths = [intervals[c]["contains"].high - intervals[c]["contains"].low for c in intervals]
    dc = config["train"]["default"]
    note = None if overview["status"] == "done" else (
        f"run {run_id} is {overview['status_text']}. The figures below cover only what it recorded so far.")

    setup = [
        ("run", run_id), ("model", f"{run['model_name']} ({run['model_path']}, sha256 {run['model_sha256'][:12]}…)"),
        ("data", run["data_path"]), ("passages / questions", f"{n_pass} / {n_q}"),
        ("self-edits per passage (K)", str(config["selfedit"]["k"])),
        ("edit types", ", ".join(config["selfedit"]["edit_types"])),
        ("directives", f"{config['selfedit']['directives']} (default epochs={dc['epochs']}, lr={dc['lr']:g}, rank={dc['rank']})"),
        ("self-edits" + (" (last round, held out)" if rounds else ""), overview["edits_text"]),
        ("seed", str(run["seed"])), ("status", overview["status_text"]),
        ("duration", overview["duration"]),
    ]
    results = [(CONDITIONS[c], *[f"{intervals[c][m].estimate:.3f} [{intervals[c][m].low:.3f}, {intervals[c][m].high:.3f}]"
                                 for m in ("contains", "em", "f1")]) for c in CONDITIONS if c in intervals]
    types = [(r["edit_type"], str(r["self_edits"]), f"{r['mean_reward']:+.3f}", str(r["best"]), str(r["skipped"]),
              str(r["directive_fallbacks"])) for r in by_type]
    limitations = [
        f"Model size: a 135M-parameter model; its answers are long and often wrong even with the passage in the "
        f"prompt (ceiling {intervals['with_context']['contains'].estimate:.2f}).",
        f"Sample size: {n_q} questions over {n_pass} passages; 95% intervals are {min(widths):.2f}–{max(widths):.2f} "
        "wide, so differences smaller than that are not established.",
        "Best-of-K selects the self-edit on the same questions it is scored on: an oracle upper bound, not a "
        "held-out estimate.",
        "Forgetting is not measured: no test checks what the adapters did to knowledge outside the passage.",
        (f"ReST-EM: {rounds} rounds; the results above are the last round's model on the held-out passages, the "
         "rounds table compares rounds." if rounds else "The ReST-EM outer loop did not run in this run: no per-round table."),
        "Metric: contains accepts any answer that includes the gold span, so a long answer listing several "
        "candidates could be counted correct; EM and F1 are reported beside it.",
    ]

    round_head = ["round", "policy (pairs)", "no passage", "mean self-edit", "best-of-K", "mean gain", "best-of-K gain",
                  "mean self-edit minus round 0 (paired)"]
    round_rows = []
    if rounds:
        from sealq.engine.restem import restem_table

        from sealq.engine.stats import format_interval as ci

        for r in restem_table(db, run_id):
            h, pol = r.get("holdout"), r.get("policy")
            if h:
                round_rows.append((r["round"], "base" if pol is None else f"{pol['status']} ({pol['n_pairs']})",
                                   ci(h["no_context"]["contains"]), ci(h["mean_self_edit"]["contains"]),
                                   ci(h["best_of_k"]["contains"]), ci(h["mean_gain"]["contains"], True),
                                   ci(h["best_gain"]["contains"], True),
                                   ci(h["vs_round0"]["mean_self_edit"]["contains"], True) if "vs_round0" in h else "-"))

    # ---- HTML
    def table(head, rows):
        h = "".join(f"<th>{html.escape(x)}</th>" for x in head)
        b = "".join("<tr>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in r) + "</tr>" for r in rows)
        return f"<table><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>"

    def img(name, alt):
        data = base64.b64encode(figs[name]).decode()
        return f'<figure><img class="figure" alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'

    def example_html(title, ex):
        if ex is None:
            return f"<h3>{title}</h3><p>No trained self-edit.</p>"
        qa_rows = [(q["question"], " / ".join(q["gold"]), q["before"] or "", q["after"] or "", "yes" if q["correct"] else "no")
                   for q in ex["qa"]]
        d = ex["directive"]
        return (f"<h3>{title}: {html.escape(ex['title'])} ({ex['edit_type']}, reward {ex['reward']:+.2f}, "
                f"epochs={d['epochs']} lr={d['lr']:g} r={d['rank']})</h3>"
                f'<div class="pair"><div><h4>Passage</h4><p>{html.escape(ex["context"])}</p></div>'
                f'<div><h4>Self-edit</h4><pre>{html.escape(ex["text"])}</pre></div></div>'
                + table(["question", "gold", "before (base, no passage)", "after (adapted, no passage)", "correct after"], qa_rows))

    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px;"
             "vertical-align:top;text-align:left}th{background:#f3f3f3}.pair{display:flex;gap:1em}.pair>div{flex:1}"
             "pre{white-space:pre-wrap;background:#f8f8f8;padding:.5em;font-size:13px}img.figure{max-width:100%}")
    script = ("window.addEventListener('load',function(){var n=0;document.querySelectorAll('img.figure')"
              ".forEach(function(i){if(i.complete&&i.naturalWidth>0)n++});document.body.dataset.figuresLoaded=n;});")
    body = [
        f"<h1>sealq report — run {run_id}</h1>",
        *([f'<p class="note"><strong>{html.escape(note)}</strong></p>'] if note else []),
        "<h2>Setup</h2>", table(["", ""], setup),
        "<h2>Results</h2><p>Contains accuracy, exact match and F1 with 95% bootstrap intervals (passages resampled). "
        "All answers are given without the passage except the ceiling.</p>",
        table(["condition", "contains", "EM", "F1"], results), img("accuracy", "accuracy per condition"),
        *(["<h2>ReST-EM rounds</h2><p>Held-out passages, contains accuracy, 95% intervals.</p>",
           table(round_head, round_rows)] if round_rows else []),
        "<h2>Which edits worked</h2>", table(["edit type", "self-edits", "mean reward", "best picks", "skipped", "directive fallbacks"], types),
        img("edit_types", "gain by edit type"), img("directives", "gain against directive epochs and learning rate"),
        "<h2>Training</h2>", img("loss", "training loss curves"),
        "<h2>Examples</h2>", *[example_html(t, e) for t, e in examples],
        "<h2>Limitations</h2><ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in limitations) + "</ul>",
    ]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>sealq report {run_id}</title>"
            f"<style>{style}</style><script>{script}</script></head><body>{''.join(body)}</body></html>")

    # ---- Markdown twin
    def md_table(head, rows):
        esc = lambda x: str(x).replace("|", "\\|").replace("\n", " ")  # noqa: E731
        return "\n".join(["| " + " | ".join(map(esc, head)) + " |", "|" + "---|" * len(head)]
                         + ["| " + " | ".join(map(esc, r)) + " |" for r in rows]) + "\n"

    stem = "{stem}_files"
    md = [f"# sealq report — run {run_id}\n", *([f"**{note}**\n"] if note else []), "## Setup\n", md_table(["", ""], setup), "## Results\n",
          md_table(["condition", "contains", "EM", "F1"], results), f"![accuracy per condition]({stem}/accuracy.png)\n",
          *(["## ReST-EM rounds\n", md_table(round_head, round_rows)] if round_rows else []),
          "## Which edits worked\n", md_table(["edit type", "self-edits", "mean reward", "best picks", "skipped", "directive fallbacks"], types),
          f"![gain by edit type]({stem}/edit_types.png)\n", f"![gain against directives]({stem}/directives.png)\n",
          "## Training\n", f"![training loss]({stem}/loss.png)\n", "## Examples\n"]
    for t, ex in examples:
        if ex is None:
            continue
        md += [f"### {t}: {ex['title']} ({ex['edit_type']}, reward {ex['reward']:+.2f})\n", f"Passage: {ex['context']}\n",
               "Self-edit:\n", "```\n" + ex["text"] + "\n```\n",
               md_table(["question", "gold", "before", "after", "correct after"],
                        [(q["question"], " / ".join(q["gold"]), q["before"] or "", q["after"] or "", "yes" if q["correct"] else "no")
                         for q in ex["qa"]])]
    md += ["## Limitations\n", *[f"- {x}" for x in limitations], ""]
    return Report(page, "\n".join(md), figs, note)
