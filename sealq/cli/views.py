"""``sealq runs``, ``sealq show RUN`` and ``sealq ask``: browse what a run did and poke at what was learned."""

from __future__ import annotations

import json
from pathlib import Path

import click

from sealq.cli.main import cli
from sealq.errors import SealqError
from sealq.vocab import Command, Condition, EditStatus, Row, Source, Split

_workspace = click.option("--workspace", type=click.Path(file_okay=False),
                          help="Workspace holding runs.db (default: $SEALQ_HOME or the current directory).")


def _db(workspace):
    from sealq.store import DB_NAME, open_db, resolve_workspace

    ws = resolve_workspace(workspace, create=False)
    if not (ws / DB_NAME).exists():
        raise SealqError(f"{ws / DB_NAME}: no runs yet (run `sealq loop` first)")
    return open_db(ws)


def _run_id(db, run: str) -> str:
    from sealq.store import find_run

    return find_run(db, run)


@cli.command()
@_workspace
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
def runs(workspace, as_json):
    """List runs: id, when, model, data, passages, K, status, duration, headline accuracy (contains).

    Status is running, done, failed, interrupted (Ctrl-C) or dead (recorded as running but no process
    holds its lock: killed or crashed); `sealq loop --resume RUN` continues the last three.
    """
    from sealq.analysis.summary import run_overview

    db = _db(workspace)
    rows = [_runs_row(run_overview(db, r)) for r in db.query("select * from runs order by id desc")]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Column, Table

    caption = "accuracy: contains, no passage in the prompt (of a run that is not done: what it recorded so far)"
    if any("gate" in r for r in rows):
        caption += ("; a continual run: its first gate's mean over sequences, baseline = a passage before it is "
                    "learned, mean self-edit = just after (`sealq show RUN` for the forgetting matrix)")
    t = Table(Column("id", no_wrap=True, min_width=26), Column("started (UTC)", no_wrap=True), "status",
              Column("model", no_wrap=True),
              "data", "passages", "K", Column("duration", no_wrap=True), "baseline", "mean self-edit", "best-of-K",
              caption=caption)
    fmt = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    for r in rows:
        data = r["data"] if r["data"].startswith("(") else Path(r["data"]).name
        passages = f"{r['passages']} ({r['sequences']}x{r['length']})" if "gate" in r else str(r["passages"])
        t.add_row(r["id"], r["started_utc"][:16].replace("T", " "), r["status"], r["model"], data, passages,
                  str(r["k"]), r["duration"], fmt(r[Row.NO_CONTEXT]), fmt(r[Row.MEAN_SELF_EDIT]), fmt(r[Row.BEST_OF_K]))
    console = Console(width=max(Console().width, 160))
    console.print(t)
    for r in rows:
        if r["resume"]:
            console.print(f"run {r['id']}: {r['status_text']}", markup=False, highlight=False, soft_wrap=True)


def _runs_row(o: dict) -> dict:
    """One row of ``sealq runs`` from a :func:`~sealq.analysis.summary.run_overview`. A continual run's
    accuracy columns are its first gate's mean ``before`` (baseline) and ``just_learned`` (mean self-edit),
    best-of-K None; its row adds ``gate``, ``sequences``, ``length`` and ``final``."""
    row = {
        "id": o["id"], "started_utc": o["started_utc"], "status": o["status"], "status_text": o["status_text"],
        "resume": o["resume"], "model": o["model"], "data": o["data"], "passages": o["passages"], "k": o["k"],
        "duration_ms": o["duration_ms"], "duration": o["duration"],
    }
    c = o.get("continual")
    if c is None:
        cond = o["conditions"]
        return {**row, **{r.value: cond.get(r, {}).get("contains")
                          for r in (Row.NO_CONTEXT, Row.MEAN_SELF_EDIT, Row.BEST_OF_K)}}
    est = {k: c[k]["estimate"] if c[k] else None for k in ("before", "just_learned", "final")}
    return {**row, Row.NO_CONTEXT.value: est["before"], Row.MEAN_SELF_EDIT.value: est["just_learned"],
            Row.BEST_OF_K.value: None, "gate": c["gate"], "sequences": c["sequences"], "length": c["length"],
            "final": est["final"]}


