"""The one exception type a user of sealq is meant to see.

Every error caused by the user's input (a malformed dataset, a missing model file, an invalid option, a
wrong adapter) is raised as :class:`SealqError`; the CLI prints its message on one line and exits with
code 2. Anything else is a bug in sealq and keeps its traceback.
"""

import errno

__all__ = ["SealqError", "SealqWarning", "EXIT_USAGE", "EXIT_INTERRUPTED", "disk_full_reason"]

#: Exit code for errors in the user's input (the same code click uses for usage errors).
EXIT_USAGE = 2
#: Exit code after Ctrl-C (128 + SIGINT, the shell convention).
EXIT_INTERRUPTED = 130


class SealqError(Exception):
    """A user-facing error: the message names the file, field or option at fault."""


class SealqWarning(UserWarning):
    """Something the user should know that does not stop the command (e.g. duplicate passages dropped);
    the CLI prints it as one ``Warning: ...`` line on stderr."""


_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_FULL_TEXT = ("no space left on device", "disk is full", "file too large", "disk quota exceeded",
              "os error 28", "os error 27", "os error 122")


def disk_full_reason(exc: BaseException | None) -> str | None:
    """Why ``exc`` means the workspace cannot take more data, or None if it does not.

    Recognizes ``OSError`` with ENOSPC / EDQUOT / EFBIG (a full disk, a quota, a file-size limit),
    SQLite's "database or disk is full", and library errors that carry those OS errors only in their
    message (safetensors, for one, reports "I/O error: No space left on device (os error 28)"). Looks
    through ``__cause__`` / ``__context__`` chains.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
            return exc.strerror or str(exc)
        text = str(exc).lower()
        for marker in _FULL_TEXT:
            if marker in text:
                return str(exc).splitlines()[0][:200]
        exc = exc.__cause__ or exc.__context__
    return None
