"""Parsing a model-written directive (the training settings a self-edit asks for).

SEAL (Zweiger et al. 2025, sec. 3.1) lets a self-edit carry its own optimization directive. sealq asks
for it in a fixed form, ``epochs=E lr=L rank=R``, decoded under a grammar (see
:data:`DIRECTIVE_GRAMMAR`), and still parses defensively: each field that is missing, unparseable,
non-finite or outside :class:`~sealq.engine.config.DirectiveBounds` falls back to the default, and the
reason is recorded.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from sealq.engine.config import Directive, DirectiveBounds

__all__ = ["ParsedDirective", "parse_directive", "DIRECTIVE_GRAMMAR"]

#: GBNF grammar (llama.cpp) that keeps the model's directive in the parseable form.
DIRECTIVE_GRAMMAR = r"""
root ::= "epochs=" int " lr=" num " rank=" int
int ::= [0-9] | [1-9] [0-9]
num ::= [0-9] "." [0-9] [0-9]? "e-" [0-9]
"""

_FIELD = {
    "epochs": re.compile(r"\bepochs?\s*[=:]\s*([-+]?[0-9.eE+-]+|nan|inf)", re.I),
    "lr": re.compile(r"\b(?:lr|learning[ _]rate)\s*[=:]\s*([-+]?[0-9.eE+-]+|nan|inf)", re.I),
    "rank": re.compile(r"\b(?:rank|r)\s*[=:]\s*([-+]?[0-9.eE+-]+|nan|inf)", re.I),
}


@dataclass(frozen=True)
class ParsedDirective:
    """A directive after parsing.

    Args:
        directive: the settings that will be used.
        fallbacks: field -> reason, for every field that fell back to the default (empty: all parsed).
    """

    directive: Directive
    fallbacks: dict

    @property
    def fell_back(self) -> bool:
        """True if any field fell back to the default."""
        return bool(self.fallbacks)


def _number(text: str | None):
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_directive(text: str | None, default: Directive, bounds: DirectiveBounds) -> ParsedDirective:
    """Parse ``epochs=E lr=L rank=R`` (order and separators are tolerated) with hard bounds.

    Args:
        text: the model's raw directive text (None or empty: all defaults).
        default: used for every field that is missing or invalid.
        bounds: inclusive ranges for epochs and lr; the allowed LoRA ranks.

    Returns:
        The directive to use and, per field that fell back, why. Never raises.
    """
    text = text or ""
    fallbacks: dict[str, str] = {}
    values = {}
    for name, pattern in _FIELD.items():
        m = pattern.search(text)
        raw = m.group(1) if m else None
        value = _number(raw)
        if raw is None:
            fallbacks[name] = "missing"
        elif value is None:
            fallbacks[name] = f"unparseable {raw!r}"
        elif name == "epochs":
            if value != int(value) or not bounds.epochs[0] <= value <= bounds.epochs[1]:
                fallbacks[name] = f"out of range {raw} (allowed {bounds.epochs[0]}-{bounds.epochs[1]})"
            else:
                values[name] = int(value)
        elif name == "lr":
            if not bounds.lr[0] <= value <= bounds.lr[1]:
                fallbacks[name] = f"out of range {raw} (allowed {bounds.lr[0]:g}-{bounds.lr[1]:g})"
            else:
                values[name] = value
        else:
            if value != int(value) or int(value) not in bounds.ranks:
                fallbacks[name] = f"out of range {raw} (allowed {', '.join(map(str, bounds.ranks))})"
            else:
                values[name] = int(value)
    return ParsedDirective(
        Directive(
            epochs=values.get("epochs", default.epochs),
            lr=values.get("lr", default.lr),
            rank=values.get("rank", default.rank),
        ),
        fallbacks,
    )
