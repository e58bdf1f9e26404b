"""`sealq report`: a self-contained HTML file with its figures, a Markdown twin, and a real browser render."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from sealq.cli import cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def report(cli_run, tmp_path_factory):
    ws, summary = cli_run
    out = tmp_path_factory.mktemp("report") / "report.html"
    r = CliRunner().invoke(cli, ["report", summary["run_id"], "-o", str(out), "--workspace", str(ws)],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return out


def test_html_is_self_contained_with_every_section(report):
    page = report.read_text()
    assert len(re.findall(r'<img class="figure" alt="[^"]+" src="data:image/png;base64,', page)) == 4
    assert "src=\"http" not in page and "<link" not in page
    for section in ("Setup", "Results", "Which edits worked", "Training", "Examples", "Limitations"):
        assert f"<h2>{section}" in page
    assert "Best self-edit" in page and "Varnholt Lighthouse" in page


def test_markdown_twin_and_pngs(report):
    md = report.with_suffix(".md").read_text()
    assert "| status | done |" in md and "--resume" not in md  # a done run: no note, no hint
    pngs = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", md)
    assert len(pngs) == 4
    for p in pngs:
        assert (report.parent / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian package chromium; .ci/run installs it)")
def test_report_renders_in_headless_chromium(report, tmp_path):
    common = FLAGS + [f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    dom = subprocess.run([CHROMIUM, *common, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120)
    assert 'data-figures-loaded="4"' in dom.stdout, dom.stderr[-2000:]
    shot = Path(report.parent / "report.png")
    subprocess.run([CHROMIUM, *common, f"--screenshot={shot}", "--window-size=1200,2400", report.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
