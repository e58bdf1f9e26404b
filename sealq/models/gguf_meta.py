"""Reading GGUF metadata with gguf-py's reader, with sealq's error for unreadable files."""

from __future__ import annotations

from pathlib import Path

from sealq.errors import SealqError

__all__ = ["GGUFMeta"]


class GGUFMeta:
    """Metadata and tensor shapes of a GGUF file (GGUF v3, read with ``gguf.GGUFReader``).

    Args:
        path: the file.
        what: how error messages name it ("GGUF", "GGUF adapter", ...).

    Raises:
        SealqError: the file cannot be parsed (not GGUF, truncated, damaged).
    """

    def __init__(self, path: str | Path, what: str = "GGUF"):
        import gguf

        try:
            self.reader = gguf.GGUFReader(str(path))
        except Exception as e:  # gguf raises ValueError/struct.error/IndexError/... on damaged files
            raise SealqError(f"{path}: not a readable {what} ({type(e).__name__}: {e})") from None

    def field(self, key: str):
        """The decoded value of a metadata key, or None if absent."""
        f = self.reader.fields.get(key)
        return f.contents() if f is not None else None

    def shapes(self) -> dict:
        """Tensor name -> numpy-order shape (GGUF stores ne[0] first, i.e. reversed)."""
        return {t.name: tuple(int(x) for x in reversed(t.shape.tolist())) for t in self.reader.tensors}
