"""The report of a continual run (``sealq continual``): one self-contained HTML file and a Markdown twin.

Sections: setup; the gates side by side (before, just learned, final, backward transfer, update counts);
per gate the mean forgetting matrix as a table and a heatmap; retention after d more steps and passage 0's
curve beside SEAL's (sec. 4.3, :data:`sealq.analysis.continual.SEAL_PASSAGE0`), as tables and one figure;
the stacking parity; limitations. The figures are in :mod:`sealq.analysis.continual`'s summary
(:func:`sealq.analysis.summary.continual_results`: the stored summary of a done run, else what is recorded).

The content is gathered once as a list of blocks (heading, paragraph, note, table, figure, list) that both
renderings walk, so the HTML and the Markdown show the same thing.
"""

from __future__ import annotations

import html
import json

import numpy as np

from sealq.analysis.continual import SEAL_PASSAGE0
from sealq.analysis.render import FIGURE_DIR, Report, html_img, html_page, html_table, md_table, png, pyplot
from sealq.analysis.stats import format_interval
from sealq.analysis.summary import continual_results, plural, run_overview
from sealq.errors import SealqError
from sealq.vocab import QuestionRole, RunStatus, Split

__all__ = ["build_continual_report"]

_SUMMARY_HEAD = ["gate", "before", "just learned", "final", "backward transfer", "accepted", "rejected", "no update",
                 "rejected share", "mean measurement"]


def build_continual_report(db, run_id: str) -> Report:
    """Render the report of one continual run (module docstring).

    Args:
        db: an open ``runs.db`` (sqlite-utils Database).
        run_id: a run with ``runs.command = 'continual'``; one that is not done is reported as far as it got.

    Returns:
        A :class:`~sealq.analysis.render.Report`; its figures are ``matrix_<i>`` (the i-th gate's heatmap)
        and ``retention``.

    Raises:
        SealqError: the run has recorded no passage yet.
    """
    run = db["runs"].get(run_id)
    overview = run_overview(db, run)
    questions = _question_counts(db, run_id)
    if not questions:
        raise SealqError(f"run {run_id} has no recorded passages to report on"
                         + (f" (it is {overview['status_text']})" if overview["status"] != RunStatus.DONE else ""))
    summary = continual_results(db, run)
    note = None if overview["status"] == RunStatus.DONE else (
        f"run {run_id} is {overview['status_text']}. The figures below cover only what it recorded so far.")
    figures = {f"matrix_{i}": _heatmap(gate, summary["gates"][gate], summary["sequences"])
               for i, gate in enumerate(summary["gate_order"])}
    figures["retention"] = _retention_figure(summary)
    config = json.loads(run["config_json"])
    blocks = [*([("note", note)] if note else []),
              ("h2", "Setup"), ("table", ["", ""], _setup_rows(run, config, overview, questions)),
              *_results_blocks(summary), *_retention_blocks(summary),
              ("h2", "Limitations"), ("ul", _limitations(summary, config, questions, run["model_name"]))]
    title = f"sealq report — run {run_id} (continual)"
    return Report(_render_html(title, blocks, figures), _render_markdown(title, blocks), figures, note)


# ---- gathering


def _question_counts(db, run_id: str) -> list[tuple[int, int]]:
    """Per recorded passage of the run, (scored questions, gate questions)."""
    return db.execute(
        """select sum(q.role = ?), sum(q.role = ?) from passages p join questions q on q.passage_id = p.id
           where p.run_id = ? and p.split = ? group by p.id""",
        [QuestionRole.SCORED.value, QuestionRole.GATE.value, run_id, Split.CONTINUAL.value]).fetchall()


def _setup_rows(run, config: dict, overview: dict, questions: list) -> list[tuple[str, str]]:
    loop, n, length = config["loop"], config["sequences"], config["length"]
    se, train = loop["selfedit"], loop["train"]
    dc = train["default"]
    directive = f"epochs={dc['epochs']}, lr={dc['lr']:g}, rank={dc['rank']}" + (
        " for every update (directives off)" if se["directives"] == "off" else
        f" (the default; directives: {se['directives']})")
    return [
        ("run", run["id"]), ("model", f"{run['model_name']} ({run['model_path']}, sha256 {run['model_sha256'][:12]}…)"),
        ("data", run["data_path"]),
        ("sequences x length", f"{n} x {length} ({n * length} passages; {sum(s for s, _ in questions)} scored and "
                               f"{sum(g for _, g in questions)} gate questions recorded)"),
        ("self-edits per step (K)", str(se["k"])), ("edit types", ", ".join(se["edit_types"])),
        ("gates", ", ".join(config["gates"])),
        ("gate questions", f"{config['gate_fraction']:g} of each passage's questions go to best-of-K and the gates; "
                           "the rest are scored" if "gate_fraction" in config else
                           "the model's own probe questions (sealq learn); scored: the passages' gold questions "
                           "if they have any, else the probes again"),
        ("training directive", directive), ("precision", str(train.get("precision"))),
        ("self-edits", overview["edits_text"]), ("seed", str(run["seed"])), ("status", overview["status_text"]),
        ("duration", overview["duration"]),
    ]


