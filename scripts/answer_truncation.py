"""The answering sweep, the length lever: would capping the answer's length raise EM?

Reads the answers of one finished ``sealq eval`` run (nothing is decoded) and grades each answer again
cut to its first N words (what a grammar or a token cap holding the answer to N words keeps, at best) and
to its first clause (up to the first ``, . ; :`` or line break); prints contains / EM / F1 per cut with 95%
passage-bootstrap intervals, and where in the answer the gold span starts (word index, after SQuAD's
normalization) when the whole answer contains it. Used for docs/notes/2026-12-02-what-self-edit-recipe-teaches-best.md section 1.

    .venv/bin/python scripts/answer_truncation.py WORKSPACE [RUN] [--row with_context ...]

RUN: a run id or prefix (default: the latest run). Rows: ``sealq eval``'s conditions (default: the ceiling).
"""

import argparse
import json
import re
import statistics
from pathlib import Path

from sealq.analysis.stats import cluster_bootstrap, format_interval
from sealq.metrics import METRICS, normalize, score
from sealq.store import find_run, open_db
from sealq.vocab import Condition

WORDS = (1, 2, 3, 5, 8)


def _first_words(n: int):
    """A cut that keeps an answer's first ``n`` words."""
    return lambda a: " ".join(a.split()[:n])


CUTS = {"whole answer": lambda a: a,
        **{f"first {n} words": _first_words(n) for n in WORDS},
        "first clause": lambda a: re.split(r"[,.;:\n]", a, maxsplit=1)[0]}


def _answers(db, run_id: str, condition: str) -> list[list[tuple[str, list[str]]]]:
    """(prediction, gold answers) per question, grouped by passage in passage order."""
    groups: dict[int, list] = {}
    for r in db.query("""select q.passage_id, a.prediction, q.answers_json from answers a
                         join questions q on q.id = a.question_id join passages p on p.id = q.passage_id
                         where a.run_id = ? and a.condition = ? order by p.idx, q.idx, a.id""", [run_id, condition]):
        groups.setdefault(r["passage_id"], []).append((r["prediction"], json.loads(r["answers_json"])))
    return list(groups.values())


def _span_start(prediction: str, golds: list[str]) -> int | None:
    """Word index in the normalized prediction where the first gold answer it contains starts (None: none)."""
    words = normalize(prediction).split()
    for gold in golds:
        g = normalize(gold).split()
        for i in range(len(words) - len(g) + 1) if g else ():
            if words[i:i + len(g)] == g:
                return i
    return None


def report(groups, condition: str) -> None:
    print(f"{condition}: {sum(map(len, groups))} answers, {len(groups)} passages")
    for name, cut in CUTS.items():
        graded = [[score(cut(p), g) for p, g in passage] for passage in groups]
        cells = [format_interval(cluster_bootstrap([[getattr(s, m) for s in ps] for ps in graded]).as_dict())
                 for m in METRICS]
        print(f"  {name:14s} " + "  ".join(f"{m} {c}" for m, c in zip(METRICS, cells)))
    starts = [s for passage in groups for p, g in passage if (s := _span_start(p, g)) is not None]
    lengths = [len(normalize(p).split()) for passage in groups for p, _ in passage]
    if starts:
        print(f"  gold span as whole words in {len(starts)} answers: starts at word {statistics.median(starts):g} "
              f"(median; {sum(s == 0 for s in starts)} at word 0); answers are {statistics.median(lengths):g} "
              f"words long (median)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("workspace", type=Path)
    ap.add_argument("run", nargs="?", default="latest")
    ap.add_argument("--row", action="append", choices=[c.value for c in Condition])
    a = ap.parse_args()
    db = open_db(path=a.workspace / "runs.db")
    run_id = find_run(db, a.run)
    for condition in a.row or [Condition.WITH_CONTEXT.value]:
        report(_answers(db, run_id, condition), condition)


if __name__ == "__main__":
    main()
