"""The self-edit recipe sweep's item-handling and sequence-length rows, measured on the self-edits a run recorded.

For each edit type of one ``sealq eval`` / ``sealq loop`` run (model-written self-edits only), splits every
recorded self-edit again with :func:`sealq.engine.selfedit.split_items` and prints what each step of the
item handling does to it: non-empty lines, items after dropping repeats and items under 3 words, how many
self-edits the cap (``SelfEditConfig.max_items``, 12) cuts, and what ``--min-grounding`` would leave at a few
thresholds (items, and self-edits left empty, which the loop skips). Then the length in tokens of every
training text (:func:`sealq.engine.selfedit.training_texts`: title + item, title + passage) against
``TrainConfig.max_seq_tokens``, beyond which training cuts a text. Nothing is trained or decoded except the
tokenizer. Used for docs/notes/2026-12-02-what-self-edit-recipe-teaches-best.md section 2.

    .venv/bin/python scripts/training_inputs.py WORKSPACE [RUN] [--grounding 0.5 --grounding 0.7]
"""

import argparse
import json
import statistics
from pathlib import Path

from sealq.engine.config import LoopConfig
from sealq.engine.dataset import Passage
from sealq.engine.selfedit import split_items, training_texts
from sealq.models.llama import LlamaRunner
from sealq.models.registry import resolve_model
from sealq.store import find_run, open_db
from sealq.vocab import Source


def _self_edits(db, run_id: str) -> dict[str, list[dict]]:
    """Model-written self-edits of the run with their passage, by edit type."""
    by_type: dict[str, list[dict]] = {}
    for r in db.query("""select s.edit_type, s.text, p.title, p.context from self_edits s
                         join passages p on p.id = s.passage_id where s.run_id = ? and s.source = ?
                         order by s.id""", [run_id, Source.SELF_EDIT.value]):
        by_type.setdefault(r["edit_type"], []).append(r)
    return by_type


def items_report(edit_type: str, edits: list[dict], cap: int, thresholds: list[float]) -> list[list[str]]:
    """Prints what each step of the item handling leaves; returns the items training uses, per self-edit."""
    n = len(edits)
    lines = sum(len([x for x in e["text"].splitlines() if x.strip()]) for e in edits)
    uncapped = [split_items(e["text"], edit_type, 10**9, e["context"]) for e in edits]
    capped = [x[:cap] for x in uncapped]
    print(f"{edit_type}: {n} self-edits; {lines / n:.1f} non-empty lines, {sum(map(len, uncapped)) / n:.1f} items "
          f"after repeats and short items are dropped, {sum(map(len, capped)) / n:.1f} after the cap of {cap} "
          f"({sum(len(x) > cap for x in uncapped)} self-edits cut by it, {sum(not x for x in capped)} empty)")
    for t in thresholds:
        kept = [split_items(e["text"], edit_type, cap, e["context"], t) for e in edits]
        print(f"  --min-grounding {t:g}: {sum(map(len, kept)) / n:.1f} items, {sum(not x for x in kept)} of {n} "
              f"self-edits empty")
    return capped


def length_report(runner: LlamaRunner, edits: list[dict], items: list[list[str]], limit: int) -> None:
    texts = [t for e, its in zip(edits, items)
             for t in training_texts(Passage(title=e["title"], context=e["context"], questions=[]), its)]
    lengths = [len(runner.tokenize(t)) for t in texts]
    print(f"  training texts: {len(lengths)}, {statistics.median(lengths):g} tokens (median), {max(lengths)} at most; "
          f"{sum(x > limit for x in lengths)} longer than max_seq_tokens {limit} (cut)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("workspace", type=Path)
    ap.add_argument("run", nargs="?", default="latest")
    ap.add_argument("--grounding", type=float, action="append")
    a = ap.parse_args()
    db = open_db(path=a.workspace / "runs.db")
    run_id = find_run(db, a.run)
    config = LoopConfig.from_dict(json.loads(db["runs"].get(run_id)["config_json"]))
    cap, limit = config.selfedit.max_items, config.train.max_seq_tokens
    runner = LlamaRunner(resolve_model(config.model), n_ctx=512, seed=0, threads=1)
    for edit_type, edits in _self_edits(db, run_id).items():
        items = items_report(edit_type, edits, cap, a.grounding or [0.5, 0.7])
        length_report(runner, edits, items, limit)


if __name__ == "__main__":
    main()
