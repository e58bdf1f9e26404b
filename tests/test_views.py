"""One truth in every view: `sealq loop`'s closing lines, `sealq runs`, `sealq show` and `sealq report` say
the same status, counts and duration of a run, each derived in one place (sealq.analysis.summary).

One tiny real `--directives off` loop is shared by the module; a copy of its workspace is made dead the
way a SIGKILLed run looks on disk (recorded as running, by a process that is gone, its lock not held).
"""

import json
import re
import shutil
import subprocess

import pytest
import sqlite_utils
from click.testing import CliRunner

from sealq.cli import cli


def _invoke(*args):
    r = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r.stdout


@pytest.fixture(scope="module")
def off_run(tmp_path_factory, cache_root):
    """`sealq loop --passages 1 --k 1 --epochs 1 --directives off` (printed summary, not --json).

    Returns (workspace, run id, what the loop printed on stdout)."""
    ws = tmp_path_factory.mktemp("views-ws")
    r = CliRunner().invoke(cli, ["loop", "--passages", "1", "--k", "1", "--epochs", "1", "--directives", "off",
                                 "--edit-type", "implications", "--workspace", str(ws)],
                           catch_exceptions=False, env={"SEALQ_CACHE": str(cache_root)})
    assert r.exit_code == 0, r.output
    (run_id,) = [row["id"] for row in sqlite_utils.Database(str(ws / "runs.db"))["runs"].rows]
    return ws, run_id, r.stdout


@pytest.fixture(scope="module")
def dead_run(off_run, tmp_path_factory):
    """A copy of the off run's workspace, made dead: status running, the pid of a process that has exited,
    no summary, the writer lock file present and unlocked (the kernel drops a flock when its holder dies)."""
    src, run_id, _ = off_run
    ws = tmp_path_factory.mktemp("dead") / "ws"
    shutil.copytree(src, ws)
    gone = subprocess.Popen(["true"])
    gone.wait()
    db = sqlite_utils.Database(str(ws / "runs.db"))
    db["runs"].update(run_id, {"status": "running", "pid": gone.pid, "finished_utc": None, "summary_json": None})
    db.conn.close()
    from sealq.store import RunLock

    lock = RunLock(ws, run_id)
    assert lock.path.exists() and not lock.held_by_other()
    return ws, run_id


def _report(ws, run_id, out):
    """`sealq report` -> (what it printed, markdown twin, html)."""
    printed = _invoke("report", run_id, "-o", str(out), "--workspace", str(ws))
    return printed, out.with_suffix(".md").read_text(), out.read_text()


def _md_setup(md: str) -> dict:
    """The Setup table of the Markdown twin as {row: value}."""
    part = md.split("## Setup\n", 1)[1].split("## Results", 1)[0]
    return {m[1]: m[2] for m in re.finditer(r"^\| (.+?) \| (.*) \|$", part, re.M)}


def _md_types(md: str) -> list[dict]:
    """The 'Which edits worked' table of the Markdown twin."""
    part = md.split("## Which edits worked\n", 1)[1].split("![", 1)[0].strip().splitlines()
    head = [h.strip() for h in part[0].strip("|").split("|")]
    return [dict(zip(head, (c.strip() for c in line.strip("|").split("|")))) for line in part[2:]]


def test_directives_off_closing_lines_mention_no_fallback(off_run, tmp_path):
    ws, run_id, printed = off_run
    assert run_id in printed and "recorded in" in printed
    assert "fall back" not in printed and "fallback" not in printed, printed
    assert "directives off" in printed
    stored = json.loads(sqlite_utils.Database(str(ws / "runs.db"))["runs"].get(run_id)["summary_json"])
    assert stored["directive_fallbacks"] == 0 and stored["directives"] == "off" and stored["self_edits"] == 1
    # the report and `sealq show` agree: fixed settings are no fallback
    _, md, _ = _report(ws, run_id, tmp_path / "r.html")
    assert sum(int(r["directive fallbacks"]) for r in _md_types(md)) == 0
    assert "directives off" in _md_setup(md)["self-edits"]
    detail = json.loads(_invoke("show", run_id, "--workspace", str(ws), "--json"))
    assert detail["run"]["directive_fallbacks"] == 0
    assert [e["directive_fallbacks"] for p in detail["passages"] for e in p["self_edits"]] == [None]


def test_show_gives_the_runs_and_each_adapters_thread_count(off_run):
    """The run's threads (pinned by the suite: fixed) are stored with it, each adapter row records the count it
    trained with, and `sealq show` says both (--json and the printed header and table)."""
    from conftest import TEST_THREADS

    ws, run_id, _ = off_run
    n = int(TEST_THREADS)
    config = json.loads(sqlite_utils.Database(str(ws / "runs.db"))["runs"].get(run_id)["config_json"])
    assert (config["train"]["threads"], config["eval"]["threads"], config["train"]["lower_when_busy"]) == (n, n, False)
    detail = json.loads(_invoke("show", run_id, "--workspace", str(ws), "--json"))
    threads = detail["run"]["threads"]
    assert (threads["run"], threads["automatic"], threads["adapters"]) == (n, False, {str(n): 1})
    assert [e["threads"] for p in detail["passages"] for e in p["self_edits"]] == [n]
    text = _invoke("show", run_id, "--workspace", str(ws))
    assert f"threads {n} (fixed); adapters trained with {n}: 1" in text
    assert re.search(r"threads", text.split("\n", 3)[3]), text  # the per-self-edit table has the column


