"""The ``sealq`` command line (click): the group is :mod:`sealq.cli.main`; each command lives in its own
module of this package and registers itself on the group when imported here."""

from __future__ import annotations

from sealq.cli import continual, convert, learn, loop, models, views  # noqa: F401  (registers the commands)
from sealq.cli.main import cli

__all__ = ["cli"]
