"""The one exception type a user of sealq is meant to see.

Every error caused by the user's input (a malformed dataset, a missing model file, an invalid option, a
wrong adapter) is raised as :class:`SealqError`; the CLI prints its message on one line and exits with
code 2. Anything else is a bug in sealq and keeps its traceback.
"""

__all__ = ["SealqError", "EXIT_USAGE"]

#: Exit code for errors in the user's input (the same code click uses for usage errors).
EXIT_USAGE = 2


class SealqError(Exception):
    """A user-facing error: the message names the file, field or option at fault."""
