"""``sealq models``: the base models sealq can find without a path."""

from __future__ import annotations

import json

import click

from sealq.cli.main import cli
from sealq.models.registry import DEFAULT_MODEL, KNOWN_MODELS


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
def models(as_json):
    """List known base models and whether their GGUF file is installed."""
    rows = []
    for m in KNOWN_MODELS.values():
        path = m.path()
        rows.append({"name": m.name, "default": m.name == DEFAULT_MODEL, "installed": path is not None,
                     "path": str(path) if path else None, "description": m.description})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "installed", "description", "path")
    for r in rows:
        table.add_row(r["name"] + (" (default)" if r["default"] else ""), "yes" if r["installed"] else "no",
                      r["description"], r["path"] or "-")
    Console().print(table)
    click.echo("Any llama-architecture GGUF file also works: --model PATH.gguf")