def run_detail(db, run_id: str) -> dict:
    """The run as a whole (:func:`sealq.analysis.summary.run_overview`: status, how to continue it, counts)
    and per passage: baseline and ceiling accuracy, each self-edit (type, directive, reward), the best pick."""
    from sealq.analysis.summary import directive_fallbacks, run_overview

    out: dict = {"run_id": run_id, "run": run_overview(db, run_id), "passages": []}
    for p in db.query("select * from passages where run_id = ? order by round, split = ?, idx",
                      [run_id, Split.TRAIN.value]):
        acc = {c: db.execute(
            """select avg(a.contains) from answers a join questions q on q.id = a.question_id
               where q.passage_id = ? and a.condition = ?""", [p["id"], c.value]).fetchone()[0]
            for c in (Condition.NO_CONTEXT, Condition.WITH_CONTEXT)}
        edits = []
        for s in db.query("""select s.*, a.threads from self_edits s left join adapters a on a.self_edit_id = s.id
                             where s.passage_id = ? order by s.seed_idx, s.sample_idx""", [p["id"]]):
            fallbacks = directive_fallbacks(s)
            edits.append({
                "id": s["id"], "sample": s["sample_idx"], "source": s["source"], "seed": s["seed_idx"],
                "edit_type": s["edit_type"], "status": s["status"],
                "n_items": s["n_items"], "directive": json.loads(s["directive_json"]),
                "directive_raw": s["directive_raw"], "fallbacks": json.loads(s["directive_fallback_json"]),
                # fields that fell back to the default; null: no model-written directive was asked for
                "directive_fallbacks": fallbacks,
                "accuracy": s["accuracy"], "reward": s["reward"], "best": bool(s["is_best"]), "text": s["text"],
                "threads": s["threads"],  # torch threads its adapter trained with (None: no adapter, or not recorded)
            })
        out["passages"].append({"idx": p["idx"], "round": p["round"], "split": p["split"], "title": p["title"],
                                "questions": p["n_questions"],
                                "baseline": acc[Condition.NO_CONTEXT], "ceiling": acc[Condition.WITH_CONTEXT],
                                "self_edits": edits})
    return out


