"""``sealq loop`` (the simplified SEAL inner loop on a set of passages, ``--resume``) and ``sealq eval``
(the SEAL comparison table with bootstrap intervals)."""

from __future__ import annotations

import json

import click

from sealq.cli import cli
from sealq.engine.config import EDIT_TYPES, Directive, EvalConfig, LoopConfig, PolicyConfig, SelfEditConfig, TrainConfig
from sealq.errors import SealqError
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

    def total(self, n_units):
        self.progress.update(self.task, total=n_units)

    def self_edit_done(self, passage_idx, sample_idx, reward, source="model"):
        r = "skipped" if reward is None else f"reward {reward:+.2f}"
        what = f"self-edit {sample_idx + 1}/{self.k}" if source == "model" else {"passage": "passage only"}.get(source, source)
        self.progress.update(self.task, advance=1, description=f"passage {passage_idx + 1} {what}: {r}")

    def passage_done(self, passage_idx):
        pass

    def close(self):
        if self.task is not None:
            self.progress.stop()


def print_summary(summary: dict, console, db_path: str) -> None:
    """The rich summary table of a run."""
    from rich.table import Table

    from sealq.engine.summary import CONDITIONS, describe_edits

    c = summary["conditions"]
    table = Table(title=f"run {summary['run_id']}: {summary['passages']} passages, {summary['questions']} questions, "
                        f"{summary['self_edits']} self-edits")
    for col in ("condition", "contains", "EM", "F1", "answers"):
        table.add_column(col, justify="left" if col == "condition" else "right")
    for key, label in CONDITIONS.items():
        if key not in c:
            continue
        row = c[key]
        table.add_row(label, f"{row['contains']:.3f}", f"{row['em']:.3f}", f"{row['f1']:.3f}", str(row["n"]))
    console.print(table)
    console.print(
        f"mean reward per self-edit {summary['mean_reward']:+.3f} (passages weigh equally), best-of-K reward {summary['best_reward']:+.3f} (contains gain); "
        + describe_edits(summary)  # the same sentence as `sealq show` and the report's setup
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
@click.option("--rounds", type=int, default=0, show_default=True,
              help="ReST-EM rounds: fine-tune the generator on its own best self-edits, evaluate on held-out passages.")
@click.option("--holdout", type=click.Path(dir_okay=False), help="With --rounds: held-out passages from this file.")
@click.option("--holdout-fraction", type=float, help="With --rounds: hold out whole titles of --data (seeded) until about this share of its passages is held out.")
@click.option("--holdout-passages", type=int, help="With --rounds: use only the first N held-out passages.")
@click.option("--policy-epochs", type=int, default=PolicyConfig.epochs, show_default=True, help="Generator update: epochs.")
@click.option("--policy-lr", type=float, default=PolicyConfig.lr, show_default=True, help="Generator update: learning rate.")
@click.option("--policy-rank", type=int, default=PolicyConfig.rank, show_default=True, help="Generator update: LoRA rank.")
@click.option("--resume", "resume", metavar="RUN",
              help="Continue an interrupted run (id, prefix or 'latest') with its stored settings; other options are ignored.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def loop(data, passages, k, edit_types, model, seed, workspace, directives, epochs, lr, rank, temperature, top_p,
         keep_adapters, rounds, holdout, holdout_fraction, holdout_passages, policy_epochs, policy_lr, policy_rank,
         resume, as_json):
    """Run the SEAL inner loop: baseline, self-edits, LoRA per self-edit, evaluation, best-of-K.

    With --rounds R, the ReST-EM outer loop: R rounds of fine-tuning the generator on its own best
    self-edits, with held-out passages evaluated before the first round and after each.
    """
    from sealq.engine.loop import resume_loop, run_loop
    from sealq.store import resolve_workspace

    if resume is not None:  # `--resume ""` (an unset shell variable) is an error, not a new run
        ws = resolve_workspace(workspace)
        summary = _with_progress(lambda events: resume_loop(resume, ws, events))
        _print(summary, as_json, ws)
        return

    if not rounds:
        ctx = click.get_current_context()
        given = [f"--{name.replace('_', '-')}" for name in ("holdout", "holdout_fraction", "holdout_passages",
                                                            "policy_epochs", "policy_lr", "policy_rank")
                 if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
        if given:
            raise SealqError(f"{', '.join(given)}: only used by the ReST-EM outer loop; add --rounds R")
    train = TrainConfig(default=Directive(epochs=epochs, lr=lr, rank=rank))
    config = LoopConfig(
        model=model, data=data, passages=passages, seed=seed, keep_adapters=keep_adapters,
        selfedit=SelfEditConfig(k=k, edit_types=edit_types or EDIT_TYPES, temperature=temperature, top_p=top_p,
                                directives=directives),
        train=train, eval=EvalConfig(), rounds=rounds, holdout=holdout, holdout_fraction=holdout_fraction,
        holdout_passages=holdout_passages, policy=PolicyConfig(epochs=policy_epochs, lr=policy_lr, rank=policy_rank),
    )
    ws = resolve_workspace(workspace)
    summary = _with_progress(lambda events: run_loop(config, ws, events))
    _print(summary, as_json, ws)


def _with_progress(fn):
    from rich.console import Console

    events = _RichEvents(Console(stderr=True))
    try:
        return fn(events)
    finally:
        events.close()


def _print(summary, as_json, ws):
    from rich.console import Console

    from sealq.store import DB_NAME

    if as_json:
        click.echo(json.dumps(summary, indent=2))
    elif "rounds" in summary:
        print_rounds(summary, Console(width=max(Console().width, 150)), str(ws / DB_NAME))
    else:
        print_summary(summary, Console(), str(ws / DB_NAME))


def print_rounds(summary: dict, console, db_path: str) -> None:
    """The per-round ReST-EM table (held-out passages) with 95% passage-bootstrap intervals."""
    from rich.table import Table

    t = Table(title=f"run {summary['run_id']}: ReST-EM, held-out passages (contains accuracy, 95% intervals)")
    for col in ("round", "policy (pairs)", "no passage", "passage in prompt", "mean self-edit", "best-of-K",
                "mean gain", "best-of-K gain", "train: mean reward", "kept"):
        t.add_column(col, justify="right")

    from sealq.engine.stats import format_interval as cell

    for r in summary["rounds"]:
        h, tr, pol = r.get("holdout"), r.get("train"), r.get("policy")
        policy = "base" if pol is None else (f"{pol['status']} ({pol['n_pairs']})")
        if h is None:
            continue
        t.add_row(str(r["round"]), policy, cell(h["no_context"]["contains"]), cell(h["with_context"]["contains"]),
                  cell(h["mean_self_edit"]["contains"]), cell(h["best_of_k"]["contains"]),
                  cell(h["mean_gain"]["contains"], True), cell(h["best_gain"]["contains"], True),
                  "-" if tr is None else f"{tr['mean_reward']:+.3f}", "-" if tr is None else str(tr["kept_pairs"]))
    console.print(t)
    for r in summary["rounds"]:
        e = (r.get("holdout") or {}).get("self_edits")
        if e:
            console.print(f"round {r['round']} held-out self-edits: {e['n']} ({e['skipped']} skipped), "
                          f"{e['mean_words']:.0f} words and {e['mean_items']:.1f} items on average, "
                          f"{e['copied_5grams']:.0%} of their 5-word spans copied from the passage")
    for r in summary["rounds"]:
        v = (r.get("holdout") or {}).get("vs_round0")
        if v:
            console.print(f"round {r['round']} minus round 0, paired on the same held-out questions: mean self-edit "
                          f"{cell(v['mean_self_edit']['contains'], True)}, mean gain {cell(v['mean_gain']['contains'], True)}, "
                          f"no passage {cell(v['no_context']['contains'], True)}")
    console.print(f"recorded in {db_path}")


def print_eval(table: dict, run_id: str, console, config: dict) -> None:
    """The SEAL-style comparison table with 95% intervals, and the paired differences."""
    from rich.table import Table

    from sealq.engine.evaluate import PAPER_ROWS

    d = config["train"]["default"]
    t = Table(title=f"run {run_id}: {table['passages']} passages, {table['questions']} questions, no passage in the "
                    f"prompt unless stated; K={config['selfedit']['k']}, seeds={config['seeds']}",
              caption=f"95% intervals: bootstrap resampling passages. Training: LoRA r={d['rank']} alpha={2 * d['rank']}, "
                      f"{d['epochs']} epochs, lr {d['lr']:g}, same for every condition. "
                      "SEAL column: Qwen2.5-7B, 200 passages (paper, Table 2).")
    for col in ("condition", "contains", "EM", "F1", "SEAL %"):
        t.add_column(col, justify="left" if col == "condition" else "right")

    from sealq.engine.stats import format_interval as cell

    for name, row in table["conditions"].items():
        paper = PAPER_ROWS.get(name)
        t.add_row(row["label"], cell(row["contains"]), cell(row["em"]), cell(row["f1"]), "-" if paper is None else f"{paper:.1f}")
    console.print(t)
    d = Table(title="paired differences (same passages and questions)")
    for col in ("difference", "contains", "EM", "F1"):
        d.add_column(col, justify="left" if col == "difference" else "right")
    labels = {c: r["label"] for c, r in table["conditions"].items()}

    for row in table["differences"]:
        d.add_row(f"{labels[row['a']]} - {labels[row['b']]}", cell(row["contains"], True), cell(row["em"], True), cell(row["f1"], True))
    console.print(d)


@cli.command(name="eval")
@click.option("--data", type=click.Path(dir_okay=False), help="SQuAD-style JSON (SEAL flat or official v1.1). Default: the bundled passages.")
@click.option("--passages", type=int, help="Use only the first N passages (after the --teacher filter).")
@click.option("--k", type=int, default=3, show_default=True, help="Self-edits sampled per passage and seed.")
@click.option("--teacher", type=click.Path(dir_okay=False),
              help="Teacher self-edits (JSON list of {title, context, completions}); only passages with one are used.")
@click.option("--seeds", type=int, default=1, show_default=True,
              help="Repeat every trained condition with seeds SEED, SEED+1, ... (self-edits resampled, LoRAs re-initialized).")
@click.option("--edit-type", "edit_types", type=click.Choice(EDIT_TYPES), multiple=True,
              help="Self-edit prompt(s). Default: implications (the paper's row).")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Known model name or path to a llama GGUF.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workspace", type=click.Path(file_okay=False), help="Where runs.db goes (default: $SEALQ_HOME or the current directory).")
@click.option("--epochs", type=int, default=Directive.epochs, show_default=True, help="Training epochs (every condition).")
@click.option("--lr", type=float, default=Directive.lr, show_default=True, help="Peak learning rate (every condition).")
@click.option("--rank", type=int, default=Directive.rank, show_default=True, help="LoRA rank, alpha = 2 x rank (every condition).")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON on stdout.")
def eval_(data, passages, k, teacher, seeds, edit_types, model, seed, workspace, epochs, lr, rank, as_json):
    """The SEAL comparison table: base, ceiling, LoRA on passage, passage + self-edit (mean and best-of-K),
    passage + teacher self-edit; EM, F1 and contains with 95% passage-bootstrap intervals.

    Every condition trains with the same fixed settings (--epochs/--lr/--rank; no model-written
    directives), so the rows differ only in their training data.
    """
    from rich.console import Console

    from sealq.engine.loop import run_loop
    from sealq.store import resolve_workspace

    config = LoopConfig(
        model=model, data=data, passages=passages, seed=seed, seeds=seeds, passage_only=True, teacher=teacher,
        selfedit=SelfEditConfig(k=k, edit_types=edit_types or ("implications",), directives="off"),
        train=TrainConfig(default=Directive(epochs=epochs, lr=lr, rank=rank)), eval=EvalConfig(),
    )
    ws = resolve_workspace(workspace)
    summary = _with_progress(lambda events: run_loop(config, ws, events, command="eval"))
    table = summary["eval"]
    if as_json:
        click.echo(json.dumps({"run_id": summary["run_id"], **table}, indent=2))
    else:
        console = Console()
        print_eval(table, summary["run_id"], Console(width=max(console.width, 150)), config.to_dict())
