"""Plain documents (``.txt``, ``.md``) split into passages for ``sealq learn``.

A document has no questions: it is cut into passages the self-edit prompt can hold, each titled by its
nearest heading (SEAL prefixes every training sequence with the title, sec. 3.2). Splitting rules:

* Markdown ATX headings (``#`` to ``######``) start a new passage and give the title of what follows;
  a ``.txt`` file (read as plain text: no headings) or a Markdown file before its first heading is titled
  by the file name.
* Paragraphs (blocks between blank lines) are joined into one passage while the passage stays within
  ``max_tokens`` (counted with the model's own tokenizer); a paragraph longer than that is cut at sentence
  ends (``.!?`` before white space and a capital or digit; ``。！？``), a sentence longer than that at
  word boundaries, and a word (or a run of text without spaces) longer than that into pieces of characters.
* Code fences (````` or ``~~~``, closed by the same marker) are kept as text (their lines are not
  headings); a YAML front-matter block at the top of a Markdown file (``---``, then only ``key: value``
  lines, then ``---``, within 50 lines) is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from sealq.engine.dataset import Passage
from sealq.errors import SealqError

__all__ = ["DOCUMENT_SUFFIXES", "split_document", "read_document", "sentences"]

#: file name endings read as plain documents (anything else given to ``sealq learn`` is refused)
DOCUMENT_SUFFIXES = (".txt", ".md", ".markdown")

_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])|(?<=[\u3002\uff01\uff1f])")
_FRONT_MATTER_LINE = re.compile(r"^\s*([\w-]+\s*:.*|-\s.*|#.*)?$")


def sentences(text: str) -> list[str]:
    """``text`` cut after ``.``, ``!`` or ``?`` followed by white space and a capital letter or digit, and
    after the CJK full stops ``。！？``."""
    return [s.strip() for s in _SENTENCE_END.split(" ".join(text.split())) if s.strip()]


def _front_matter_end(lines: list[str]) -> int:
    """The index of the first line after a YAML front-matter block at the top, or 0 when there is none."""
    if not lines or lines[0].strip() != "---":
        return 0
    for i, line in enumerate(lines[1:51], start=1):
        if line.strip() in ("---", "..."):
            return i + 1
        if not _FRONT_MATTER_LINE.match(line):
            return 0
    return 0


def _blocks(text: str, default_title: str, markdown: bool) -> list[tuple[str, str]]:
    """(title, paragraph) in document order; headings set the title of the paragraphs after them, and a
    heading closes the paragraph before it (``(title, "")`` marks a section break)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if markdown:
        lines = lines[_front_matter_end(lines):]
    para: list[str]
    fence: str | None
    out, title, para, fence = [], default_title, [], None
    for line in lines:
        f = _FENCE.match(line) if markdown else None
        if f and fence is None:
            fence = f.group(1)
        elif f and fence is not None and f.group(1)[0] == fence[0] and len(f.group(1)) >= len(fence):
            fence = None
        fenced = fence is not None or f is not None
        m = None if fenced or not markdown else _HEADING.match(line)
        if m or (not line.strip() and not fenced):
            if para:
                out.append((title, "\n".join(para).strip()))
                para = []
            if m:
                title = m.group(2).strip() or title
                out.append((title, ""))
            continue
        para.append(line.rstrip())
    if para:
        out.append((title, "\n".join(para).strip()))
    return out


def _pieces(paragraph: str, count: Callable[[str], int], max_tokens: int) -> list[str]:
    """A paragraph as it is, or cut at sentence ends (then at words) into pieces of at most ``max_tokens``."""
    if count(paragraph) <= max_tokens:
        return [paragraph]
    units = []
    for s in sentences(paragraph):
        if count(s) <= max_tokens:
            units.append(s)
            continue
        cur: list[str]
        words, cur = [p for w in s.split() for p in _cut_word(w, count, max_tokens)], []
        for w in words:
            if cur and count(" ".join(cur + [w])) > max_tokens:
                units.append(" ".join(cur))
                cur = []
            cur.append(w)
        if cur:
            units.append(" ".join(cur))
    return _pack(units, " ", count, max_tokens)


def _cut_word(word: str, count: Callable[[str], int], max_tokens: int) -> list[str]:
    """``word`` as it is, or cut into runs of characters of at most ``max_tokens`` each (text without
    spaces: CJK, a long URL)."""
    out = []
    while count(word) > max_tokens:
        n = max(1, int(len(word) * max_tokens / count(word)))
        while n > 1 and count(word[:n]) > max_tokens:
            n = max(1, int(n * 0.8))
        out.append(word[:n])
        word = word[n:]
    return out + ([word] if word else [])


def _pack(units: list[str], sep: str, count: Callable[[str], int], max_tokens: int) -> list[str]:
    """Greedily join consecutive ``units`` with ``sep`` while the joined text stays within ``max_tokens``."""
    out, cur = [], ""
    for u in units:
        joined = f"{cur}{sep}{u}" if cur else u
        if cur and count(joined) > max_tokens:
            out.append(cur)
            joined = u
        cur = joined
    if cur:
        out.append(cur)
    return out


def split_document(text: str, title: str, count: Callable[[str], int], max_tokens: int,
                   markdown: bool = True) -> list[Passage]:
    """Split a plain or Markdown document into passages (module docstring), without questions.

    Args:
        text: the document.
        title: the title of text before the first heading (e.g. the file name).
        count: tokens of a text (the model's tokenizer).
        max_tokens: the most tokens one passage's text may have.
        markdown: read headings, code fences and front matter (False: plain text, paragraphs only).

    Returns:
        The passages in document order; empty when the document holds no text.
    """
    sections: list[tuple[str, list[str]]] = []
    for t, para in _blocks(text, title, markdown):
        if not para:
            sections.append((t, []))
            continue
        if not sections:
            sections.append((t, []))
        sections[-1][1].extend(_pieces(para, count, max_tokens))
    out: list[Passage] = []
    for t, paras in sections:
        out.extend(Passage(t, ctx) for ctx in _pack(paras, "\n\n", count, max_tokens))
    return out


def read_document(path: str | Path) -> tuple[str, str]:
    """(default title, text) of a ``.txt``/``.md`` file: the title is the file name without its ending.

    Raises:
        SealqError: not such a file, unreadable, not UTF-8 text, or empty.
    """
    p = Path(path)
    if p.suffix.lower() not in DOCUMENT_SUFFIXES:
        raise SealqError(f"{p}: not a plain document ({', '.join(DOCUMENT_SUFFIXES)}) or a .json passage file")
    try:
        if p.exists() and not p.is_file():  # a folder, a FIFO (would block), a device (/dev/zero: endless)
            raise SealqError(f"{p}: not a regular file")
        data = p.read_bytes()
    except OSError as e:
        raise SealqError(f"{p}: cannot read ({e.strerror or e})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SealqError(f"{p}: not UTF-8 text (byte {e.start})") from None
    if "\x00" in text:
        raise SealqError(f"{p}: not a text file (it holds NUL bytes)")
    if not text.strip():
        raise SealqError(f"{p}: the document is empty")
    return p.stem.replace("_", " ").replace("-", " ").strip() or p.stem, text