def test_model_directives_report_their_real_count_everywhere(cli_run, tmp_path):
    """A model-directives run: the loop's closing line, --json, show and the report give one count."""
    from rich.console import Console

    from sealq.cli.loop import print_summary

    ws, summary = cli_run
    run_id = summary["run_id"]
    db = sqlite_utils.Database(str(ws / "runs.db"))
    real = sum(1 for e in db["self_edits"].rows_where("run_id = ?", [run_id])
               if e["source"] == "self_edit" and e["status"] == "ok"
               and json.loads(e["directive_fallback_json"]) and "all" not in json.loads(e["directive_fallback_json"]))
    assert summary["directive_fallbacks"] == real and summary["directives"] == "model"
    console = Console(record=True, width=300)
    print_summary(summary, console, str(ws / "runs.db"))
    closing = console.export_text()
    assert f"{real} of the model-written directives had a field fall back to the default" in closing
    assert f"{summary['skipped']} skipped" in closing
    _, md, _ = _report(ws, run_id, tmp_path / "r.html")
    types = _md_types(md)
    assert sum(int(r["directive fallbacks"]) for r in types) == real
    assert sum(int(r["skipped"]) for r in types) == summary["skipped"]
    assert sum(int(r["self-edits"]) for r in types) == summary["self_edits"]
    detail = json.loads(_invoke("show", run_id, "--workspace", str(ws), "--json"))
    assert detail["run"]["directive_fallbacks"] == real and detail["run"]["skipped"] == summary["skipped"]
    assert sum(bool(e["directive_fallbacks"]) for p in detail["passages"] for e in p["self_edits"]) == real
    text = _invoke("show", run_id, "--workspace", str(ws))
    assert f"{real} of the model-written directives had a field fall back" in text


def test_every_view_says_dead_and_how_to_continue(dead_run, tmp_path):
    ws, run_id = dead_run
    resume = f"sealq loop --resume {run_id}"
    (row,) = json.loads(_invoke("runs", "--workspace", str(ws), "--json"))
    assert row["status"] == "dead" and row["resume"] == resume and "dead" in row["status_text"]
    table = _invoke("runs", "--workspace", str(ws))
    assert " dead " in table and resume in table
    detail = json.loads(_invoke("show", run_id, "--workspace", str(ws), "--json"))
    assert detail["run"]["status"] == "dead" and detail["run"]["resume"] == resume
    text = _invoke("show", run_id, "--workspace", str(ws))
    assert "dead" in text.splitlines()[0] and resume in text.splitlines()[0]
    printed, md, page = _report(ws, run_id, tmp_path / "r.html")
    assert "dead" in printed and resume in printed
    status = _md_setup(md)["status"]
    assert status.startswith("dead") and resume in status
    assert md.count(resume) == 2 and page.count(resume) == 2  # the note on top and the status row


def test_a_live_writer_is_running_in_every_view(dead_run, tmp_path):
    """The same row with its lock held (by this process, as a writer would): every view says running."""
    from sealq.store import RunLock

    ws, run_id = dead_run
    lock = RunLock(ws, run_id).acquire()
    try:
        (row,) = json.loads(_invoke("runs", "--workspace", str(ws), "--json"))
        assert row["status"] == "running" and row["resume"] is None
        detail = json.loads(_invoke("show", run_id, "--workspace", str(ws), "--json"))
        assert detail["run"]["status"] == "running"
        _, md, _ = _report(ws, run_id, tmp_path / "r.html")
        assert _md_setup(md)["status"].startswith("running") and "--resume" not in md
    finally:
        lock.release()


def test_counts_and_duration_agree_across_views(off_run, tmp_path):
    from sealq.analysis.summary import format_duration

    ws, run_id, _printed = off_run
    db = sqlite_utils.Database(str(ws / "runs.db"))
    ms = db["runs"].get(run_id)["duration_ms"]
    (row,) = json.loads(_invoke("runs", "--workspace", str(ws), "--json"))
    detail = json.loads(_invoke("show", run_id, "--workspace", str(ws), "--json"))
    _, md, _ = _report(ws, run_id, tmp_path / "r.html")
    setup = _md_setup(md)
    assert row["duration_ms"] == detail["run"]["duration_ms"] == ms
    assert row["duration"] == detail["run"]["duration"] == setup["duration"] == format_duration(ms)
    assert row["passages"] == detail["run"]["passages"] == len(detail["passages"]) == 1
    assert setup["passages / questions"] == f"1 / {detail['run']['questions']}"
    assert setup["self-edits"] == detail["run"]["edits_text"]
    assert row["best_of_k"] == detail["run"]["conditions"]["best_of_k"]["contains"]
    assert setup["status"] == "done" and row["resume"] is None and row["status"] == "done"


def test_format_duration():
    from sealq.analysis.summary import format_duration

    assert [format_duration(x) for x in (None, 4_200, 90_000, 7_500_000)] == ["0 s", "4 s", "1.5 min", "2 h 05 min"]


def test_the_hint_continues_the_dead_run(dead_run, cache_root):
    """`sealq loop --resume RUN`, as every view says, finishes the dead run; then every view says done. Resumed
    with --threads 2 (the suite pins 1), the run records its new count and its adapter keeps the one it had."""
    from conftest import TEST_THREADS

    ws, run_id = dead_run
    r = CliRunner().invoke(cli, ["loop", "--resume", run_id, "--threads", "2", "--workspace", str(ws), "--json"],
                           catch_exceptions=False, env={"SEALQ_CACHE": str(cache_root)})
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["directive_fallbacks"] == 0
    (row,) = json.loads(_invoke("runs", "--workspace", str(ws), "--json"))
    assert row["status"] == "done" and row["resume"] is None
    detail = json.loads(_invoke("show", run_id, "--workspace", str(ws), "--json"))
    assert detail["run"]["status"] == "done"
    assert detail["run"]["threads"]["text"] == f"threads 2 (fixed); adapters trained with {TEST_THREADS}: 1"
