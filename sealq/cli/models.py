"""``sealq models``: the base models sealq can find, the architectures it supports, and GGUF files nearby."""

from __future__ import annotations

import json
from pathlib import Path

import click

from sealq.cli.main import cli
from sealq.models.arch import ARCHITECTURES
from sealq.models.registry import DEFAULT_MODEL, KNOWN_MODELS


def _found(folders: list[Path]) -> list[dict]:
    """Every ``*.gguf`` directly in ``folders``: its type (model/adapter), architecture, and whether
    :func:`sealq.models.registry.resolve_model` accepts it as ``--model`` (metadata only: no weights loaded)."""
    from sealq.errors import SealqError
    from sealq.models.registry import gguf_kind_and_architecture, resolve_model

    rows = []
    for path in sorted({p.resolve() for folder in folders for p in folder.glob("*.gguf") if p.is_file()}):
        try:
            kind, arch = gguf_kind_and_architecture(path)
        except SealqError:
            kind, arch = "?", "?"
        try:
            resolve_model(str(path))
            usable, why = True, ""
        except SealqError as e:
            usable, why = False, str(e).split(": ", 1)[-1]
        rows.append({"path": str(path), "type": kind, "architecture": arch, "usable": usable, "why_not": why})
    return rows


@cli.command()
@click.option("--dir", "folders", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Also list the GGUF files in this folder (repeatable; default: the current directory).")
@click.option("--json", "as_json", is_flag=True, help="Output JSON: {known, architectures, found}.")
def models(folders, as_json):
    """List known base models, the supported architectures, and the GGUF files found (usable with --model)."""
    known = []
    for m in KNOWN_MODELS.values():
        path = m.path()
        known.append({"name": m.name, "default": m.name == DEFAULT_MODEL, "installed": path is not None,
                      "path": str(path) if path else None, "description": m.description})
    archs = [{"architecture": a.name, "families": a.families, "qk_rows_permuted": a.permute_qk,
              "norm_offset": a.norm_offset} for a in ARCHITECTURES.values()]
    found = _found(list(folders) or [Path.cwd()])
    if as_json:
        click.echo(json.dumps({"known": known, "architectures": archs, "found": found}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="known models")
    for column in ("name", "installed", "description", "path"):
        table.add_column(column, overflow="fold")  # folded, never cut short: a path is what --model takes
    for r in known:
        table.add_row(r["name"] + (" (default)" if r["default"] else ""), "yes" if r["installed"] else "no",
                      r["description"], r["path"] or "-")
    console.print(table)
    table = Table("architecture", "model families", title="any GGUF of these architectures works: --model PATH.gguf")
    for a in archs:
        table.add_row(a["architecture"], a["families"])
    console.print(table)
    if found:
        table = Table(title="GGUF files found")
        table.add_column("path", overflow="fold")
        for column in ("type", "architecture", "usable"):
            table.add_column(column)
        for f in found:
            table.add_row(f["path"], f["type"], f["architecture"], "yes" if f["usable"] else f"no: {f['why_not']}")
        console.print(table)
