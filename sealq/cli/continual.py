"""``sealq continual``: continual self-edits over sequences of passages, the forgetting matrix, and gated
updates compared side by side (:mod:`sealq.engine.continual`)."""

from __future__ import annotations

import json
import time

import click

from sealq.cli.loop import _json_option, _run_options, _training_options
from sealq.cli.main import cli
from sealq.engine.config import (
    EDIT_TYPES,
    PAPER_EDIT_TYPES,
    PAPER_TEMPERATURE,
    ContinualConfig,
    Directive,
    EvalConfig,
    LoopConfig,
    SelfEditConfig,
    TrainConfig,
    resolve_precision,
)
from sealq.errors import SealqError


class _Lines:
    """Progress: one plain line per stage and per step (every gate's decision) on stderr."""

    def __init__(self, console, clock=time.monotonic):
        self.console, self.clock, self.began = console, clock, clock()

    def _line(self, text):
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def stage(self, text):
        self._line(text)

    def step_done(self, sequence, step, n_sequences, length, title, decisions):
        from sealq.analysis.summary import format_duration

        parts = []
        for d in decisions:
            m = "" if d["measurement"] is None else f", measured {d['measurement']:.3f}"
            parts.append(f"{d['gate']} {d['status']}{m}")
        self._line(f"sequence {sequence + 1}/{n_sequences} step {step + 1}/{length} ({title[:40]}): best reward "
                   f"{decisions[0]['reward']:+.2f}; " + "; ".join(parts)
                   + f"; {format_duration((self.clock() - self.began) * 1000)} elapsed")


def _cell(x) -> str:
    return "" if x is None else f"{x['estimate']:.2f} [{x['low']:.2f}, {x['high']:.2f}]"


def print_continual(summary: dict, console, db_path: str) -> None:
    """Per gate, the mean forgetting matrix with 95% intervals over sequences; then the summary figures of
    every gate side by side, the stacking parity and SEAL's passage-0 figures."""
    from rich.table import Table

    from sealq.analysis.stats import format_interval

    length = summary["length"]
    for gate in summary["gate_order"]:
        g = summary["gates"][gate]
        t = Table(title=f"gate {gate}: contains accuracy on scored questions, mean over {summary['sequences']} "
                        "sequences [95% interval]; row i = after i steps (a rejected update leaves the model unchanged), "
                        "column j = passage j", title_justify="left")
        t.add_column("after", justify="right")
        for j in range(length):
            t.add_column(f"p{j}", justify="right")
        for i, row in enumerate(g["matrix"]):
            t.add_row(str(i), *[_cell(x) for x in row])
        console.print(t)
    s = Table(title=f"run {summary['run_id']}: gates side by side ({summary['sequences']} sequences x {length} "
                    f"passages, K={summary['k']})")
    for col in ("gate", "before", "just learned", "final", "backward transfer", "accepted", "rejected",
                "no update", "rejected share"):
        s.add_column(col, justify="left" if col == "gate" else "right")
    for gate in summary["gate_order"]:
        g, u = summary["gates"][gate], summary["gates"][gate]["updates"]
        share = "-" if u["rejected_share"] is None else f"{u['rejected_share']:.0%}"
        s.add_row(gate, *[format_interval(g[k]) if g[k] else "-" for k in ("before", "just_learned", "final")],
                  format_interval(g["backward_transfer"], True) if g["backward_transfer"] else "-",
                  str(u["accepted"]), str(u["rejected"]), str(u["no_update"]), share)
    console.print(s)
    for gate in summary["gate_order"]:
        ret = summary["gates"][gate]["retention"]
        console.print(f"{gate}: retention after d more steps (d = 0..{length - 1}): "
                      + ", ".join("-" if x is None else f"{x['estimate']:.2f}" for x in ret))
    p = summary["parity"]
    if p:
        console.print(f"stacked GGUF adapters in llama.cpp vs merged PEFT weights, {p['model_states']} model states: "
                      f"logit-change correlation >= {p['min_corr']:.5f}, relative size {p['scale_range'][0]:.4f}-"
                      f"{p['scale_range'][1]:.4f}")
    console.print("SEAL (Qwen2.5-7B) passage 0: " + ", ".join(f"{x:.3f}" for x in summary["seal_passage0"]))
    console.print(f"recorded in {db_path}")


