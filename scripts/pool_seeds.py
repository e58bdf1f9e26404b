"""Pool ``sealq eval`` runs of the same settings and passages that differ only in ``--seed``: the table
``--seeds N`` would have given, without rerunning the seeds already done.

    .venv/bin/python scripts/pool_seeds.py WORKSPACE[:RUN] WORKSPACE[:RUN] ... [--json]

RUN: a run id or prefix (default: the workspace's latest run). The runs' stored settings must be equal but for
the seed (read as ``--resume`` reads them: a setting added since a run was recorded counts at its default),
the seeds distinct and the model file the same; passages are matched by title and text, questions by their
order in the passage, and every run must hold the same ones (exit 2 otherwise). Each question's grade in a row
is the mean over the runs, as ``sealq eval --seeds N`` averages a question over seeds (``mean_self_edit`` over
all K x seeds self-edits when every run has the same K; ``best_of_k`` over each seed's pick; the passage-only
and teacher LoRAs over seeds); rows missing from a run are left out. Prints ``sealq eval``'s table
(:func:`sealq.analysis.tables.comparison_table`: every row and SEAL's paired differences with 95%
passage-bootstrap intervals), as ``sealq eval`` prints it; ``--json`` as ``sealq eval --json`` with ``runs``.
Used for docs/notes/2026-12-02-what-self-edit-recipe-teaches-best.md (the default protocol with two seeds).
"""

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from sealq.analysis.summary import scores_by_passage
from sealq.analysis.tables import comparison_table
from sealq.cli.loop import print_eval
from sealq.engine.config import LoopConfig
from sealq.errors import SealqError
from sealq.metrics import Score
from sealq.store import DB_NAME, find_run, open_db


@dataclass(frozen=True)
class RecordedRun:
    """One run as read for pooling: its ``runs`` row, its passages' keys (``Passage.key``: title and text)
    and question counts in passage order, and :func:`~sealq.analysis.summary.scores_by_passage` of it."""

    run_id: str
    record: dict
    keys: list[str]
    n_questions: list[int]
    scores: dict


def _load(spec: str) -> RecordedRun:
    """The run named by ``WORKSPACE[:RUN]``.

    Raises:
        SealqError: no runs.db in the folder, or no such run.
    """
    ws, _, run = spec.partition(":")
    if not (Path(ws) / DB_NAME).is_file():
        raise SealqError(f"{ws}: no {DB_NAME} here")
    db = open_db(ws)
    run_id = find_run(db, run or "latest")
    record = db["runs"].get(run_id)
    passages = list(db.query("select key, n_questions from passages where run_id = ? order by round, split, idx",
                             [run_id]))  # the order scores_by_passage reads them in
    return RecordedRun(run_id, record, [p["key"] for p in passages], [p["n_questions"] for p in passages],
                       scores_by_passage(db, run_id))


def _check_settings(records: list[dict]) -> None:
    """Raises ValueError unless the runs differ only in their seed (stored config, model file)."""
    def settings(r):  # read as --resume reads it, so a field added since the run counts at its default
        # thread counts are left out (set equal): they change float sums, not what the runs measure
        stored = LoopConfig.from_dict(json.loads(r["config_json"])).with_threads(1).to_dict()
        return {k: v for k, v in stored.items() if k != "seed"}, r["model_sha256"]
    first = settings(records[0])
    for r in records[1:]:
        if settings(r) != first:
            raise ValueError(f"run {r['id']} differs from run {records[0]['id']} in more than its seed")
    if len({r["seed"] for r in records}) < len(records):
        raise ValueError("two runs have the same seed")


def pool(runs: list[RecordedRun]) -> dict:
    """Per-question mean of every row present in all runs, passages in the first run's order.

    Returns:
        :class:`~sealq.vocab.Row` -> one list per passage of a :class:`~sealq.metrics.Score` per question.

    Raises:
        ValueError: the runs do not hold the same passages and questions.
    """
    first = runs[0]
    order = []  # per run: where each of the first run's passages sits in it
    for run in runs:
        if sorted(run.keys) != sorted(first.keys):
            raise ValueError(f"run {run.run_id} holds other passages than run {first.run_id}")
        at = {k: i for i, k in enumerate(run.keys)}
        if [run.n_questions[at[k]] for k in first.keys] != first.n_questions:
            raise ValueError(f"run {run.run_id} holds other questions than run {first.run_id}")
        order.append([at[k] for k in first.keys])
    shared = [row for row in first.scores if all(row in run.scores for run in runs)]
    return {row: [[Score.mean(q) for q in zip(*(run.scores[row][o[i]] for run, o in zip(runs, order)))]
                  for i in range(len(first.keys))] for row in shared}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", metavar="WORKSPACE[:RUN]")
    ap.add_argument("--json", action="store_true", help="print the table as JSON (sealq eval --json's fields)")
    args = ap.parse_args()
    try:
        loaded = [_load(s) for s in args.runs]
        _check_settings([r.record for r in loaded])
        table = comparison_table(pool(loaded))
    except (ValueError, SealqError) as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    ids = [r.run_id for r in loaded]
    if args.json:
        print(json.dumps({"runs": ids, **table}, indent=2))
        return 0
    config = json.loads(loaded[0].record["config_json"])
    config["seeds"] *= len(loaded)  # the pooled table's title counts every run's seeds
    print_eval(table, ", ".join(ids), Console(width=max(Console().width, 150)), config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
