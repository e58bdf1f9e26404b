"""``sealq loop`` (the simplified SEAL inner loop on a set of passages, ``--resume``) and ``sealq eval``
(the SEAL comparison table with bootstrap intervals).

Progress goes to stderr (stdout stays clean for ``--json``): progress bars on a terminal
(:class:`RichEvents`), one plain line per finished passage otherwise (:class:`PlainEvents`, for
``sealq loop > log 2>&1``); :func:`progress_events` picks one.
"""

from __future__ import annotations

import json
import time

import click

from sealq.cli.main import cli
from sealq.engine.config import (
    EDIT_TYPES,
    PAPER_EDIT_TYPES,
    PRECISIONS,
    TRAIN_ON,
    Directive,
    EvalConfig,
    LoopConfig,
    PolicyConfig,
    ScaleConfig,
    SelfEditConfig,
    TrainConfig,
    resolve_precision,
)
from sealq.models.registry import DEFAULT_MODEL
from sealq.vocab import ROW_LABELS, Row, Source

_SOURCE_LABELS = {Source.PASSAGE_ONLY: "passage only", Source.TEACHER: "teacher"}


def _source_label(source) -> str:
    """How a non-sampled inner step is named in progress lines (``passage only``, ``teacher``)."""
    return _SOURCE_LABELS.get(source, str(source))


class RichEvents:
    """Progress bars on a terminal's stderr."""

    def __init__(self, console):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=False)
        self.task = None
        self.k = 0

    def stage(self, text):
        self.console.print(f"[dim]{text}[/dim]")

    def start(self, n_passages, k):
        self.progress.start()
        self.task = self.progress.add_task("self-edits", total=n_passages * k)
        self.k = k

    def total(self, n_units):
        self.progress.update(self.task, total=n_units)

    def self_edit_done(self, passage_idx, sample_idx, reward, source=Source.SELF_EDIT):
        r = "skipped" if reward is None else f"reward {reward:+.2f}"
        what = f"self-edit {sample_idx + 1}/{self.k}" if source == Source.SELF_EDIT else _source_label(source)
        self.progress.update(self.task, advance=1, description=f"passage {passage_idx + 1} {what}: {r}")

    def passage_done(self, passage_idx):
        pass

    def close(self):
        if self.task is not None:
            self.progress.stop()