@cli.command()
@click.option("--data", type=click.Path(dir_okay=False),
              help="SQuAD-style JSON (SEAL flat or official v1.1). Default: the bundled 8 invented passages.")
@click.option("--k", type=int, default=1, show_default=True,
              help="Self-edits sampled per step (best-of-K on the passage's gate questions).")
@click.option("--sequences", type=int, default=2, show_default=True, help="Independent sequences (disjoint passages, seeded).")
@click.option("--length", type=int, default=4, show_default=True, help="Passages per sequence.")
@click.option("--gate", "gates", multiple=True,
              help="none | retention:D | kl:X; repeat to compare gates side by side on the same sequences. Default: none.")
@click.option("--gate-fraction", type=float, default=0.5, show_default=True,
              help="Share of each passage's questions the gates (and best-of-K) see; the rest are scored.")
@click.option("--edit-type", "edit_types", type=click.Choice(EDIT_TYPES), multiple=True,
              help=f"Self-edit prompt(s). Default: {', '.join(PAPER_EDIT_TYPES)} (SEAL's continual experiment).")
@click.option("--directives", type=click.Choice(["model", "off"]), default="off", show_default=True,
              help="'off': every update trains with --epochs/--lr/--rank (as SEAL's continual experiment); 'model': model-written.")
@_run_options(workspace="runs.db and adapters go")
@_training_options(epochs="Training epochs of each update.", lr="Peak learning rate of each update.",
                   rank="LoRA rank of each update (alpha = 2 x rank).")
@click.option("--resume", metavar="RUN", help="Continue an interrupted continual run (id, prefix or 'latest'); other options but --threads are ignored.")
@_json_option("summary")
def continual(data, k, sequences, length, gates, gate_fraction, edit_types, directives, model, seed, workspace,
              epochs, lr, rank, precision, threads, resume, as_json):
    """Continual self-edits: learn passages one after another into one model and measure forgetting.

    Per sequence, from the base model: at each step the current model writes K self-edits for the next
    passage, each trains a LoRA on top of the current model, the best goes to each gate, and an accepted
    update stays (stacked adapters in llama.cpp, merged weights for training). After every step every
    passage seen so far is scored without its passage: the forgetting matrix (SEAL sec. 4.3).
    """
    from rich.console import Console

    from sealq.engine.continual import resume_continual, run_continual
    from sealq.store import DB_NAME, resolve_workspace

    ws = resolve_workspace(workspace)
    events = _Lines(Console(stderr=True, emoji=False))
    if resume is not None:
        summary = resume_continual(resume, ws, events, threads=threads)
    else:
        if k < 1:  # before LoopConfig, whose message mentions eval-only steps
            raise SealqError(f"--k must be at least 1, got {k}")
        loop = LoopConfig(model=model, data=data, seed=seed,
                          selfedit=SelfEditConfig(k=k, edit_types=edit_types or PAPER_EDIT_TYPES, temperature=PAPER_TEMPERATURE,
                                                  directives=directives),
                          train=TrainConfig(default=Directive(epochs=epochs, lr=lr, rank=rank),
                                            precision=resolve_precision(precision), threads=threads or 0),
                          eval=EvalConfig())
        config = ContinualConfig(loop=loop, sequences=sequences, length=length, gates=gates or ("none",),
                                 gate_fraction=gate_fraction)
        summary = run_continual(config, ws, events)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        console = Console()  # emoji off: a gate such as kl:100 followed by ':' would print as an emoji
        print_continual(summary, Console(width=max(console.width, 150), emoji=False), str(ws / DB_NAME))

