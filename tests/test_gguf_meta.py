"""sealq's fast GGUF metadata reader against gguf-py's full GGUFReader: the same keys, values and shapes."""

from __future__ import annotations

import numpy as np
import pytest

from sealq.errors import SealqError
from sealq.models.gguf_meta import GGUFMeta, StringArray

pytestmark = pytest.mark.unit  # no model: the unit tier (tests/conftest.py)


def _same_as_gguf_py(path) -> int:
    """Assert GGUFMeta agrees with GGUFReader on every key and tensor; returns the number of keys compared."""
    import gguf

    reader, meta = gguf.GGUFReader(str(path)), GGUFMeta(path)
    keys = [k for k in reader.fields if not k.startswith("GGUF.")]
    assert sorted(keys) == sorted(meta.fields)
    for key in keys:
        ours, theirs = meta.field(key), reader.fields[key].contents()
        if isinstance(ours, StringArray):
            assert ours.count == len(theirs), key
        else:
            assert ours == theirs, key
    assert meta.shapes() == {t.name: tuple(int(x) for x in reversed(t.shape.tolist())) for t in reader.tensors}
    return len(keys)


def test_default_model_reads_like_gguf_py(model):
    n = _same_as_gguf_py(model.path)
    meta = GGUFMeta(model.path)
    assert n > 20 and meta.field("llama.block_count") == 30 and isinstance(meta.field("tokenizer.ggml.tokens"), StringArray)
    assert meta.field("tokenizer.ggml.tokens").count == 49152
    assert meta.shapes()["blk.0.attn_q.weight"] == (576, 576)


@pytest.mark.parametrize("endian", ["LITTLE", "BIG"])
def test_every_value_type_in_both_byte_orders(tmp_path, endian):
    import gguf

    path = tmp_path / f"{endian}.gguf"
    w = gguf.GGUFWriter(str(path), "llama", endianess=getattr(gguf.GGUFEndian, endian))
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_uint8("u8", 7), w.add_int8("i8", -7), w.add_uint16("u16", 700), w.add_int16("i16", -700)
    w.add_uint32("u32", 70000), w.add_int32("i32", -70000), w.add_float32("f32", 0.25), w.add_bool("b", True)
    w.add_uint64("u64", 2**40), w.add_int64("i64", -(2**40)), w.add_float64("f64", 1e-300)
    w.add_string("s", "Grüße ✓"), w.add_array("ints", [3, 1, 4]), w.add_array("strs", ["a", "bc", ""])
    w.add_array("floats", [0.5, -2.0])
    w.add_tensor("blk.0.attn_q.weight.lora_a", np.zeros((4, 576), np.float32))
    w.add_tensor("blk.0.attn_q.weight.lora_b", np.zeros((576, 4), np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()  # noqa: E702
    assert _same_as_gguf_py(path) == 17
    meta = GGUFMeta(path)
    assert meta.field("s") == "Grüße ✓" and meta.field("i64") == -(2**40) and meta.field("strs").count == 3
    assert meta.shapes()["blk.0.attn_q.weight.lora_a"] == (4, 576)


def test_damaged_files_are_one_error(model, tmp_path):
    data = model.path.read_bytes()
    for name, content in [("cut-in-vocab", data[: 1 << 16]), ("cut-header", data[:20]), ("not-gguf", b"hello world"),
                          ("cut-in-tensor-data", data[:-1000])]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(SealqError, match=f"{name}: not a readable GGUF"):
            GGUFMeta(path)