class PlainEvents:
    """Plain progress lines on stderr when it is not a terminal (a log file, a pipe): each stage, and one
    line per finished passage with its rewards, the time since the passages began and an estimate of
    the time left.

    The estimate is the mean time of the passages that did work in this process times the passages left
    (``sealq loop --resume`` passes over recorded passages at once, so they do not count).

    Args:
        console: a rich Console (on stderr); lines are printed as they are, without markup or wrapping.
        clock: seconds, monotonic (tests pass a fake one).
    """

    def __init__(self, console, clock=time.monotonic):
        self.console, self.clock = console, clock
        self.n_passages, self.done, self.worked = 0, 0, 0
        self.began = clock()
        self.rewards: dict = {}  # source -> reward texts of the current passage, in order

    def _line(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def stage(self, text):
        self._line(text)

    def start(self, n_passages, k):
        self.n_passages, self.began = n_passages, self.clock()

    def total(self, n_units):
        pass

    def self_edit_done(self, passage_idx, sample_idx, reward, source=Source.SELF_EDIT):
        self.rewards.setdefault(source, []).append("skipped" if reward is None else f"{reward:+.2f}")

    def passage_done(self, passage_idx):
        self.done += 1
        self.worked += bool(self.rewards)
        self._line(f"passage {self.done}/{self.n_passages} done: {self._describe_rewards()}; {self._timing()}")
        self.rewards = {}

    def _describe_rewards(self) -> str:
        if not self.rewards:
            return "recorded before"
        parts = [" ".join(self.rewards[Source.SELF_EDIT])] if Source.SELF_EDIT in self.rewards else []
        parts += [f"{_source_label(s)} {' '.join(r)}" for s, r in self.rewards.items() if s != Source.SELF_EDIT]
        return "rewards " + ", ".join(parts)

    def _timing(self) -> str:
        from sealq.analysis.summary import format_duration

        elapsed = self.clock() - self.began
        out = f"{format_duration(elapsed * 1000)} elapsed"
        left = self.n_passages - self.done
        if left > 0 and self.worked:
            out += f", about {format_duration(elapsed / self.worked * left * 1000)} left"
        return out

    def close(self):
        pass


def progress_events(console):
    """The progress callbacks for ``console`` (on stderr): bars on a terminal, plain lines otherwise."""
    return RichEvents(console) if console.is_terminal else PlainEvents(console)


def _with_progress(fn):
    from rich.console import Console

    events = progress_events(Console(stderr=True))
    try:
        return fn(events)
    finally:
        events.close()


def print_summary(summary: dict, console, db_path: str) -> None:
    """The rich summary table of a run."""
    from rich.table import Table

    from sealq.analysis.summary import describe_edits

    c = summary["conditions"]
    table = Table(title=f"run {summary['run_id']}: {summary['passages']} passages, {summary['questions']} questions, "
                        f"{summary['self_edits']} self-edits")
    for col in ("condition", "contains", "EM", "F1", "answers"):
        table.add_column(col, justify="left" if col == "condition" else "right")
    for key, label in ROW_LABELS.items():
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


# ---- options that `sealq loop` and `sealq eval` share; help texts differ per command


def _options(*decorators):
    """Apply click option decorators in the order given (as if stacked in that order above a command)."""
    def apply(f):
        for d in reversed(decorators):
            f = d(f)
        return f

    return apply


def _input_options(data: str, passages: str, k: str):
    """--data, --passages, --k."""
    return _options(
        click.option("--data", type=click.Path(dir_okay=False), help=f"SQuAD-style JSON (SEAL flat or official v1.1). {data}"),
        click.option("--passages", type=int, help=passages),
        click.option("--k", type=int, default=3, show_default=True, help=k),
    )


def _edit_type_option(help: str):
    """--edit-type (repeatable), --min-grounding, --train-on."""
    return _options(
        click.option("--edit-type", "edit_types", type=click.Choice(EDIT_TYPES), multiple=True, help=help),
        click.option("--min-grounding", type=float, default=SelfEditConfig.min_grounding, show_default=True,
                     help="Drop a self-edit item when less than this share of its words occur in the passage "
                          "(0: keep every item)."),
        click.option("--train-on", type=click.Choice(TRAIN_ON), default=SelfEditConfig.train_on, show_default=True,
                     help="What a self-edit's LoRA trains on: its items and the passage (SEAL), or its items alone."),
    )


_sampling_options = _options(
    click.option("--temperature", type=float, default=SelfEditConfig.temperature, show_default=True, help="Self-edit sampling temperature."),
    click.option("--top-p", type=float, default=SelfEditConfig.top_p, show_default=True, help="Self-edit nucleus sampling threshold."),
)


def _run_options(workspace: str):
    """--model, --seed, --workspace."""
    return _options(
        click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Known model name or path to a GGUF (llama, qwen2, qwen3 or gemma3)."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--workspace", type=click.Path(file_okay=False),
                     help=f"Where {workspace} (default: $SEALQ_HOME or the current directory)."),
    )


