"""The README's main job, `sealq loop` on the bundled default set (8 passages, K=3), as a user runs it."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlite_utils


@pytest.mark.slow
def test_default_loop_end_to_end(tmp_path, cache_root):
    sealq = Path(sys.executable).parent / "sealq"
    env = {**os.environ, "SEALQ_CACHE": str(cache_root)}
    t0 = time.perf_counter()
    proc = subprocess.run([str(sealq), "loop", "--workspace", str(tmp_path), "--json"], env=env,
                          capture_output=True, text=True, timeout=1800)
    minutes = (time.perf_counter() - t0) / 60
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    print(f"default loop: {minutes:.1f} min", json.dumps(summary["conditions"]))
    c = summary["conditions"]
    assert summary["passages"] == 8 and summary["self_edits"] == 24
    assert c["best_of_k"]["contains"] > c["no_context"]["contains"]
    db = sqlite_utils.Database(str(tmp_path / "runs.db"))
    assert db["runs"].count == 1 and next(db["runs"].rows)["status"] == "done"
    assert db["answers"].count >= 2 * c["no_context"]["n"]
