"""``sealq runs``, ``sealq show RUN`` and ``sealq ask``: browse what a run did and poke at what was learned."""

from __future__ import annotations

import json
from pathlib import Path

import click

from sealq.cli import cli
from sealq.errors import SealqError

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
    """List runs: id, when, model, data, passages, K, status, headline accuracy (contains).

    Status is running, done, failed, interrupted (Ctrl-C) or dead (recorded as running but no process
    holds its lock: killed or crashed); `sealq loop --resume RUN` continues the last three.
    """
    from sealq.store import RunLock

    db = _db(workspace)
    ws = Path(db.conn.execute("pragma database_list").fetchone()[2]).parent
    rows = []
    for r in db.query("select * from runs order by id desc"):
        if r["status"] == "running" and not RunLock(ws, r["id"]).held_by_other():
            r["status"] = "dead"  # its process is gone (killed, crashed): `sealq loop --resume` continues it
        cfg = json.loads(r["config_json"] or "{}")
        summary = json.loads(r["summary_json"] or "null") or {}
        cond = summary.get("conditions", {})
        rows.append({
            "id": r["id"], "started_utc": r["started_utc"], "status": r["status"], "model": r["model_name"],
            "data": r["data_path"], "passages": summary.get("passages", db.execute(
                "select count(*) from passages where run_id = ?", [r["id"]]).fetchone()[0]),
            "k": cfg.get("selfedit", {}).get("k"), "duration_ms": r["duration_ms"],
            "no_context": cond.get("no_context", {}).get("contains"),
            "mean_self_edit": cond.get("mean_self_edit", {}).get("contains"),
            "best_of_k": cond.get("best_of_k", {}).get("contains"),
        })
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Column, Table

    t = Table(Column("id", no_wrap=True, min_width=26), Column("started (UTC)", no_wrap=True), "status", "model",
              "data", "passages", "K", "baseline", "mean self-edit", "best-of-K",
              caption="accuracy: contains, no passage in the prompt")
    fmt = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    for r in rows:
        data = r["data"] if r["data"].startswith("(") else Path(r["data"]).name
        t.add_row(r["id"], r["started_utc"][:16].replace("T", " "), r["status"], r["model"], data, str(r["passages"]),
                  str(r["k"]), fmt(r["no_context"]), fmt(r["mean_self_edit"]), fmt(r["best_of_k"]))
    Console(width=max(Console().width, 140)).print(t)


def run_detail(db, run_id: str) -> dict:
    """Per passage: baseline and ceiling accuracy, each self-edit (type, directive, reward), the best pick."""
    out = {"run_id": run_id, "passages": []}
    for p in db.query("select * from passages where run_id = ? order by round, split = 'train', idx", [run_id]):
        acc = {c: db.execute(
            """select avg(a.contains) from answers a join questions q on q.id = a.question_id
               where q.passage_id = ? and a.condition = ?""", [p["id"], c]).fetchone()[0]
            for c in ("no_context", "with_context")}
        edits = []
        for s in db.query("select * from self_edits where passage_id = ? order by seed_idx, sample_idx", [p["id"]]):
            edits.append({
                "id": s["id"], "sample": s["sample_idx"], "source": s["source"], "seed": s["seed_idx"],
                "edit_type": s["edit_type"], "status": s["status"],
                "n_items": s["n_items"], "directive": json.loads(s["directive_json"]),
                "directive_raw": s["directive_raw"], "fallbacks": json.loads(s["directive_fallback_json"]),
                "accuracy": s["accuracy"], "reward": s["reward"], "best": bool(s["is_best"]), "text": s["text"],
            })
        out["passages"].append({"idx": p["idx"], "round": p["round"], "split": p["split"], "title": p["title"],
                                "questions": p["n_questions"],
                                "baseline": acc["no_context"], "ceiling": acc["with_context"], "self_edits": edits})
    return out