def _training_options(epochs: str, lr: str, rank: str):
    """--epochs, --lr, --rank: the training settings (``sealq loop``: of the default directive); --precision."""
    return _options(
        click.option("--epochs", type=int, default=Directive.epochs, show_default=True, help=epochs),
        click.option("--lr", type=float, default=Directive.lr, show_default=True, help=lr),
        click.option("--rank", type=int, default=Directive.rank, show_default=True, help=rank),
        click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
                     help="LoRA training: bf16 runs the frozen base's matmuls in bfloat16 (CPUs with AVX512-BF16 or "
                          "AMX; LoRA weights, optimizer, attention and loss stay fp32); auto picks bf16 where the "
                          "CPU has it, else fp32. The run records what it used."),
        click.option("--threads", type=click.IntRange(min=1), metavar="N",
                     help="Torch and llama.cpp threads, exactly, for the whole run (also $SEALQ_THREADS); recorded, "
                          "and reused by --resume unless given again (--threads or $SEALQ_THREADS). Default: the cores "
                          "other processes leave free when the run starts (a training may then use fewer if they get "
                          "busy; each adapter records its count). With --workers: the driver's threads; workers use "
                          "--threads-per-worker."),
    )


_scale_options = _options(
    click.option("--workers", type=int, default=0, help="Run baselines and inner steps on N Ray worker processes "
                 "(pip install 'sealq[ray]'); rows are the same as without workers at the same threads per training."),
    click.option("--threads-per-worker", type=int, default=0,
                 help="With --workers: torch, OpenMP and llama.cpp threads per worker. Default: cores / N."),
    click.option("--ray-address", metavar="ADDR",
                 help="With --workers: join this running Ray cluster (`ray start --head`) instead of a local one on 127.0.0.1."),
)


def _json_option(what: str):
    """--json."""
    return click.option("--json", "as_json", is_flag=True, help=f"Print the {what} as JSON on stdout.")


_restem_options = _options(
    click.option("--rounds", type=int, default=0, show_default=True,
                 help="ReST-EM rounds: fine-tune the generator on its own best self-edits, evaluate on held-out passages."),
    click.option("--holdout", type=click.Path(dir_okay=False), help="With --rounds: held-out passages from this file."),
    click.option("--holdout-fraction", type=float, help="With --rounds: hold out whole titles of --data (seeded) until about this share of its passages is held out."),
    click.option("--holdout-passages", type=int, help="With --rounds: use only the first N held-out passages."),
    click.option("--policy-epochs", type=int, default=PolicyConfig.epochs, show_default=True, help="Generator update: epochs."),
    click.option("--policy-lr", type=float, default=PolicyConfig.lr, show_default=True, help="Generator update: learning rate."),
    click.option("--policy-rank", type=int, default=PolicyConfig.rank, show_default=True, help="Generator update: LoRA rank."),
)


@cli.command()
@_input_options(data="Default: the bundled 8 invented passages.", passages="Use only the first N passages.",
                k="Self-edits sampled per passage (best-of-K).")
@_edit_type_option("Self-edit prompt(s); repeat to mix (samples cycle through them). "
                   f"Default: {', '.join(SelfEditConfig.edit_types)} (the dev sweep: docs/notes/).")
@_run_options(workspace="runs.db and adapters go")
@click.option("--directives", type=click.Choice(["model", "off"]), default="model", show_default=True,
              help="'model': each self-edit carries a model-written directive; 'off': the default directive for all.")
@_training_options(epochs="Default directive: epochs.", lr="Default directive: learning rate.",
                   rank="Default directive: LoRA rank (alpha = 2 x rank).")
@_sampling_options
@click.option("--keep-adapters", is_flag=True, help="Keep every adapter, not only each passage's best.")
@_restem_options
@_scale_options
@click.option("--resume", "resume", metavar="RUN",
              help="Continue an interrupted run (id, prefix or 'latest') with its stored settings; other options but --threads "
                   "and the --workers options are ignored.")
