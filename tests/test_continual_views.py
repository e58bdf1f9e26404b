"""`sealq runs`, `show`, `report` and `ask` on a real tiny continual run (the `continual_run` fixture)."""

import json
import re
import sqlite3
from itertools import product

import pytest
from click.testing import CliRunner

from sealq.cli import cli
from sealq.vocab import UpdateStatus


def _invoke(*args):
    r = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r.stdout


def _est(x):
    return None if x is None else x["estimate"]


@pytest.fixture()
def not_done(continual_run, tmp_path):
    """A copy of the continual run's workspace with the run marked interrupted and its summary dropped."""
    ws, summary = continual_run
    copy = tmp_path / "copy"
    copy.mkdir()
    src, dst = sqlite3.connect(ws / "runs.db"), sqlite3.connect(copy / "runs.db")
    src.backup(dst)
    dst.execute("update runs set status = 'interrupted', summary_json = null where id = ?", [summary["run_id"]])
    dst.commit()
    src.close()
    dst.close()
    return copy, summary


def test_runs_row_has_k_passages_and_the_first_gate(continual_run):
    ws, summary = continual_run
    (row,) = json.loads(_invoke("runs", "--workspace", str(ws), "--json"))
    first = summary["gates"][summary["gate_order"][0]]
    assert row["id"] == summary["run_id"] and row["status"] == "done"
    assert row["k"] == 1 and row["passages"] == 4 and (row["sequences"], row["length"]) == (2, 2)
    assert row["gate"] == "none" and row["best_of_k"] is None
    assert row["no_context"] == _est(first["before"]) and row["mean_self_edit"] == _est(first["just_learned"])
    assert row["final"] == _est(first["final"]) and row["no_context"] is not None
    table = _invoke("runs", "--workspace", str(ws))
    assert summary["run_id"] in table and "4 (2x2)" in table and "None" not in table


def test_show_json_has_the_summary_and_every_decision(continual_run):
    ws, summary = continual_run
    detail = json.loads(_invoke("show", summary["run_id"][:12], "--workspace", str(ws), "--json"))
    assert detail["summary"] == summary
    keys = [(d["sequence"], d["gate"], d["step"]) for d in detail["decisions"]]
    assert sorted(keys) == sorted(product(range(2), summary["gate_order"], range(2))) and len(set(keys)) == len(keys)
    assert keys[:3] == [(0, g, 0) for g in summary["gate_order"]]  # by sequence, step, then the run's gate order
    for d in detail["decisions"]:
        assert d["passage"] and d["status"] in UpdateStatus.values() and d["reward"] is not None
        unmeasured = d["gate"] == "none" or (d["step"] == 0 and d["gate"].startswith("retention"))
        if d["status"] != UpdateStatus.NO_UPDATE:  # a gate measures an update it is given (retention: from step 1)
            assert (d["measurement"] is None) == unmeasured, d
    for gate in summary["gate_order"]:
        u = summary["gates"][gate]["updates"]
        mine = [d["status"] for d in detail["decisions"] if d["gate"] == gate]
        assert (mine.count("accepted"), mine.count("rejected")) == (u["accepted"], u["rejected"])
    assert detail["run"]["continual"]["gate"] == "none" and detail["run"]["k"] == 1


def test_show_text_prints_the_matrices_and_the_decisions(continual_run):
    ws, summary = continual_run
    detail = json.loads(_invoke("show", "latest", "--workspace", str(ws), "--json"))
    text = _invoke("show", "latest", "--workspace", str(ws))
    head = text.splitlines()
    assert head[0] == f"run {summary['run_id']} (continual, {detail['run']['model']}): done"
    assert head[1].startswith("2 sequences x 2 passages, ") and "K=1" in head[1]
    assert "gates side by side" in text and "gate decisions" in text and "SEAL (Qwen2.5-7B) passage 0" in text
    for gate in summary["gate_order"]:
        assert f"gate {gate}: contains accuracy" in text
    for d in detail["decisions"]:
        assert d["passage"][:12] in text


def test_show_of_a_run_that_is_not_done_recomputes_the_summary(not_done):
    ws, summary = not_done
    detail = json.loads(_invoke("show", "latest", "--workspace", str(ws), "--json"))
    assert detail["run"]["status"] == "interrupted" and detail["summary"] == summary  # the bootstrap is seeded
    text = _invoke("show", "latest", "--workspace", str(ws))
    assert f"continue it with `sealq continual --resume {summary['run_id']}`" in text.splitlines()[0]
    (row,) = json.loads(_invoke("runs", "--workspace", str(ws), "--json"))
    assert row["resume"] == f"sealq continual --resume {summary['run_id']}"


def _matrix_line(i: int, row: list) -> str:
    cells = ["" if x is None else f"{x['estimate']:.2f} [{x['low']:.2f}, {x['high']:.2f}]" for x in row]
    return f"| after {i} step{'' if i == 1 else 's'} | " + " | ".join(cells) + " |"


def test_report_has_each_gates_matrix_heatmaps_and_retention(continual_run, tmp_path):
    import matplotlib.pyplot as plt

    ws, summary = continual_run
    out = tmp_path / "report.html"
    _invoke("report", summary["run_id"], "-o", str(out), "--workspace", str(ws))
    md, page = out.with_suffix(".md").read_text(), out.read_text()
    for gate in summary["gate_order"]:
        section = md.split(f"### gate {gate}\n", 1)[1].split("###", 1)[0]
        for i, row in enumerate(summary["gates"][gate]["matrix"]):
            assert _matrix_line(i, row) in section, (gate, i)
    assert "| sequences x length | 2 x 2 " in md and f"| gates | {', '.join(summary['gate_order'])} |" in md
    assert "| training directive | epochs=1, " in md and "| precision | " in md
    assert "SEAL (Qwen2.5-7B, sec. 4.3) | 0.331 | 0.383 | 0.364 |" in md and "logit-change correlation" in md
    assert "## Limitations" in md and "Few sequences: 2 sequences" in md
    pngs = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", md)
    assert [p.rsplit("/", 1)[1] for p in pngs] == ["matrix_0.png", "matrix_1.png", "matrix_2.png", "retention.png"]
    for p in pngs:
        image = plt.imread(out.parent / p)  # decodes: (height, width, channels)
        assert image.ndim == 3 and image.shape[0] > 150 and image.shape[1] > 250 and image.std() > 0.05
    assert len(re.findall(r'<img class="figure" alt="[^"]+" src="data:image/png;base64,', page)) == 4
    assert f"<h3>gate {summary['gate_order'][-1]}</h3>" in page and "src=\"http" not in page


def test_ask_refuses_a_continual_run(continual_run):
    ws, summary = continual_run
    for extra in ([], ["--passage", "0"]):
        r = CliRunner().invoke(cli, ["ask", "Who?", "--run", "latest", "--workspace", str(ws), *extra])
        assert r.exit_code == 2 and r.stderr.count("\n") == 1 and r.stdout == "", r.stderr
        assert r.stderr.startswith(f"Error: run {summary['run_id']} is a continual run")
        assert f"sealq show {summary['run_id']}" in r.stderr