@cli.command()
@click.argument("run", default="latest")
@_workspace
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
def show(run, workspace, as_json):
    """Show one run (id, unique prefix, or 'latest'): per passage, baseline and every self-edit."""
    db = _db(workspace)
    detail = run_detail(db, _run_id(db, run))
    if as_json:
        click.echo(json.dumps(detail, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 110))
    for p in detail["passages"]:
        where = "" if p["split"] == "all" else f"round {p['round']} {p['split']} "
        t = Table(title=f"{where}[{p['idx']}] {p['title']}: baseline {p['baseline']:.2f}, ceiling {p['ceiling']:.2f} "
                        f"({p['questions']} questions)", title_justify="left")
        for col in ("K", "type", "items", "directive", "fallback", "accuracy", "reward", "best"):
            t.add_column(col)
        for e in p["self_edits"]:
            d = e["directive"]
            sample = str(e["sample"]) if e["source"] == "model" else e["source"]
            # "all": fixed settings (--directives off, or a passage-only/teacher row), not a parse failure
            fallbacks = "fixed" if "all" in e["fallbacks"] else ", ".join(e["fallbacks"]) or "-"
            t.add_row(sample, e["edit_type"], str(e["n_items"]),
                      f"epochs={d['epochs']} lr={d['lr']:g} r={d['rank']}", fallbacks,
                      f"{e['accuracy']:.2f}", f"{e['reward']:+.2f}" + (" (skipped)" if e["status"] != "ok" else ""),
                      "*" if e["best"] else "")
        console.print(t)


@cli.command()
@click.argument("question")
@click.option("--run", help="Run id (or prefix, or 'latest') whose adapter to attach; needs --passage.")
@click.option("--passage", "passage_idx", type=int, help="Passage index in that run: its best-of-K adapter is used.")
@click.option("--adapter", type=click.Path(dir_okay=False), help="A GGUF LoRA adapter file to attach instead.")
@click.option("--model", default=None, help="Base model (default: the run's model, else the default model).")
@_workspace
@click.option("--max-tokens", type=click.IntRange(1, 1024), default=48, show_default=True)
def ask(question, run, passage_idx, adapter, model, workspace, max_tokens):
    """Answer QUESTION (greedy, no passage) with a learned adapter attached: see what the model now knows."""
    from sealq.engine.answer import qa_messages
    from sealq.engine.dataset import Passage, Question
    from sealq.models.llama import LlamaRunner
    from sealq.models.registry import resolve_model

    if run and adapter:
        raise SealqError("give --run/--passage or --adapter, not both")
    if passage_idx is not None and run is None:
        raise SealqError("--passage needs --run (the run whose best adapter for that passage to attach)")
    if run is not None:
        if passage_idx is None:
            raise SealqError("--run needs --passage (the passage index, see `sealq show`)")
        db = _db(workspace)
        run_id = _run_id(db, run)
        row = db.execute(
            """select a.gguf_path, r.model_path from adapters a
               join self_edits s on s.id = a.self_edit_id join passages p on p.id = s.passage_id
               join runs r on r.id = a.run_id
               where a.run_id = ? and p.idx = ? and s.is_best = 1 and a.kept = 1
               order by p.round desc, s.seed_idx limit 1""", [run_id, passage_idx]).fetchone()
        if row is None:
            raise SealqError(f"run {run_id} has no kept adapter for passage {passage_idx}")
        adapter, model = row[0], model or row[1]
    runner = LlamaRunner(resolve_model(model), n_ctx=1024)
    if adapter:
        runner.set_adapters([(adapter, 1.0)])
    msgs = qa_messages(Passage("", ""), Question(question, ("",)), with_context=False)
    click.echo(runner.chat(msgs, max_tokens=max_tokens).text.strip())


@cli.command()
@click.argument("run", default="latest")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="HTML file to write (default: <workspace>/runs/<run>/report.html); a Markdown twin goes beside it.")
@_workspace
def report(run, output, workspace):
    """Write a report of RUN: setup, results with intervals, figures, examples, limitations."""
    from pathlib import Path

    from sealq.engine.report import build_report
    from sealq.store import resolve_workspace

    db = _db(workspace)
    run_id = _run_id(db, run)
    out = Path(output) if output else resolve_workspace(workspace) / "runs" / run_id / "report.html"
    if out.suffix.lower() == ".md":
        raise SealqError(f"{out}: give the HTML file name; the Markdown twin is written beside it")
    try:
        html_path, md_path = build_report(db, run_id).write(out)
    except OSError as e:
        raise SealqError(f"{out}: cannot write report ({e.strerror or e})") from None
    click.echo(f"wrote {html_path} and {md_path}")
