"""Shared set-up for the bench scripts: the default model on both sides, thread count, a sample passage."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

THREADS = os.cpu_count() or 1


def machine() -> str:
    """One line naming the machine the figures were measured on."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {THREADS} threads, Python {platform.python_version()}"


def default_model():
    from sealq.models.registry import resolve_model

    return resolve_model(None)
