"""The generated parts of README.md and docs/*.md: cog blocks in those files import these functions.

Regenerate every block with ``make docs`` (``cog -I scripts -r ...``); ``make docs-check`` (``cog -I scripts
--check ...``) fails when a block is out of date, so the CLI reference, the runs.db schema and the
performance tables cannot drift from the code and from ``bench/results/*.jsonl``.

* :func:`cli_reference`, :func:`cli_summary`: ``sealq --help`` and every (sub)command's ``--help``, through
  click's ``CliRunner`` (no shell) at a fixed width of :data:`WIDTH` columns.
* :func:`schema_overview`, :func:`schema_table`, :func:`schema_check`: the tables, columns, types and indexes
  of a freshly migrated ``runs.db`` (``sealq.store.open_db(path=":memory:")``), and a check that the
  hand-written meaning tables of docs/schema.md name exactly those columns.
* :func:`perf_table`: figures from ``bench/results/*.jsonl``, grouped by the machine each line records.
* :func:`make_checks`: the Makefile's test and check targets and what they run.
* :func:`check_links`: every relative link of README.md and docs/ leads to a file and heading that exist,
  and docs/index.md lists every document.

Output is deterministic: sorted, no timestamps but the ones recorded in the jsonl lines.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `import sealq` from the checkout, also when cog runs from elsewhere
    sys.path.insert(0, str(ROOT))

#: the terminal width every ``--help`` is rendered at
WIDTH = 100

__all__ = ["WIDTH", "cli_reference", "cli_summary", "schema_overview", "schema_table", "schema_check",
           "perf_lines", "machine_of", "perf_table", "make_checks", "check_links"]


# --- the CLI ---------------------------------------------------------------------------------------------


def _commands(group, path=()):
    """(path, command) for ``group`` and every command below it, depth first, sorted by name."""
    import click

    yield path, group
    if isinstance(group, click.Group):
        ctx = click.Context(group, info_name="sealq")
        for name in sorted(group.list_commands(ctx)):
            yield from _commands(group.get_command(ctx, name), (*path, name))


def _help(path: tuple[str, ...]) -> str:
    from click.testing import CliRunner

    from sealq.cli import cli

    env = {"COLUMNS": str(WIDTH), "LINES": "50", "NO_COLOR": "1", "TERM": "dumb", "SEALQ_HOME": None}
    result = CliRunner(env=env).invoke(cli, [*path, "--help"], prog_name="sealq", terminal_width=WIDTH,
                                       max_content_width=WIDTH)
    if result.exit_code != 0:
        raise RuntimeError(f"sealq {' '.join(path)} --help exited {result.exit_code}: {result.output}")
    return "\n".join(line.rstrip() for line in result.output.rstrip().splitlines())


def cli_reference() -> str:
    """Markdown: one section per command (``sealq``, then each command in name order) with its ``--help``."""
    from sealq.cli import cli

    out = []
    for path, _ in _commands(cli):
        name = " ".join(("sealq", *path))
        out.append(f"### `{name}`\n\n```text\n{_help(path)}\n```\n")
    return "\n".join(out)


def cli_summary() -> str:
    """Markdown table: one line per command, its first help sentence, linked to its section of docs/cli.md."""
    import click

    from sealq.cli import cli

    rows = ["| command | what it does |", "|---|---|"]
    for path, cmd in _commands(cli):
        if not path or isinstance(cmd, click.Group):
            continue
        name = " ".join(("sealq", *path))
        what = cmd.get_short_help_str(limit=200).replace("|", "\\|")
        rows.append(f"| [`{name}`](docs/cli.md#{_slug(name)}) | {what} |")
    return "\n".join(rows) + "\n"


# --- runs.db ---------------------------------------------------------------------------------------------


def _db():
    from sealq.store import open_db

    return open_db(path=":memory:")


def _documented_tables(db) -> list[str]:
    """The tables of runs.db that sealq writes, in the order the migrations create them (sqlite-utils' own
    ``_sqlite_migrations`` left out)."""
    return [t for t in db.table_names() if not t.startswith("_")]


def _index_text(index) -> str:
    return f"{'unique ' if index.unique else ''}({', '.join(index.columns)})"


def schema_overview() -> str:
    """Markdown table: every table of a freshly migrated runs.db, its column count and its indexes."""
    db = _db()
    rows = ["| table | columns | indexes (besides the primary key) |", "|---|---|---|"]
    for t in _documented_tables(db):
        table = db[t]
        indexes = sorted(_index_text(i) for i in table.indexes if i.origin == "c")
        rows.append(f"| [`{t}`](#{t}) | {len(table.columns)} | {', '.join(indexes) or '–'} |")
    migrations = [row[0] for row in db.execute(
        "select name from _sqlite_migrations where migration_set = 'sealq' order by id").fetchall()]
    applied = ", ".join(f"`{m}`" for m in migrations)
    return "\n".join(rows) + f"\n\nMigrations applied to a new file, in order: {applied}.\n"


def schema_table(name: str) -> str:
    """Markdown table: the columns of table ``name`` in a freshly migrated runs.db, in column order."""
    db = _db()
    if name not in db.table_names():
        raise KeyError(f"runs.db has no table {name!r} (tables: {', '.join(_documented_tables(db))})")
    table = db[name]
    fks = {fk.column: f"{fk.other_table}.{fk.other_column}" for fk in table.foreign_keys}
    pks = table.pks if table.use_rowid is False else []
    rows = ["| column | type | constraints |", "|---|---|---|"]
    for c in table.columns:
        notes = []
        if c.name in pks:
            notes.append("primary key" if len(pks) == 1 else "part of the primary key")
        if c.name in fks:
            notes.append(f"→ `{fks[c.name]}`")
        if c.notnull and c.name not in pks:
            notes.append("not null")
        if c.default_value is not None:
            notes.append(f"default {c.default_value}")
        rows.append(f"| `{c.name}` | {c.type or '–'} | {', '.join(notes) or '–'} |")
    return "\n".join(rows) + "\n"


_COG_TABLE = re.compile(r"schema_table\(\s*[\"'](\w+)[\"']\s*\)")


def _hand_written_columns(text: str) -> dict[str, set[str]]:
    """{table: columns} named in the first cell of the hand-written Markdown tables of docs/schema.md.

    A row belongs to the table of the ``schema_table("...")`` block above it; a cell may name several
    columns (``started_utc, finished_utc``) and ``table.column`` names another table's column (the names
    after it in the same cell inherit that table). Generated blocks are skipped."""
    named: dict[str, set[str]] = {}
    current, generated = None, False
    for line in text.splitlines():
        m = _COG_TABLE.search(line)
        if m:
            current = m.group(1)
        if "]]]" in line and "[[[end]]]" not in line:
            generated = True
            continue
        if "[[[end]]]" in line:
            generated = False
            continue
        if generated or current is None or not line.startswith("|"):
            continue
        cell = line.strip("|").split("|")[0].strip()
        if not cell or set(cell) <= set("-: ") or cell in ("column", "table.column"):
            continue
        table = current
        for part in cell.split(","):
            word = part.strip().strip("`").strip()
            if not re.fullmatch(r"[\w.]+", word):
                raise ValueError(f"docs/schema.md: cannot read the column name {part.strip()!r} in row {line!r}")
            if "." in word:
                table, word = word.split(".", 1)
            named.setdefault(table, set()).add(word)
    return named


def schema_check(path: str | os.PathLike) -> str:
    """Raise when the hand-written meaning tables of ``path`` (docs/schema.md) do not name exactly the
    columns of a freshly migrated runs.db; else one Markdown line saying so."""
    db = _db()
    named = _hand_written_columns(Path(path).read_text(encoding="utf-8"))
    problems = []
    for t in _documented_tables(db):
        actual = {c.name for c in db[t].columns}
        have = named.pop(t, set())
        if actual - have:
            problems.append(f"{t}: no meaning written for {', '.join(sorted(actual - have))}")
        if have - actual:
            problems.append(f"{t}: meanings for columns runs.db does not have: {', '.join(sorted(have - actual))}")
    for t in sorted(named):
        problems.append(f"meanings for a table runs.db does not have: {t}")
    if problems:
        raise ValueError(f"{path}: the hand-written column meanings do not match runs.db:\n  " + "\n  ".join(problems))
    n = sum(len(db[t].columns) for t in _documented_tables(db))
    return (f"Checked when the docs are generated: the meaning tables above name exactly the {n} columns of the "
            f"{len(_documented_tables(db))} tables.\n")


# --- performance -----------------------------------------------------------------------------------------

RESULTS = ROOT / "bench" / "results"

#: the instruction-set flags that name a machine's kind, in the order they are printed
_FLAG_LABELS = (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_bf16", "AVX512-BF16"), ("amx_tile", "AMX"))


def perf_lines() -> list[dict]:
    """Every line of ``bench/results/*.jsonl`` (files in name order, lines in file order), with ``_source``
    (``file:line``) and ``_order`` (file name, line number) added."""
    lines = []
    for f in sorted(RESULTS.glob("*.jsonl")):
        for n, raw in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if raw.strip():
                row = json.loads(raw)
                row["_source"], row["_order"] = f"{f.name}:{n}", (f.name, n)
                lines.append(row)
    return lines


def machine_of(line: dict) -> str:
    """The machine a jsonl line was measured on, as it records it: CPU model, flags, cores."""
    flags = set(line.get("cpu_flags") or ())
    have = [label for flag, label in _FLAG_LABELS if flag in flags]
    missing = [label for flag, label in _FLAG_LABELS[2:] if flag not in flags]
    kind = ", ".join(have) + (f"; no {' or '.join(missing)}" if missing and "AVX-512" in have else "")
    return f"{line.get('cpu', '?')} ({kind or 'flags not recorded'}), {line.get('cores', '?')} cores"


def _value(line: dict) -> str:
    unit = line.get("unit", "")
    return f"{line['value']}{'x' if unit == 'x' else ' ' + unit}".strip()


_BASE_FIELDS = {"bench", "figure", "value", "unit", "utc", "cpu", "cpu_flags", "cores", "versions"}


def _details(line: dict) -> str:
    """The line's other recorded fields, ``name value`` in recorded order; a dict of numbers is spelled out
    one level deep, deeper structures are left to the jsonl line itself."""
    parts = []
    for key, v in line.items():
        if key in _BASE_FIELDS or key.startswith("_"):
            continue
        if isinstance(v, dict):
            if all(isinstance(x, (int, float, str)) for x in v.values()):
                parts.append(f"{key}: " + ", ".join(f"{k} {x}" for k, x in v.items()))
        elif isinstance(v, list):
            parts.append(f"{key} {', '.join(str(x) for x in v)}")
        else:
            parts.append(f"{key} {v}")
    return "; ".join(parts).replace("|", "\\|") or "–"


def perf_table(select: list[tuple[str, str]] | None = None, details: bool = False) -> str:
    """Markdown: the chosen jsonl lines in one table per machine (a header line names it and the
    versions), one row per line: date (UTC), figure, value, source line (and, with ``details``, the
    line's other fields).

    Args:
        select: ``(bench, figure)`` pairs, each shown by its latest line and in this order; None: every
            line, sorted by bench, then time.
        details: add a column with every other field the line records.
    """
    lines = perf_lines()
    if select is None:
        chosen = sorted(lines, key=lambda r: (r["bench"], r["utc"], r["_order"]))
    else:
        chosen = []
        for bench, figure in select:
            match = [r for r in lines if r["bench"] == bench and r["figure"] == figure]
            if not match:
                raise KeyError(f"bench/results has no line for {bench!r} / {figure!r}")
            chosen.append(max(match, key=lambda r: (r["utc"], r["_order"])))
    groups: dict[str, list[dict]] = {}
    for r in chosen:
        groups.setdefault(machine_of(r), []).append(r)
    out = []
    for machine in sorted(groups):
        rows = groups[machine]
        versions = sorted({(r["versions"].get("torch", "?"), r["versions"].get("llama-cpp-python", "?")) for r in rows})
        vtext = "; ".join(f"torch {t}, llama-cpp-python {lc}" for t, lc in versions)
        out.append(f"Measured on **{machine}** ({vtext}):\n")
        out.append("| date (UTC) | figure | value | line |" + (" recorded with it |" if details else ""))
        out.append("|---|---|---|---|" + ("---|" if details else ""))
        for r in rows:
            extra = f" {_details(r)} |" if details else ""
            out.append(f"| {r['utc'][:10]} | {r['figure']} | {_value(r)} | `{r['_source']}` |{extra}")
        out.append("")
    return "\n".join(out)


# --- the Makefile ----------------------------------------------------------------------------------------

#: Makefile targets that check the code, besides every ``test*`` target
_CHECK_TARGETS = ("lint", "typecheck", "docs-check")


def make_checks(makefile: str | os.PathLike = ROOT / "Makefile") -> str:
    """Markdown table: the Makefile's test and check targets, in Makefile order, with the commands they run
    (``$(BIN)/`` spelled ``.venv/bin/``)."""
    lines = Path(makefile).read_text(encoding="utf-8").splitlines()
    variables = {m.group(1): m.group(2).strip() for m in
                 (re.match(r"^(PYTEST|TEST_WORKERS|DOCS)\s*:?=\s*(.*)$", line) for line in lines) if m}
    variables["TEST_WORKERS"] = "<usable cores>"  # a $(shell ...) evaluated when the target runs

    def expand(cmd: str) -> str:
        for _ in range(3):  # PYTEST names TEST_WORKERS
            cmd = re.sub(r"\$\((PYTEST|TEST_WORKERS|DOCS)\)", lambda m: variables.get(m.group(1), m.group(0)), cmd)
        return cmd

    rows = ["| target | runs |", "|---|---|"]
    for i, line in enumerate(lines):
        m = re.match(r"^([A-Za-z][\w-]*)\s*:(?!=)", line)
        if not m or not (m.group(1).startswith("test") or m.group(1) in _CHECK_TARGETS):
            continue
        recipe = []
        for body in lines[i + 1:]:
            if not body.startswith("\t"):
                break
            cmd = body.strip().lstrip("@")
            if cmd and not cmd.startswith("#"):
                recipe.append(f"`{expand(cmd).replace('$(BIN)/', '.venv/bin/')}`")
        rows.append(f"| `make {m.group(1)}` | {'; '.join(recipe) or '–'} |")
    return "\n".join(rows) + "\n"


# --- links -----------------------------------------------------------------------------------------------

_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation but ``-`` and ``_`` dropped, spaces
    to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(text: str) -> set[str]:
    anchors, seen, fenced = set(), {}, False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        m = None if fenced else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = _slug(m.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _doc_files() -> list[Path]:
    return [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))


def check_links(index: str | os.PathLike = "docs/index.md") -> str:
    """Raise when a relative link of README.md or docs/**/*.md points to a file or heading that does not
    exist, or when a document under docs/ is not linked from ``index``; else one Markdown line saying so."""
    problems, count = [], 0
    texts = {p: p.read_text(encoding="utf-8") for p in _doc_files()}
    for path, text in texts.items():
        fenced = False
        for n, line in enumerate(text.splitlines(), 1):
            if _FENCE.match(line):
                fenced = not fenced
            if fenced:
                continue
            for target in _LINK.findall(line):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                    continue
                count += 1
                file_part, _, anchor = target.partition("#")
                dest = (path.parent / file_part).resolve() if file_part else path
                where = f"{path.relative_to(ROOT)}:{n}"
                if not dest.exists():
                    problems.append(f"{where}: {target}: no such file")
                elif anchor and dest.suffix == ".md" and anchor not in _anchors(
                        texts.get(dest) or dest.read_text(encoding="utf-8")):
                    problems.append(f"{where}: {target}: no such heading")
    index_path = (ROOT / index).resolve()
    listed = {(index_path.parent / t.partition("#")[0]).resolve() for t in _LINK.findall(texts[index_path])}
    for p in texts:
        if p != index_path and p.is_relative_to(ROOT / "docs") and p not in listed:
            problems.append(f"{p.relative_to(ROOT)} is not listed in {index}")
    if problems:
        raise ValueError("links in the docs:\n  " + "\n  ".join(problems))
    # the count is not printed: adding a link must not make the generated text stale
    assert count > 0, "no links found: the link pattern is broken"
    return ("Checked when the docs are generated: every document under docs/ is listed here, and every "
            "relative link of README.md and docs/ leads to a file and heading that exist.\n")
