"""The ``sealq`` command group (click) and how it reports errors; the commands register themselves on it
from their own modules (:mod:`sealq.cli` imports them all)."""

from __future__ import annotations

import sys
import warnings

import click

from sealq.errors import EXIT_INTERRUPTED, EXIT_USAGE, SealqError, SealqWarning

__all__ = ["cli"]


class _Group(click.Group):
    """A click group that turns :class:`SealqError` and click's usage errors (a bad option value, an
    unknown choice) into one line on stderr and exit code 2."""

    def invoke(self, ctx):
        def show(message, category, *_args, **_kwargs):
            click.echo(f"Warning: {message}", err=True)

        if not sys.warnoptions:
            warnings.filterwarnings("always", category=SealqWarning)
        previous, warnings.showwarning = warnings.showwarning, _only_sealq(show, warnings.showwarning)
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("Interrupted: what was recorded is kept (`sealq runs`; continue with `sealq loop --resume RUN`, "
                       "or `sealq continual --resume RUN` / `sealq learn --resume RUN` for a continual / learn run).",
                       err=True)
            sys.exit(EXIT_INTERRUPTED)
        except SealqError as e:
            click.echo(f"Error: {e}", err=True)
            sys.exit(EXIT_USAGE)
        except click.UsageError as e:
            where = f"{e.ctx.command_path}: " if e.ctx is not None else ""
            click.echo(f"Error: {where}{e.format_message()}", err=True)
            sys.exit(EXIT_USAGE)
        except Exception as e:  # a full disk (OSError, sqlite3.OperationalError, ...) is the user's, not a bug
            from sealq.errors import disk_full_reason

            reason = disk_full_reason(e)
            if not reason:
                raise
            click.echo(f"Error: the workspace is full ({reason}); what was recorded is kept: free space and run the "
                       "command again (`sealq loop --resume RUN` to continue a run)", err=True)
            sys.exit(EXIT_USAGE)
        finally:
            warnings.showwarning = previous


def _only_sealq(show, fallback):
    def showwarning(message, category, *args, **kwargs):
        (show if issubclass(category, SealqWarning) else fallback)(message, category, *args, **kwargs)

    return showwarning


@click.group(cls=_Group)
@click.version_option(package_name="sealq")
def cli():
    """sealq: a small language model teaches itself new passages (SEAL, simplified, on a CPU).

    Run `sealq loop` to read the bundled passages, write self-edits, fine-tune LoRA adapters on them and
    measure what the model learned. Everything is recorded in runs.db in the workspace.
    """

