"""``sealq learn``: learn a document with the model's own probe questions (:mod:`sealq.engine.learn`).
``sealq export``, which writes a learned model's accepted updates as one GGUF adapter, is in :mod:`sealq.cli.views`."""

from __future__ import annotations

import json

import click

from sealq.cli.continual import _Lines, print_continual
from sealq.cli.loop import _json_option, _run_options, _training_options
from sealq.cli.main import cli
from sealq.engine.config import (
    EDIT_TYPES,
    PAPER_EDIT_TYPES,
    PAPER_TEMPERATURE,
    Directive,
    EvalConfig,
    LearnConfig,
    LoopConfig,
    SelfEditConfig,
    TrainConfig,
    resolve_precision,
)
from sealq.errors import SealqError


def print_learn(summary: dict, console, db_path: str) -> None:
    """The probes, the continual tables of the document's sequence, and (with gold questions) the validation
    table and the probe-vs-gold reward correlation."""
    from rich.table import Table

    from sealq.analysis.learn import VALIDATION_ROWS
    from sealq.analysis.stats import format_interval

    p = summary["probes"]
    console.print(f"probe questions: {p['kept']} kept of {p['written']} written over {summary['length']} passages "
                  f"({p['passages_without']} without any); dropped: "
                  + ", ".join(f"{k} {v}" for k, v in p["reasons"].items() if k != "kept"))
    console.print(f"the matrix below is on {'gold questions the learner never saw' if summary['matrix_on'] == 'gold' else 'the probes (the reward questions themselves: optimistic)'}")
    print_continual(summary, console, db_path)
    v = summary.get("validation")
    if not v:
        return
    t = Table(title=f"gold questions never seen by the learner ({v['passages']} passages, {v['questions']} questions; "
                    f"gate {v['gate']}): contains accuracy [95% interval], and minus LoRA on the passage (paired)")
    for col in ("model", "gold accuracy", "minus LoRA on the passage"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for key, label in VALIDATION_ROWS.items():
        r = v["rows"].get(key)
        if r is None:
            continue
        diff = format_interval(r["vs_passage_only"], True) if "vs_passage_only" in r else "-"
        t.add_row(label, format_interval(r), diff)
    console.print(t)
    c = v["correlation"]
    if c and c["r"] is not None:
        console.print(f"probe reward vs gold reward over {c['n_self_edits']} self-edits: Pearson r = {c['r']:.2f} "
                      f"[{c['low']:.2f}, {c['high']:.2f}]")
    elif c:
        console.print(f"probe reward vs gold reward: undefined over {c['n_self_edits']} self-edits (one side is constant)")
    pick = "-" if v["pick_is_gold_best"] is None else f"{v['pick_is_gold_best']:.0%}"
    console.print(f"the K self-edits differ on the probes on {v['probe_decisive']} of {v['passages']} passages, on gold on "
                  f"{v['gold_decisive']}; where they differ on gold, the probe pick is a gold-best one on {pick}")


@cli.command()
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--k", type=int, default=2, show_default=True,
              help="Self-edits sampled per passage (best-of-K on the passage's probe questions).")
@click.option("--probes-per-passage", type=int, default=5, show_default=True,
              help="Probe questions the model writes per passage (at most; a sentence each, kept only when grounded).")
@click.option("--gate", "gates", multiple=True,
              help="none | retention:D | kl:X (see `sealq continual`); repeat to compare. `ask`/`export` use the first. Default: none.")
@click.option("--max-passage-tokens", type=int, default=256, show_default=True,
              help="The most tokens of one passage when a document is split.")
@click.option("--passages", type=int, help="Learn only the first N passages (of all FILES, in order).")
@click.option("--edit-type", "edit_types", type=click.Choice(EDIT_TYPES), multiple=True,
              help=f"Self-edit prompt(s); samples cycle through them. Default: {', '.join(PAPER_EDIT_TYPES)}.")
@_run_options(workspace="runs.db and adapters go")
@_training_options(epochs="Training epochs of each update.", lr="Peak learning rate of each update.",
                   rank="LoRA rank of each update (alpha = 2 x rank).")
@click.option("--resume", metavar="RUN", help="Continue an interrupted learn run (id, prefix or 'latest'); other options but --threads are ignored.")
@_json_option("summary")
def learn(files, k, probes_per_passage, gates, max_passage_tokens, passages, edit_types, model, seed, workspace,
          epochs, lr, rank, precision, threads, resume, as_json):
    """Learn FILES (.txt, .md; a .json of SQuAD passages keeps its questions hidden, for validation).

    The document is split into passages (by headings and paragraphs); for each, the model writes probe
    questions with the passage in view, then K self-edits; each trains a LoRA on top of what it has
    learned so far, rewarded on the probes without the passage; the best is kept (through the gate).
    Then `sealq ask "..." --run RUN` answers from the learned weights and `sealq export RUN OUT.gguf`
    writes them as one adapter.
    """
    from rich.console import Console

    from sealq.engine.learn import resume_learn, run_learn
    from sealq.store import DB_NAME, resolve_workspace

    ws = resolve_workspace(workspace)
    events = _Lines(Console(stderr=True, emoji=False))
    if resume is not None:
        if files:
            raise SealqError("--resume continues a run with its own files; give no FILES")
        summary = resume_learn(resume, ws, events, threads=threads)
    else:
        if not 1 <= k <= 64:  # before LoopConfig, whose message mentions eval-only steps
            raise SealqError(f"--k must be in 1-64, got {k}")
        loop = LoopConfig(model=model, seed=seed,
                          selfedit=SelfEditConfig(k=k, edit_types=edit_types or PAPER_EDIT_TYPES, temperature=PAPER_TEMPERATURE,
                                                  directives="off"),
                          train=TrainConfig(default=Directive(epochs=epochs, lr=lr, rank=rank),
                                            precision=resolve_precision(precision), threads=threads or 0),
                          eval=EvalConfig())
        config = LearnConfig(loop=loop, files=files, probes_per_passage=probes_per_passage, gates=gates or ("none",),
                             max_passage_tokens=max_passage_tokens, passages=passages)
        summary = run_learn(config, ws, events)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        console = Console()
        print_learn(summary, Console(width=max(console.width, 150), emoji=False), str(ws / DB_NAME))
