"""Fault injection for the crash tests: a process kills itself with SIGKILL at a named point.

Set ``SEALQ_KILL_AT=<point>[:<n>]`` and the n-th time (default the first) the loop passes ``<point>``
the process sends itself SIGKILL: no cleanup, no ``finally``, no flush, exactly like ``kill -9`` or a
power cut at that instant. ``SEALQ_FAIL_AT=<point>[:<n>]`` raises a :class:`~sealq.errors.SealqError`
there instead (how a user's error inside a Ray worker reaches the driver). The points are listed in
:data:`POINTS`. Unset (always, outside tests) the check costs two dictionary lookups.
"""

from __future__ import annotations

import os
import signal

from sealq.errors import SealqError

__all__ = ["POINTS", "kill_point"]

#: Where the loop can be killed: after a self-edit is generated, during training (adapter saved to its
#: temporary folder, not yet renamed), between conversion and evaluation, and inside the database
#: transaction of a self-edit (its row inserted, adapter and answers not yet, nothing committed); in a
#: ReST-EM run, after a policy adapter is trained and converted but before its row is recorded; in a
#: continual run, after a gate's decision (and the model state it creates) but before the decision's row.
POINTS = ("generate", "train", "convert", "db_write", "policy", "continual_decision")

_seen: dict[tuple[str, str], int] = {}


def kill_point(name: str) -> None:
    """SIGKILL this process if ``$SEALQ_KILL_AT`` names this point and occurrence; raise SealqError if
    ``$SEALQ_FAIL_AT`` does."""
    for var in ("SEALQ_KILL_AT", "SEALQ_FAIL_AT"):
        spec = os.environ.get(var)
        if not spec:
            continue
        point, _, nth = spec.partition(":")
        if point != name:
            continue
        _seen[var, name] = _seen.get((var, name), 0) + 1
        if _seen[var, name] != int(nth or 1):
            continue
        if var == "SEALQ_KILL_AT":
            os.kill(os.getpid(), signal.SIGKILL)
        raise SealqError(f"injected fault at {name} (SEALQ_FAIL_AT)")