def _iv(x, signed: bool = False) -> str:
    return "-" if x is None else format_interval(x, signed)


def _summary_row(gate: str, g: dict) -> tuple:
    u = g["updates"]
    return (gate, _iv(g["before"]), _iv(g["just_learned"]), _iv(g["final"]), _iv(g["backward_transfer"], True),
            str(u["accepted"]), str(u["rejected"]), str(u["no_update"]),
            "-" if u["rejected_share"] is None else f"{u['rejected_share']:.0%}",
            "-" if u["mean_measurement"] is None else f"{u['mean_measurement']:.4g}")


def _matrix_rows(g: dict) -> list[tuple]:
    """The mean matrix as table rows: ``after i steps`` then one cell per passage (blank: undefined)."""
    cell = lambda x: "" if x is None else f"{x['estimate']:.2f} [{x['low']:.2f}, {x['high']:.2f}]"  # noqa: E731
    return [(_after(i), *[cell(x) for x in row]) for i, row in enumerate(g["matrix"])]


def _after(i: int) -> str:
    return f"after {plural(i, 'step')}"


def _results_blocks(summary: dict) -> list[tuple]:
    """The gates side by side, then per gate its matrix (table and heatmap)."""
    n, length = summary["sequences"], summary["length"]
    blocks = [
        ("h2", "Results"),
        ("p", f"Contains accuracy on each passage's scored questions, no passage in the prompt; mean over {n} "
              "sequences with a 95% bootstrap interval that resamples sequences. Before: a passage just before it "
              "is learned; just learned: right after; final: after the last step; backward transfer: final minus "
              "just learned (negative is forgetting). Mean measurement: the gate's (KL in nats/token, or the drop "
              "in gate accuracy on earlier passages)."),
        ("table", _SUMMARY_HEAD, [_summary_row(gate, summary["gates"][gate]) for gate in summary["gate_order"]]),
        ("h2", "Forgetting matrix"),
        ("p", "Row i: the model after the first i steps (row 0: the base model; a rejected update leaves the "
              "model unchanged); column j: passage j of the sequence. Cells above the diagonal are undefined "
              "(a passage is scored from the step it is learned at)."),
    ]
    for i, gate in enumerate(summary["gate_order"]):
        blocks += [("h3", f"gate {gate}"),
                   ("table", ["", *[f"passage {j}" for j in range(length)]], _matrix_rows(summary["gates"][gate])),
                   ("img", f"matrix_{i}", f"forgetting matrix, gate {gate}")]
    return blocks


def _retention_blocks(summary: dict) -> list[tuple]:
    """Retention after d more steps and passage 0's curve (with SEAL's), then the stacking parity."""
    length, order = summary["length"], summary["gate_order"]
    seal = ("SEAL (Qwen2.5-7B, sec. 4.3)", *[f"{x:.3f}" for x in SEAL_PASSAGE0[:length + 1]])
    return [
        ("h2", "Retention"),
        ("p", "Retention after d more steps: the mean over passages of the accuracy d steps after the step that "
              "learned them (d = 0: just learned). Passage 0: the first passage of each sequence, before it is "
              "learned (step 0) and after each step, beside SEAL's figures for its passage 0."),
        ("table", ["gate", *[f"d = {d}" for d in range(length)]],
         [(gate, *[_iv(x) for x in summary["gates"][gate]["retention"]]) for gate in order]),
        ("table", ["passage 0", *[_after(i) for i in range(length + 1)]],
         [(f"gate {gate}", *[_iv(x) for x in summary["gates"][gate]["passage0"]]) for gate in order] + [seal]),
        ("img", "retention", "retention and passage 0 per gate"),
        ("h2", "Parity"), ("p", _parity_line(summary["parity"])),
    ]


def _parity_line(p: dict | None) -> str:
    if not p:
        return "No stacked model state was checked (no update accepted yet)."
    return (f"Stacked GGUF adapters in llama.cpp (which answers) against merged PEFT weights (which trains), "
            f"{p['model_states']} model states: logit-change correlation >= {p['min_corr']:.5f}, relative size "
            f"{p['scale_range'][0]:.4f}–{p['scale_range'][1]:.4f}, largest absolute difference of the two logit changes {p['max_abs']:.3g}.")


def _limitations(summary: dict, config: dict, questions: list, model: str) -> list[str]:
    n, length = summary["sequences"], summary["length"]
    scored = [s for s, _ in questions]
    return [
        f"Few sequences: {n} sequences of {length} passages. Every interval resamples whole sequences, so with "
        "this few it is rough, and differences between gates smaller than its width are not established.",
        f"Scored questions per passage: {_span(scored)} ({sum(scored)} in all); each matrix entry of one "
        f"sequence averages that few answers. "
        + (f"The other questions ({config['gate_fraction']:g} of each passage) went to best-of-K and the gates, "
           "which never see the scored ones." if "gate_fraction" in config else
           "A learn run: best-of-K and the gates saw the model's probe questions; without gold questions the "
           "matrix is on those probes themselves (optimistic)."),
        "Entries are contains accuracy without the passage in the prompt: any answer that includes the gold span "
        "counts, so a long answer listing several candidates could be counted correct (EM and F1 are recorded in "
        "continual_answers, not shown).",
        f"Model: {model}. SEAL's passage-0 figures come from Qwen2.5-7B on SQuAD passages: compare the shape of "
        "the curves, not their level.",
        "Under a gate that rejects updates, row i of its matrix holds fewer than i updates.",
    ]