@cli.command()
@click.argument("run", default="latest")
@_workspace
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
def show(run, workspace, as_json):
    """Show one run (id, unique prefix, or 'latest'): its status, then per passage, baseline and every self-edit.

    A continual run: its forgetting matrix per gate, the gates side by side, and every gate decision."""
    db = _db(workspace)
    run_id = _run_id(db, run)
    command = db["runs"].get(run_id)["command"]
    if command in (Command.CONTINUAL, Command.LEARN):
        _show_continual(db, run_id, as_json)
        return
    detail = run_detail(db, run_id)
    if as_json:
        click.echo(json.dumps(detail, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    from sealq.analysis.summary import plural

    console = Console(width=max(Console().width, 110))
    o = detail["run"]
    plain = dict(markup=False, highlight=False, soft_wrap=True)
    console.print(f"run {o['id']} ({o['command']}, {o['model']}): {o['status_text']}", **plain)
    console.print(f"{plural(o['passages'], 'passage')}, {plural(o['questions'], 'question')}, K={o['k']}, {o['duration']}; "
                  f"{o['edits_text']}", **plain)
    console.print(o["threads"]["text"], **plain)
    fmt = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731  (a dead run may lack a ceiling)
    for p in detail["passages"]:
        where = "" if p["split"] == Split.ALL else f"round {p['round']} {p['split']} "
        t = Table(title=f"{where}[{p['idx']}] {p['title']}: baseline {fmt(p['baseline'])}, ceiling {fmt(p['ceiling'])} "
                        f"({p['questions']} questions)", title_justify="left")
        for col in ("K", "type", "items", "directive", "fallback", "threads", "accuracy", "reward", "best"):
            t.add_column(col)
        for e in p["self_edits"]:
            d = e["directive"]
            sample = str(e["sample"]) if e["source"] == Source.SELF_EDIT else e["source"]
            if e["directive_fallbacks"] is not None:
                fallbacks = ", ".join(e["directive_fallbacks"]) or "-"
            else:  # fixed settings (--directives off, a passage-only/teacher row), or skipped: none was asked for
                fallbacks = "fixed" if "all" in e["fallbacks"] or e["source"] != Source.SELF_EDIT else "-"
            t.add_row(sample, e["edit_type"], str(e["n_items"]),
                      f"epochs={d['epochs']} lr={d['lr']:g} r={d['rank']}", fallbacks,
                      "-" if e["threads"] is None else str(e["threads"]),
                      f"{e['accuracy']:.2f}", f"{e['reward']:+.2f}" + (" (skipped)" if e["status"] != EditStatus.OK else ""),
                      "*" if e["best"] else "")
        console.print(t)


def continual_detail(db, run_id: str) -> dict:
    """A continual run for ``sealq show``: ``{"run_id", "run"`` (:func:`~sealq.analysis.summary.run_overview`),
    ``"summary"`` (:func:`~sealq.analysis.summary.continual_results`: the stored summary of a done run, else
    what is recorded so far), ``"decisions"`` (:func:`~sealq.analysis.summary.continual_decisions`)``}``."""
    from sealq.analysis.summary import continual_decisions, continual_results, run_overview

    return {"run_id": run_id, "run": run_overview(db, run_id), "summary": continual_results(db, run_id),
            "decisions": continual_decisions(db, run_id)}


def _show_continual(db, run_id: str, as_json: bool) -> None:
    """``sealq show`` of a continual run: header, :func:`sealq.cli.continual.print_continual`, decisions."""
    detail = continual_detail(db, run_id)
    if as_json:
        click.echo(json.dumps(detail, indent=2))
        return
    from rich.console import Console

    from sealq.analysis.summary import plural
    from sealq.cli.continual import print_continual
    from sealq.store import DB_NAME, workspace_of

    console = Console(width=max(Console().width, 150), emoji=False)  # a gate spec like kl:100: is no emoji
    o, c = detail["run"], detail["run"]["continual"]
    plain: dict = dict(markup=False, highlight=False, soft_wrap=True)
    console.print(f"run {o['id']} ({o['command']}, {o['model']}): {o['status_text']}", **plain)
    console.print(f"{c['sequences']} sequences x {plural(c['length'], 'passage')}, {plural(o['questions'], 'question')} "
                  f"recorded, K={o['k']}, {o['duration']}; {o['edits_text']}", **plain)
    console.print(o["threads"]["text"], **plain)
    if o["command"] == Command.LEARN:
        from sealq.cli.learn import print_learn

        console.print(f"learned from: {o['data']}", **plain)
        ws = workspace_of(db)
        assert ws is not None  # `sealq show` reads runs.db in a workspace folder, never an in-memory one
        print_learn(detail["summary"], console, str(ws / DB_NAME))
    else:
        ws = workspace_of(db)
        assert ws is not None  # as above
        print_continual(detail["summary"], console, str(ws / DB_NAME))
    if detail["decisions"]:
        console.print(_decisions_table(detail["decisions"]))
    else:
        console.print("no gate decision recorded yet", **plain)


def _decisions_table(decisions: list[dict]):
    """Every gate decision as a rich table (a gate that measured nothing shows '-' for both figures)."""
    from rich.table import Table

    t = Table(title="gate decisions: per sequence and step, each gate's verdict on the step's best self-edit "
                    "(reward: contains gain on the passage's gate questions)", title_justify="left")
    for col in ("sequence", "step", "passage", "gate", "status", "measurement", "threshold", "reward"):
        t.add_column(col, justify="left" if col in ("passage", "gate", "status") else "right")
    for d in decisions:
        measured = d["measurement"] is not None
        t.add_row(str(d["sequence"]), str(d["step"]), d["passage"] or "", d["gate"], d["status"],
                  f"{d['measurement']:.4g}" if measured else "-", f"{d['threshold']:g}" if measured else "-",
                  "-" if d["reward"] is None else f"{d['reward']:+.2f}")
    return t


@cli.command()
@click.argument("question")
@click.option("--run", help="Run id (or prefix, or 'latest') whose adapter to attach; needs --passage, except for a "
              "learn run (its learned document model).")
@click.option("--passage", "passage_idx", type=int, help="Passage index in that run: its best-of-K adapter is used.")
@click.option("--adapter", type=click.Path(dir_okay=False), help="A GGUF LoRA adapter file to attach instead.")
@click.option("--gate", help="A learn run: which gate's model (default: the run's first gate).")
@click.option("--model", default=None, help="Base model (default: the run's model, else the default model).")
@_workspace
@click.option("--max-tokens", type=click.IntRange(1, 1024), default=48, show_default=True)
def ask(question, run, passage_idx, adapter, gate, model, workspace, max_tokens):
    """Answer QUESTION (greedy, no passage) with a learned adapter attached: see what the model now knows."""
    from sealq.engine.answer import qa_messages
    from sealq.engine.config import LoopConfig
    from sealq.engine.dataset import Passage, Question
    from sealq.models.llama import LlamaRunner
    from sealq.models.registry import resolve_model

    try:
        question.encode("utf-8")
    except UnicodeEncodeError as e:  # bytes that are not UTF-8 in the shell's argument
        raise SealqError(f"the question is not valid UTF-8 text ({e.reason} at character {e.start})") from None
    if run and adapter:
        raise SealqError("give --run/--passage or --adapter, not both")
    if passage_idx is not None and run is None:
        raise SealqError("--passage needs --run (the run whose best adapter for that passage to attach)")
    if gate is not None and run is None:
        raise SealqError("--gate needs --run (a learn run)")
    adapters = [(adapter, 1.0)] if adapter else []
    if run is not None:
        db = _db(workspace)
        run_id = _run_id(db, run)
        _refuse_continual(db, run_id)
        if db["runs"].get(run_id)["command"] == Command.LEARN:
            if passage_idx is not None:
                raise SealqError(f"run {run_id} is a learn run: it holds one document model; ask without --passage")
            from sealq.analysis.learn import learned_model

            updates, base, _ = learned_model(db, run_id, _gate_spec(gate))
            adapters, model = [(g, 1.0) for _, g in updates], model or base
        elif gate is not None:
            raise SealqError("--gate is for a learn run")
        elif passage_idx is None:
            raise SealqError("--run needs --passage (the passage index, see `sealq show`)")
        else:
            adapter_path, base = _best_adapter(db, run_id, passage_idx)
            adapters, model = [(adapter_path, 1.0)], model or base
    runner = LlamaRunner(resolve_model(model), n_ctx=LoopConfig().eval.n_ctx)  # the context window of the loop
    if adapters:
        runner.set_adapters(adapters)
    msgs = qa_messages(Passage("", ""), Question(question, ("",)), with_context=False)
    try:
        runner.check_fits(msgs, max_tokens)
    except SealqError as e:
        raise SealqError(f"the question: {e} (or lower --max-tokens)") from None
    click.echo(runner.chat(msgs, max_tokens=max_tokens).text.strip())


def _best_adapter(db, run_id: str, passage_idx: int) -> tuple[str, str]:
    """(GGUF of the best kept adapter of passage ``passage_idx``, the run's base model path).

    Raises:
        SealqError: no kept adapter for that passage.
    """
    row = db.execute(
        """select a.gguf_path, r.model_path from adapters a
           join self_edits s on s.id = a.self_edit_id join passages p on p.id = s.passage_id
           join runs r on r.id = a.run_id
           where a.run_id = ? and p.idx = ? and s.is_best = 1 and a.kept = 1
           order by p.round desc, s.seed_idx limit 1""", [run_id, passage_idx]).fetchone()
    if row is None:
        raise SealqError(f"run {run_id} has no kept adapter for passage {passage_idx}")
    return row[0], row[1]


def _gate_spec(gate: str | None) -> str | None:
    """``--gate`` as stored (``kl:0.10`` is ``kl:0.1``); raises SealqError for a spec that is not a gate."""
    from sealq.engine.config import Gate

    return Gate.parse(gate).spec if gate else None


def _refuse_continual(db, run_id: str) -> None:
    """``sealq ask --run`` attaches one adapter; a continual run's models are stacks of them.

    Raises:
        SealqError: ``run_id`` is a continual run.
    """
    if db["runs"].get(run_id)["command"] == Command.CONTINUAL:
        raise SealqError(f"run {run_id} is a continual run: it holds one model per gate and sequence (a stack of "
                         f"adapters), which `sealq ask` cannot attach yet; see what it learned with `sealq show {run_id}`")


@cli.command()
@click.argument("run", default="latest")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="HTML file to write (default: <workspace>/runs/<run>/report.html); a Markdown twin goes beside it.")
@_workspace
def report(run, output, workspace):
    """Write a report of RUN: setup, results with intervals, figures, examples, limitations."""
    from pathlib import Path

    from sealq.analysis.report import build_report
    from sealq.store import resolve_workspace

    db = _db(workspace)
    run_id = _run_id(db, run)
    out = Path(output) if output else resolve_workspace(workspace) / "runs" / run_id / "report.html"
    if out.suffix.lower() == ".md":
        raise SealqError(f"{out}: give the HTML file name; the Markdown twin is written beside it")
    rep = build_report(db, run_id)
    try:
        html_path, md_path = rep.write(out)
    except OSError as e:
        raise SealqError(f"{out}: cannot write report ({e.strerror or e})") from None
    click.echo(f"wrote {html_path} and {md_path}")
    if rep.note:
        click.echo(rep.note)


@cli.command()
@click.argument("run")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--gate", help="Which gate's model (default: the run's first gate).")
@click.option("--workspace", type=click.Path(file_okay=False), help="Where runs.db is (default: $SEALQ_HOME or the current directory).")
def export(run, out, gate, workspace):
    """Write what learn RUN learned (its accepted updates) as one GGUF LoRA adapter OUT for llama.cpp tools.

    Load it with the run's base model: `Llama(model_path=BASE, lora_path=OUT)`, or `llama-server -m BASE --lora OUT`.
    """
    from sealq.analysis.learn import learned_model
    from sealq.convert.combine import combine_adapters

    db = _db(workspace)
    run_id = _run_id(db, run)
    updates, base, desc = learned_model(db, run_id, _gate_spec(gate))
    done = combine_adapters([g for _, g in updates], out, name=f"sealq learn {run_id} ({desc})")
    click.echo(f"wrote {done['path']}: {done['adapters']} accepted update(s) of {desc} combined (rank {done['rank']}, "
               f"{done['tensor_pairs']} tensor pairs); base model {base}")
