"""Control for a ReST-EM run: are round R's self-edits better, or only the model they are trained on?

Takes the held-out self-edits that round R's model (base + policies) wrote and trains and scores each of
them on the *base* model, through sealq's teacher condition (seed s uses the s-th self-edit of a passage),
with the run's own knowledge-LoRA settings, beside a LoRA on the passage alone (same seeds); then
compares, paired on the same held-out questions, with round 0's self-edits (written by and trained on the
base model). Used for docs/restem.md.

    .venv/bin/python scripts/restem_control.py WORKSPACE RUN ROUND OUT_WORKSPACE

Prints contains / EM / F1 with 95% passage-bootstrap intervals (a finished control run in OUT_WORKSPACE
is reused). Takes about as long as one round's held-out evaluation and a bit more (20 passages, K=2,
3 epochs: about 20 min on 2 cores).
"""

import json
import sys
from dataclasses import replace
from pathlib import Path

import sqlite_utils

from sealq.analysis.stats import cluster_bootstrap, format_interval, paired_difference
from sealq.analysis.summary import column, scores_by_passage
from sealq.engine.config import LoopConfig
from sealq.engine.loop import run_loop
from sealq.metrics import METRICS
from sealq.store import find_run, open_db
from sealq.vocab import Row, RunStatus, Source, Split


def main(ws: str, run: str, round_: int, out: str) -> None:
    src = open_db(path=Path(ws) / "runs.db")  # migrated to today's vocabulary
    run_id = find_run(src, run)
    rows = list(src.query(
        """select p.title, p.context, s.text from self_edits s join passages p on p.id = s.passage_id
           where p.run_id = ? and p.round = ? and p.split = ? and s.source = ?
           order by p.idx, s.seed_idx, s.sample_idx""", [run_id, round_, Split.HOLDOUT.value, Source.SELF_EDIT.value]))
    by_passage: dict = {}
    for r in rows:
        by_passage.setdefault((r["title"], r["context"]), []).append(r["text"])
    k = len(next(iter(by_passage.values())))
    Path(out).mkdir(parents=True, exist_ok=True)
    teacher = Path(out) / f"round{round_}_selfedits.json"
    teacher.write_text(json.dumps([{"title": t, "context": c, "completions": v} for (t, c), v in by_passage.items()]))
    cfg = json.loads(src["runs"].get(run_id)["config_json"])
    cfg.update({"rounds": 0, "holdout_fraction": None, "holdout_passages": None, "holdout": None,
                "teacher": str(teacher), "seeds": k, "passages": len(by_passage), "passage_only": True})
    config = LoopConfig.from_dict(cfg)
    # the teacher condition only: the given texts, no new samples (k=0 is allowed with teacher steps)
    config = replace(config, selfedit=replace(config.selfedit, k=0))
    done = Path(out) / "runs.db"
    if done.exists() and sqlite_utils.Database(str(done)).execute("select count(*) from runs where status = ?", [RunStatus.DONE.value]).fetchone()[0]:
        print(f"{out} already has a finished control run: reusing it")
    else:
        run_loop(config, workspace=out, command="eval")

    ctl = sqlite_utils.Database(str(Path(out) / "runs.db"))
    ctl_id = next(ctl.query("select id from runs order by id desc limit 1"))["id"]
    keys = [(r["title"], r["context"]) for r in ctl.query("select * from passages where run_id = ? order by idx", [ctl_id])]
    src_keys = [(r["title"], r["context"]) for r in src.query(
        "select * from passages where run_id = ? and round = 0 and split = ? order by idx", [run_id, Split.HOLDOUT.value])]
    order = [keys.index(key) for key in src_keys]  # control passages in the run's held-out order
    c = scores_by_passage(ctl, ctl_id)
    s0 = scores_by_passage(src, run_id, round=0, split=Split.HOLDOUT)
    sr = scores_by_passage(src, run_id, round=round_, split=Split.HOLDOUT)

    def col(s, row, m, reorder=False):
        return column([s[row][j] for j in order] if reorder else s[row], m)

    for m in METRICS:
        mine, base = col(c, Row.TEACHER, m, True), col(c, Row.NO_CONTEXT, m, True)
        print(f"{m}: round-{round_} self-edits on the base model {format_interval(cluster_bootstrap(mine).as_dict())}, "
              f"gain {format_interval(paired_difference(mine, base).as_dict(), True)}; minus round-0 self-edits "
              f"{format_interval(paired_difference(mine, col(s0, Row.MEAN_SELF_EDIT, m)).as_dict(), True)}; "
              f"on the round-{round_} model minus on the base "
              f"{format_interval(paired_difference(col(sr, Row.MEAN_SELF_EDIT, m), mine).as_dict(), True)}; "
              f"base no-passage minus round 0's {format_interval(paired_difference(base, col(s0, Row.NO_CONTEXT, m)).as_dict(), True)}")
        passage = col(c, Row.PASSAGE_ONLY, m, True)
        print(f"    LoRA on the passage alone {format_interval(cluster_bootstrap(passage).as_dict())}; round-{round_} "
              f"self-edits minus it {format_interval(paired_difference(mine, passage).as_dict(), True)}; round-0 "
              f"self-edits minus it {format_interval(paired_difference(col(s0, Row.MEAN_SELF_EDIT, m), passage).as_dict(), True)}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
