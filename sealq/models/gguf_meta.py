"""Reading a GGUF file's metadata and tensor shapes, fast, once per process.

gguf-py's ``GGUFReader`` decodes every key, including the tokenizer's ~49k vocabulary and merge strings
(about 2 s for the default model); sealq needs only a few scalar keys and the tensor shapes. This reader
walks the same layout (GGUF v2/v3, `the format spec <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>`_:
header, key/value pairs, tensor infos) with gguf-py's own type constants, decodes scalars and numeric
arrays, and steps over string arrays without decoding them. Results are cached per (path, size, mtime),
so ``resolve_model``, the converter and the adapter check share one read. Both byte orders are read
(a big-endian file is recognized, as gguf-py does, by its byte-swapped version field).

On top of it: :func:`read_base_info` (what the converter needs to know about a base model) and
:func:`validate_adapter` (a GGUF LoRA adapter checked against its base before llama.cpp loads it).
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sealq.errors import SealqError

__all__ = ["GGUFMeta", "StringArray", "BaseInfo", "read_base_info", "validate_adapter"]


class StringArray:
    """A string-array value that was stepped over, not decoded (tokenizer vocabularies, merges)."""

    __slots__ = ("count",)

    def __init__(self, count: int):
        self.count = count

    def __repr__(self) -> str:
        return f"StringArray({self.count} strings, not decoded)"


class _Cursor:
    """Reads GGUF scalars from a bytes-like buffer at a moving offset, in one byte order."""

    def __init__(self, buf, endian: str):
        self.buf, self.pos, self.e = buf, 0, endian

    def take(self, fmt: str):
        value = struct.unpack_from(self.e + fmt, self.buf, self.pos)
        self.pos += struct.calcsize(self.e + fmt)
        return value[0]

    def string(self) -> str:
        n = self.take("Q")
        raw = bytes(self.buf[self.pos:self.pos + n])
        if len(raw) != n:
            raise ValueError("string runs past the end of the file")
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        for _ in range(count):
            self.pos += 8 + struct.unpack_from(self.e + "Q", self.buf, self.pos)[0]
        if self.pos > len(self.buf):
            raise ValueError("string array runs past the end of the file")


def _scalar_formats() -> dict:
    import gguf

    T = gguf.GGUFValueType
    return {T.UINT8: "B", T.INT8: "b", T.UINT16: "H", T.INT16: "h", T.UINT32: "I", T.INT32: "i",
            T.FLOAT32: "f", T.BOOL: "?", T.UINT64: "Q", T.INT64: "q", T.FLOAT64: "d"}


def _value(cur: _Cursor, vtype: int, formats: dict):
    import gguf

    if vtype == gguf.GGUFValueType.STRING:
        return cur.string()
    if vtype == gguf.GGUFValueType.ARRAY:
        itype, count = cur.take("I"), cur.take("Q")
        if itype == gguf.GGUFValueType.STRING:
            cur.skip_strings(count)
            return StringArray(count)
        if itype not in formats:
            raise ValueError(f"array of value type {itype} is not supported")
        dtype = np.dtype(cur.e + formats[itype])
        data = np.frombuffer(cur.buf, dtype=dtype, count=count, offset=cur.pos)
        cur.pos += dtype.itemsize * count
        return data.tolist()
    if vtype not in formats:
        raise ValueError(f"unknown value type {vtype}")
    return cur.take(formats[vtype])


@functools.lru_cache(maxsize=16)
def _parse(path: str, _size: int, _mtime_ns: int) -> tuple[dict, dict]:
    """(key -> value, tensor name -> numpy-order shape) of a GGUF file (cached per path, size, mtime)."""
    with open(path, "rb") as f:
        # ignore: numpy types ndarray as a Buffer (__buffer__) for Python 3.12+ only
        buf = memoryview(f.read()) if _size < (1 << 20) else memoryview(np.memmap(f, mode="r"))  # type: ignore[arg-type]
    if bytes(buf[:4]) != b"GGUF":
        raise ValueError("no GGUF magic")
    endian = "<" if struct.unpack_from("<I", buf, 4)[0] & 0xFFFF else ">"
    cur = _Cursor(buf, endian)
    cur.pos = 4
    version = cur.take("I")
    if version not in (2, 3):
        raise ValueError(f"GGUF version {version} is not supported (2 or 3)")
    n_tensors, n_kv = cur.take("Q"), cur.take("Q")
    formats = _scalar_formats()
    fields = {}
    for _ in range(n_kv):
        key = cur.string()
        fields[key] = _value(cur, cur.take("I"), formats)
    shapes, data_end = {}, 0
    for _ in range(n_tensors):
        name = cur.string()
        dims = [cur.take("Q") for _ in range(cur.take("I"))]
        ttype, offset = cur.take("I"), cur.take("Q")
        shapes[name] = tuple(int(x) for x in reversed(dims))
        data_end = max(data_end, offset + _nbytes(ttype, dims))
    alignment = fields.get("general.alignment", 32)
    start = -(-cur.pos // alignment) * alignment
    if n_tensors and start + data_end > len(buf):
        raise ValueError(f"tensor data runs past the end of the file ({start + data_end} > {len(buf)} bytes)")
    return fields, shapes


def _nbytes(ttype: int, dims: list) -> int:
    """Bytes of one tensor's data (gguf-py's ``GGML_QUANT_SIZES``: elements per block, bytes per block)."""
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ttype)]
    return int(np.prod(dims, dtype=np.int64)) // block * size


class GGUFMeta:
    """Metadata and tensor shapes of a GGUF file (GGUF v2/v3).

    Args:
        path: the file.
        what: how error messages name it ("GGUF", "GGUF adapter", ...).

    Raises:
        SealqError: the file cannot be read or parsed (not GGUF, truncated, damaged).
    """

    def __init__(self, path: str | Path, what: str = "GGUF"):
        try:
            st = Path(path).stat()
            self.fields, self._shapes = _parse(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
        except Exception as e:  # noqa: BLE001  (struct.error, ValueError, IndexError, OSError on damaged files)
            raise SealqError(f"{path}: not a readable {what} ({type(e).__name__}: {e})") from None

    def field(self, key: str):
        """The decoded value of a metadata key (a list for numeric arrays, :class:`StringArray` for a string
        array, which is not decoded), or None if absent."""
        return self.fields.get(key)

    def shapes(self) -> dict:
        """Tensor name -> numpy-order shape (GGUF stores ne[0] first, i.e. reversed)."""
        return dict(self._shapes)


@dataclass(frozen=True)
class BaseInfo:
    """What the converter needs to know about the base GGUF.

    Args:
        architecture: ``general.architecture``.
        n_blocks: number of transformer blocks.
        n_head: attention heads (q).
        n_head_kv: key/value heads.
        shapes: GGUF tensor name -> numpy-order shape ``(out, in)`` of every base tensor.
    """

    architecture: str
    n_blocks: int
    n_head: int
    n_head_kv: int
    shapes: dict


def read_base_info(base_gguf: str | Path) -> BaseInfo:
    """Read architecture, block/head counts and tensor shapes from a base GGUF (the metadata is parsed
    once per process and file version, see :class:`sealq.models.gguf_meta.GGUFMeta`).

    Raises:
        SealqError: the file is not a readable GGUF model.
    """
    import gguf

    try:
        Path(base_gguf).stat()
    except OSError as e:
        raise SealqError(f"{base_gguf}: cannot read base model ({e.strerror or e})") from None
    meta = GGUFMeta(base_gguf)
    field = meta.field
    arch = field(gguf.Keys.General.ARCHITECTURE)
    if arch is None:
        raise SealqError(f"{base_gguf}: no general.architecture")
    keys = [k.format(arch=arch) for k in (gguf.Keys.LLM.BLOCK_COUNT, gguf.Keys.Attention.HEAD_COUNT)]
    values = [field(k) for k in keys]
    for key, value in zip(keys, values):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise SealqError(f"{base_gguf}: metadata {key} is {value!r}, expected a positive integer")
    n_blocks, n_head = values
    n_head_kv = field(gguf.Keys.Attention.HEAD_COUNT_KV.format(arch=arch)) or n_head
    if not isinstance(n_head_kv, int) or n_head_kv <= 0:  # an array (one per layer) is not supported either
        raise SealqError(f"{base_gguf}: metadata {gguf.Keys.Attention.HEAD_COUNT_KV.format(arch=arch)} is "
                         f"{n_head_kv!r}, expected a positive integer")
    return BaseInfo(arch, int(n_blocks), int(n_head), int(n_head_kv), meta.shapes())


def validate_adapter(adapter_gguf: str | Path, base_gguf: str | Path) -> None:
    """Check a GGUF LoRA adapter against a base model before llama.cpp sees it.

    llama.cpp refuses a mismatched adapter too, but only with a log line and a NULL; this names the
    problem: not an adapter, another architecture, a tensor the base lacks, or shapes that do not fit.

    Raises:
        SealqError: the file is unreadable, truncated, or does not fit the base.
    """
    import gguf

    meta = GGUFMeta(adapter_gguf, "GGUF adapter")
    field = meta.field
    if field(gguf.Keys.General.TYPE) != gguf.GGUFType.ADAPTER or field(gguf.Keys.Adapter.TYPE) != "lora":
        raise SealqError(f"{adapter_gguf}: not a GGUF LoRA adapter (general.type={field(gguf.Keys.General.TYPE)!r})")
    base = read_base_info(base_gguf)
    arch = field(gguf.Keys.General.ARCHITECTURE)
    if arch != base.architecture:
        raise SealqError(f"{adapter_gguf}: adapter for architecture {arch!r}, base {base_gguf} is {base.architecture!r}")
    for name, shape in meta.shapes().items():
        weight, _, part = name.rpartition(".")
        if weight not in base.shapes:
            raise SealqError(f"{adapter_gguf}: {weight} is not in base {base_gguf} (adapter for another base?)")
        out_f, in_f = base.shapes[weight]
        if (part == "lora_a" and shape[1] != in_f) or (part == "lora_b" and shape[0] != out_f):
            raise SealqError(f"{adapter_gguf}: {name} has shape {shape}, base {weight} is {(out_f, in_f)} "
                             "(adapter for another base?)")