def _span(xs: list) -> str:
    return f"{min(xs)}" if min(xs) == max(xs) else f"{min(xs)}–{max(xs)}"


# ---- figures


def _heatmap(gate: str, g: dict, sequences: int) -> bytes:
    """The gate's mean matrix, (L+1) x L, values annotated; undefined or missing cells blank."""
    plt = pyplot()
    m = np.array([[np.nan if x is None else x["estimate"] for x in row] for row in g["matrix"]], dtype=float)
    rows, length = m.shape  # (L+1, L)
    fig, ax = plt.subplots(figsize=(max(4.0, 2.2 + 1.0 * length), max(2.6, 0.9 + 0.45 * rows)))
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    im = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=0, vmax=1, aspect="auto")
    for i, j in np.ndindex(m.shape):
        if not np.isnan(m[i, j]):
            ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if m[i, j] < 0.6 else "black")
    ax.set_xticks(range(length), [f"passage {j}" for j in range(length)], fontsize=8)
    ax.set_yticks(range(rows), [_after(i) for i in range(rows)], fontsize=8)
    fig.colorbar(im, ax=ax, label="contains accuracy")
    ax.set_title(f"gate {gate}: mean over {sequences} sequences", fontsize=9)
    return png(fig)


def _errorbar(ax, xs, intervals: list, **kw) -> None:
    """Estimates with their 95% interval as error bars; None entries are left out."""
    pts = [(x, iv) for x, iv in zip(xs, intervals) if iv is not None]
    if not pts:
        return
    est = [iv["estimate"] for _, iv in pts]
    err = [[e - iv["low"] for e, (_, iv) in zip(est, pts)], [iv["high"] - e for e, (_, iv) in zip(est, pts)]]
    ax.errorbar([x for x, _ in pts], est, yerr=err, capsize=3, marker="o", ms=4, **kw)


def _retention_figure(summary: dict) -> bytes:
    """Left: retention[d] vs d per gate; right: passage 0 per gate and SEAL's passage-0 figures."""
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(10, 3.4), sharey=True)
    length, order = summary["length"], summary["gate_order"]
    for k, gate in enumerate(order):
        shift = 0.06 * (k - (len(order) - 1) / 2)  # keep the gates' error bars apart
        g = summary["gates"][gate]
        _errorbar(left, [d + shift for d in range(length)], g["retention"], label=gate)
        _errorbar(right, [i + shift for i in range(length + 1)], g["passage0"], label=gate)
    right.plot(range(len(SEAL_PASSAGE0)), SEAL_PASSAGE0, ls="--", color="#777", marker="s", ms=3,
               label="SEAL (Qwen2.5-7B)")
    left.set_xlabel("d: steps after the passage was learned")
    left.set_ylabel("contains accuracy (scored questions)")
    left.set_title("Retention after d more steps (95% interval)", fontsize=9)
    right.set_xlabel("steps (0: before passage 0 is learned)")
    right.set_title("Passage 0", fontsize=9)
    left.set_ylim(-0.02, 1.02)
    from matplotlib.ticker import MaxNLocator

    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return png(fig)


# ---- rendering


def _render_html(title: str, blocks: list, figures: dict) -> str:
    """The self-contained HTML page (figures as data URIs)."""
    out = [f"<h1>{html.escape(title)}</h1>"]
    for kind, *rest in blocks:
        if kind in ("h2", "h3"):
            out.append(f"<{kind}>{html.escape(rest[0])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{html.escape(rest[0])}</p>")
        elif kind == "note":
            out.append(f'<p class="note"><strong>{html.escape(rest[0])}</strong></p>')
        elif kind == "table":
            out.append(html_table(*rest))
        elif kind == "img":
            out.append(html_img(figures[rest[0]], rest[1]))
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in rest[0]) + "</ul>")
    return html_page(title, out)


def _render_markdown(title: str, blocks: list) -> str:
    """The Markdown twin; figures are linked as ``{stem}_files/NAME.png`` (:meth:`Report.write` fills in the stem)."""
    out = [f"# {title}\n"]
    for kind, *rest in blocks:
        if kind in ("h2", "h3"):
            out.append(f"{'#' * int(kind[1])} {rest[0]}\n")
        elif kind == "p":
            out.append(f"{rest[0]}\n")
        elif kind == "note":
            out.append(f"**{rest[0]}**\n")
        elif kind == "table":
            out.append(md_table(*rest))
        elif kind == "img":
            out.append(f"![{rest[1]}]({FIGURE_DIR}/{rest[0]}.png)\n")
        elif kind == "ul":
            out += [*[f"- {x}" for x in rest[0]], ""]
    return "\n".join(out)