@_json_option("summary")
def loop(data, passages, k, edit_types, min_grounding, train_on, model, seed, workspace, directives, epochs, lr, rank, precision, threads,
         temperature, top_p,
         keep_adapters, rounds, holdout, holdout_fraction, holdout_passages, policy_epochs, policy_lr, policy_rank,
         workers, threads_per_worker, ray_address, resume, as_json):
    """Run the SEAL inner loop: baseline, self-edits, LoRA per self-edit, evaluation, best-of-K.

    With --rounds R, the ReST-EM outer loop: R rounds of fine-tuning the generator on its own best
    self-edits, with held-out passages evaluated before the first round and after each.
    """
    from sealq.engine.loop import resume_loop, run_loop
    from sealq.store import resolve_workspace

    scale = ScaleConfig(workers=workers, threads_per_worker=threads_per_worker, ray_address=ray_address)
    if resume is not None:  # `--resume ""` (an unset shell variable) is an error, not a new run
        ws = resolve_workspace(workspace)
        summary = _with_progress(lambda events: resume_loop(resume, ws, events, scale, threads=threads))
        _print(summary, as_json, ws)
        return
    # ReST-EM-only options without --rounds are refused by LoopConfig itself (a SealqError: one line, exit 2)
    config = LoopConfig(
        model=model, data=data, passages=passages, seed=seed, keep_adapters=keep_adapters,
        selfedit=SelfEditConfig(k=k, edit_types=edit_types or SelfEditConfig.edit_types, temperature=temperature, top_p=top_p,
                                directives=directives, min_grounding=min_grounding, train_on=train_on),
        train=TrainConfig(default=Directive(epochs=epochs, lr=lr, rank=rank), precision=resolve_precision(precision),
                          threads=threads or 0), eval=EvalConfig(), rounds=rounds,
        holdout=holdout, holdout_fraction=holdout_fraction, holdout_passages=holdout_passages,
        policy=PolicyConfig(epochs=policy_epochs, lr=policy_lr, rank=policy_rank),
    )
    ws = resolve_workspace(workspace)
    summary = _with_progress(lambda events: run_loop(config, ws, events, scale=scale))
    _print(summary, as_json, ws)


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

    from sealq.analysis.stats import format_interval as cell

    t = Table(title=f"run {summary['run_id']}: ReST-EM, held-out passages (contains accuracy, 95% intervals)")
    for col in ("round", "policy (pairs)", "no passage", "passage in prompt", "mean self-edit", "best-of-K",
                "mean gain", "best-of-K gain", "train: mean reward", "kept"):
        t.add_column(col, justify="right")
    for r in summary["rounds"]:
        h, tr, pol = r.get("holdout"), r.get("train"), r.get("policy")
        policy = "base" if pol is None else (f"{pol['status']} ({pol['n_pairs']})")
        if h is None:
            continue
        t.add_row(str(r["round"]), policy, *[cell(h[row]["contains"]) for row in
                                             (Row.NO_CONTEXT, Row.WITH_CONTEXT, Row.MEAN_SELF_EDIT, Row.BEST_OF_K)],
                  cell(h["mean_gain"]["contains"], True), cell(h["best_gain"]["contains"], True),
                  "-" if tr is None else f"{tr['mean_reward']:+.3f}", "-" if tr is None else str(tr["kept_pairs"]))
    console.print(t)
    holdouts = [(r["round"], r.get("holdout") or {}) for r in summary["rounds"]]
    lines = [f"round {n} held-out self-edits: {e['n']} ({e['skipped']} skipped), {e['mean_words']:.0f} words and "
             f"{e['mean_items']:.1f} items on average, {e['copied_5grams']:.0%} of their 5-word spans copied from "
             "the passage" for n, e in ((n, h.get("self_edits")) for n, h in holdouts) if e]
    lines += [f"round {n} minus round 0, paired on the same held-out questions: mean self-edit "
              f"{cell(v[Row.MEAN_SELF_EDIT]['contains'], True)}, mean gain {cell(v['mean_gain']['contains'], True)}, "
              f"no passage {cell(v[Row.NO_CONTEXT]['contains'], True)}"
              for n, v in ((n, h.get("vs_round0")) for n, h in holdouts) if v]
    for line in lines + [f"recorded in {db_path}"]:
        console.print(line)


