"""`sealq runs`, `sealq show` and `sealq ask` on a real small run."""

import json

from click.testing import CliRunner

from sealq.cli import cli


def _invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_runs_lists_the_run(cli_run):
    ws, summary = cli_run
    (row,) = json.loads(_invoke("runs", "--workspace", str(ws), "--json").stdout)
    assert row["id"] == summary["run_id"] and row["status"] == "done" and row["passages"] == 1 and row["k"] == 2
    assert row["best_of_k"] == summary["conditions"]["best_of_k"]["contains"]
    assert row["status_text"] == "done" and row["resume"] is None and row["duration_ms"] > 0 and row["duration"]
    table = _invoke("runs", "--workspace", str(ws)).stdout
    assert summary["run_id"] in table and "smollm2-135m" in table and row["duration"] in table
    assert "--resume" not in table  # a done run needs no hint


def test_show_gives_every_self_edit(cli_run):
    ws, summary = cli_run
    detail = json.loads(_invoke("show", summary["run_id"][:10], "--workspace", str(ws), "--json").stdout)
    (p,) = detail["passages"]
    assert p["title"] == "Varnholt Lighthouse" and p["baseline"] == 0.0 and len(p["self_edits"]) == 2
    assert sum(e["best"] for e in p["self_edits"]) == 1
    assert {"epochs", "lr", "rank"} == set(p["self_edits"][0]["directive"])
    run = detail["run"]
    assert run["status"] == "done" and run["resume"] is None and run["passages"] == 1 and run["k"] == 2
    assert run["self_edits"] == summary["self_edits"] and run["skipped"] == summary["skipped"]
    assert run["directive_fallbacks"] == summary["directive_fallbacks"]
    text = _invoke("show", "latest", "--workspace", str(ws)).stdout
    assert "Varnholt Lighthouse" in text and "implications" in text
    head = text.splitlines()
    assert head[0].startswith(f"run {summary['run_id']} (loop, smollm2-135m): done")
    assert head[1].startswith("1 passage, 5 questions, K=2, ") and run["edits_text"] in head[1]


def test_ask_with_the_learned_adapter_differs_from_the_base(cli_run):
    ws, _ = cli_run
    q = "Who was the last keeper of the Varnholt Lighthouse?"
    base = _invoke("ask", q).stdout
    adapted = _invoke("ask", q, "--run", "latest", "--passage", "0", "--workspace", str(ws)).stdout
    assert base.strip() and adapted.strip() and base != adapted


def test_inspect_errors_are_one_line(cli_run, workspace):
    ws, _ = cli_run
    for args, message in [(["show", "NOPE", "--workspace", str(ws)], "no run 'NOPE'"),
                          (["runs"], "no runs yet"),
                          (["ask", "q?", "--run", "latest", "--workspace", str(ws)], "--run needs --passage"),
                          (["ask", "q?", "--adapter", "/nonexistent.gguf"], "adapter file not found"),
                          (["ask", "q?", "--passage", "0"], "--passage needs --run"),
                          (["show", "%", "--workspace", str(ws)], "no run '%'"),
                          (["report", "latest", "-o", "x.md", "--workspace", str(ws)], "Markdown twin")]:
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 2 and message in r.stderr and r.stderr.count("\n") == 1, (args, r.stderr)


def test_datasette_lists_the_tables(cli_run):
    import asyncio

    from datasette.app import Datasette

    ws, _ = cli_run

    async def tables():
        ds = Datasette([str(ws / "runs.db")])
        response = await ds.client.get("/runs.json")
        assert response.status_code == 200
        return {t["name"] for t in response.json()["tables"]}

    assert {"runs", "passages", "questions", "self_edits", "adapters", "answers", "timings"} <= asyncio.run(tables())
