"""``sealq loop``: the simplified SEAL inner loop on a set of passages."""

from __future__ import annotations

import json

import click

from sealq.cli import cli
from sealq.engine.config import EDIT_TYPES, Directive, EvalConfig, LoopConfig, SelfEditConfig, TrainConfig
from sealq.models.registry import DEFAULT_MODEL


class _RichEvents:
    """Progress bars on stderr (stdout stays clean for --json)."""

    def __init__(self, console):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=False)
        self.task = None
        self.last_reward = ""

    def stage(self, text):
        self.console.print(f"[dim]{text}[/dim]")

    def start(self, n_passages, k):
        self.progress.start()
        self.task = self.progress.add_task("self-edits", total=n_passages * k)
        self.k = k

    def self_edit_done(self, passage_idx, sample_idx, reward):
        r = "skipped" if reward is None else f"reward {reward:+.2f}"
        self.progress.update(self.task, advance=1,
                             description=f"passage {passage_idx + 1} self-edit {sample_idx + 1}/{self.k}: {r}")

    def passage_done(self, passage_idx):
        pass

    def close(self):
        if self.task is not None:
            self.progress.stop()


def print_summary(summary: dict, console, db_path: str) -> None:
    """The rich summary table of a run."""
    from rich.table import Table

    c = summary["conditions"]
    table = Table(title=f"run {summary['run_id']}: {summary['passages']} passages, {summary['questions']} questions, "
                        f"{summary['self_edits']} self-edits")
    for col in ("condition", "contains", "EM", "F1", "answers"):
        table.add_column(col, justify="left" if col == "condition" else "right")
    labels = {
        "no_context": "baseline (no passage)",
        "with_context": "ceiling (passage in prompt)",
        "mean_self_edit": "mean self-edit (adapted, no passage)",
        "best_of_k": "best-of-K self-edit (oracle pick)",
    }
    for key, label in labels.items():
        row = c[key]
        table.add_row(label, f"{row['contains']:.3f}", f"{row['em']:.3f}", f"{row['f1']:.3f}", str(row["n"]))
    console.print(table)
    console.print(
        f"mean reward per self-edit {summary['mean_reward']:+.3f} (passages weigh equally), best-of-K reward {summary['best_reward']:+.3f} (contains gain); "
        f"{summary['skipped']} self-edits skipped, {summary['directive_fallbacks']} directives had a field fall back to the default"
    )
    console.print(f"recorded in {db_path}")


@cli.command()
@click.option("--data", type=click.Path(dir_okay=False), help="SQuAD-style JSON (SEAL flat or official v1.1). Default: the bundled 8 invented passages.")
@click.option("--passages", type=int, help="Use only the first N passages.")
@click.option("--k", type=int, default=3, show_default=True, help="Self-edits sampled per passage (best-of-K).")
@click.option("--edit-type", "edit_types", type=click.Choice(EDIT_TYPES), multiple=True,
              help="Self-edit prompt(s); repeat to mix (samples cycle through them). Default: all three.")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Known model name or path to a llama GGUF.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workspace", type=click.Path(file_okay=False), help="Where runs.db and adapters go (default: $SEALQ_HOME or the current directory).")
@click.option("--directives", type=click.Choice(["model", "off"]), default="model", show_default=True,
              help="'model': each self-edit carries a model-written directive; 'off': the default directive for all.")
@click.option("--epochs", type=int, default=Directive.epochs, show_default=True, help="Default directive: epochs.")
@click.option("--lr", type=float, default=Directive.lr, show_default=True, help="Default directive: learning rate.")
@click.option("--rank", type=int, default=Directive.rank, show_default=True, help="Default directive: LoRA rank (alpha = 2 x rank).")
@click.option("--temperature", type=float, default=SelfEditConfig.temperature, show_default=True, help="Self-edit sampling temperature.")
@click.option("--top-p", type=float, default=SelfEditConfig.top_p, show_default=True, help="Self-edit nucleus sampling threshold.")
@click.option("--keep-adapters", is_flag=True, help="Keep every adapter, not only each passage's best.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def loop(data, passages, k, edit_types, model, seed, workspace, directives, epochs, lr, rank, temperature, top_p,
         keep_adapters, as_json):
    """Run the SEAL inner loop: baseline, self-edits, LoRA per self-edit, evaluation, best-of-K."""
    from rich.console import Console

    from sealq.engine.loop import run_loop
    from sealq.store import DB_NAME, resolve_workspace

    train = TrainConfig(default=Directive(epochs=epochs, lr=lr, rank=rank))
    config = LoopConfig(
        model=model, data=data, passages=passages, seed=seed, keep_adapters=keep_adapters,
        selfedit=SelfEditConfig(k=k, edit_types=edit_types or EDIT_TYPES, temperature=temperature, top_p=top_p,
                                directives=directives),
        train=train, eval=EvalConfig(),
    )
    ws = resolve_workspace(workspace)
    console = Console(stderr=True)
    events = _RichEvents(console)
    try:
        summary = run_loop(config, ws, events)
    finally:
        events.close()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        print_summary(summary, Console(), str(ws / DB_NAME))
