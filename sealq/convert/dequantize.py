"""Write an F32 copy of a GGUF model: every tensor dequantized with gguf-py, metadata kept.

Used for converter parity checks: on an F32 base llama.cpp computes without weight quantization, so
its logits can be compared with PEFT's on the same (dequantized) weights. Format: GGUF v3 (gguf-py).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["dequantize_gguf"]


def dequantize_gguf(src: str | Path, dst: str | Path) -> Path:
    """Write ``dst``: ``src`` with all tensors as F32 and ``general.file_type`` = ALL_F32.

    Args:
        src: a GGUF model.
        dst: the file to write (via a temporary name and a rename).

    Returns:
        ``dst`` as a Path. Size: 4 bytes per parameter (~540 MB for SmolLM2-135M).
    """
    import gguf

    reader = gguf.GGUFReader(str(src))
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    dst = Path(dst)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".gguf", dir=dst.parent)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, arch)
        for field in reader.fields.values():
            if field.name.startswith("GGUF.") or field.name in (gguf.Keys.General.ARCHITECTURE,
                                                                 gguf.Keys.General.FILE_TYPE):
                continue
            vtype = field.types[0]
            sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
        writer.add_file_type(gguf.LlamaFileType.ALL_F32)
        for t in reader.tensors:
            data = gguf.quants.dequantize(t.data, t.tensor_type).astype("float32")
            writer.add_tensor(t.name, data.reshape(tuple(int(x) for x in reversed(t.shape.tolist()))))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dst