def print_eval(table: dict, run_id: str, console, config: dict) -> None:
    """The SEAL-style comparison table with 95% intervals, and the paired differences."""
    from rich.table import Table

    from sealq.analysis.stats import format_interval as cell
    from sealq.analysis.tables import PAPER_ROWS

    d = config["train"]["default"]
    t = Table(title=f"run {run_id}: {table['passages']} passages, {table['questions']} questions, no passage in the "
                    f"prompt unless stated; K={config['selfedit']['k']}, seeds={config['seeds']}",
              caption=f"95% intervals: bootstrap resampling passages. Training: LoRA r={d['rank']} alpha={2 * d['rank']}, "
                      f"{d['epochs']} epochs, lr {d['lr']:g}, same for every condition. "
                      "SEAL column: Qwen2.5-7B, 200 passages (paper, Table 2).")
    for col in ("condition", "contains", "EM", "F1", "SEAL %"):
        t.add_column(col, justify="left" if col == "condition" else "right")
    for name, row in table["conditions"].items():
        paper = PAPER_ROWS.get(name)  # a Row, or its value when the table was read back from JSON (equal)
        t.add_row(row["label"], cell(row["contains"]), cell(row["em"]), cell(row["f1"]), "-" if paper is None else f"{paper:.1f}")
    console.print(t)
    diffs = Table(title="paired differences (same passages and questions)")
    for col in ("difference", "contains", "EM", "F1"):
        diffs.add_column(col, justify="left" if col == "difference" else "right")
    labels = {c: r["label"] for c, r in table["conditions"].items()}
    for row in table["differences"]:
        diffs.add_row(f"{labels[row['a']]} - {labels[row['b']]}", cell(row["contains"], True), cell(row["em"], True),
                      cell(row["f1"], True))
    console.print(diffs)


@cli.command(name="eval")
@_input_options(data="Default: the bundled passages.", passages="Use only the first N passages (after the --teacher filter).",
                k="Self-edits sampled per passage and seed.")
@click.option("--teacher", type=click.Path(dir_okay=False),
              help="Teacher self-edits (JSON list of {title, context, completions}); only passages with one are used.")
@click.option("--seeds", type=int, default=1, show_default=True,
              help="Repeat every trained condition with seeds SEED, SEED+1, ... (self-edits resampled, LoRAs re-initialized).")
@_edit_type_option(f"Self-edit prompt(s); repeat to mix. Default: {', '.join(SelfEditConfig.edit_types)} (the dev sweep: docs/notes/; "
                   f"the paper's row is {', '.join(PAPER_EDIT_TYPES)}).")
@_sampling_options
@_run_options(workspace="runs.db goes")
@_training_options(epochs="Training epochs (every condition).", lr="Peak learning rate (every condition).",
                   rank="LoRA rank, alpha = 2 x rank (every condition).")
@_scale_options
@_json_option("table")
def eval_(data, passages, k, teacher, seeds, edit_types, min_grounding, train_on, temperature, top_p, model, seed, workspace, epochs, lr, rank,
          precision, threads,
          workers, threads_per_worker, ray_address, as_json):
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
        selfedit=SelfEditConfig(k=k, edit_types=edit_types or SelfEditConfig.edit_types, directives="off",
                                temperature=temperature, top_p=top_p, min_grounding=min_grounding, train_on=train_on),
        train=TrainConfig(default=Directive(epochs=epochs, lr=lr, rank=rank), precision=resolve_precision(precision),
                          threads=threads or 0), eval=EvalConfig(),
    )
    scale = ScaleConfig(workers=workers, threads_per_worker=threads_per_worker, ray_address=ray_address)
    ws = resolve_workspace(workspace)
    summary = _with_progress(lambda events: run_loop(config, ws, events, command="eval", scale=scale))
    table = summary["eval"]
    if as_json:
        click.echo(json.dumps({"run_id": summary["run_id"], **table}, indent=2))
    else:
        console = Console()
        print_eval(table, summary["run_id"], Console(width=max(console.width, 150)), config.to_dict())
