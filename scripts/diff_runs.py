"""Compare the recorded work of two workspaces' runs.db, table by table (sealq.analysis.snapshot):
self-edit texts, directives, rewards, answers, best picks, adapters (file hashes), policies.

    .venv/bin/python scripts/diff_runs.py WORKSPACE_A WORKSPACE_B

Each database is copied and the copy opened with sealq's migrations, so a runs.db written by an older
sealq compares with a new one in today's vocabulary, and neither input is changed. Prints one line per
table (rows, same or how many differ, with the first differing rows) and exits 1 if any table differs.
Used to check that a refactoring changed no result (docs/architecture.md).
"""

import shutil
import sys
import tempfile
from pathlib import Path

from sealq.analysis.snapshot import TABLES, snapshot
from sealq.store import DB_NAME, open_db


def load(ws: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        for f in ws.glob(DB_NAME + "*"):  # the database and its write-ahead log
            shutil.copy(f, Path(tmp) / f.name)
        return snapshot(open_db(path=Path(tmp) / DB_NAME))


def main(a: str, b: str) -> int:
    sa, sb = load(Path(a).resolve()), load(Path(b).resolve())
    differ = 0
    for t in TABLES:
        only_a = [r for r in sa[t] if r not in sb[t]]
        only_b = [r for r in sb[t] if r not in sa[t]]
        if not only_a and not only_b and len(sa[t]) == len(sb[t]):
            print(f"{t}: {len(sa[t])} rows, same")
            continue
        differ += 1
        print(f"{t}: {len(sa[t])} vs {len(sb[t])} rows, {len(only_a)} only in A, {len(only_b)} only in B")
        for r in only_a[:2]:
            print(f"  A: {str(r)[:300]}")
        for r in only_b[:2]:
            print(f"  B: {str(r)[:300]}")
    print("same" if not differ else f"{differ} tables differ")
    return 1 if differ else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
