"""Several GGUF LoRA adapters of one base combined into one adapter with the same effect as stacking them.

llama.cpp applies stacked adapters as ``W x + sum_i s_i B_i (A_i x)`` with ``s_i = alpha_i / r_i`` (format:
:mod:`sealq.convert.lora_gguf`). Concatenating along the rank gives one adapter with exactly that sum:
``A = [A_1; A_2; ...]`` (numpy ``(R, in)``), ``B = [s_1 B_1, s_2 B_2, ...]`` (``(out, R)``), written with
alpha = R so that llama.cpp's scale alpha / R is 1. A tensor an adapter lacks gets zero rows, so every
tensor has rank R. Used by ``sealq export`` (a learned document's accepted updates as one file for any
llama.cpp tool: ``Llama(lora_path=)``, ``llama-server --lora``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sealq.convert.lora_gguf import write_adapter
from sealq.errors import SealqError

__all__ = ["combine_adapters"]


def _read(path: Path) -> tuple[str, float, dict[str, np.ndarray]]:
    """(architecture, alpha, {tensor name: float32 numpy array}) of a GGUF LoRA adapter."""
    import gguf

    if not path.is_file():
        raise SealqError(f"{path}: no such adapter file")
    try:
        reader = gguf.GGUFReader(str(path))

        def field(key):
            f = reader.fields.get(key)
            return None if f is None else f.contents()

        kind = (field(gguf.Keys.General.TYPE), field(gguf.Keys.Adapter.TYPE))
        alpha = float(field(gguf.Keys.Adapter.LORA_ALPHA) or 0.0)
        tensors = {t.name: np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(
            [int(x) for x in reversed(t.shape)]) for t in reader.tensors}
        arch = field(gguf.Keys.General.ARCHITECTURE)
    except Exception as e:  # noqa: BLE001  (gguf-py raises many kinds on a truncated or foreign file)
        raise SealqError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from None
    if kind != ("adapter", "lora"):
        raise SealqError(f"{path}: not a GGUF LoRA adapter")
    return arch, alpha, tensors


def combine_adapters(adapters: list[str | Path], out_path: str | Path, name: str = "sealq combined LoRA") -> dict:
    """Write one GGUF LoRA adapter equal to ``adapters`` stacked at scale 1 (module docstring).

    Args:
        adapters: GGUF LoRA adapters of the same base (same architecture), in any order.
        out_path: the file to write (atomically).
        name: ``general.name`` of the written adapter.

    Returns:
        ``{"path", "adapters", "rank", "tensor_pairs"}`` (rank: the summed rank R).

    Raises:
        SealqError: no adapters, an unreadable file, different architectures, or shapes that disagree.
    """
    if not adapters:
        raise SealqError("nothing to export: the model has no accepted update")
    parts = [_read(Path(p)) for p in adapters]
    archs = {a for a, _, _ in parts}
    if len(archs) != 1:
        raise SealqError(f"the adapters are for different architectures ({', '.join(sorted(map(str, archs)))})")
    ranks = []
    for (_, _alpha, t), p in zip(parts, adapters):
        rs = {v.shape[0] for k, v in t.items() if k.endswith(".lora_a")}
        if len(rs) != 1:
            raise SealqError(f"{p}: its tensors have different ranks {sorted(rs)}")
        ranks.append(rs.pop())
    names = sorted({k[: -len(".lora_a")] for _, _, t in parts for k in t if k.endswith(".lora_a")})
    out = []
    for n in names:
        a_blocks, b_blocks = [], []
        shape = next((t[n + ".lora_a"].shape[1], t[n + ".lora_b"].shape[0]) for _, _, t in parts if n + ".lora_a" in t)
        for (_, alpha, t), r in zip(parts, ranks):
            if n + ".lora_a" in t:
                a, b = t[n + ".lora_a"], t[n + ".lora_b"]
                if (a.shape[1], b.shape[0]) != shape:
                    raise SealqError(f"{n}: the adapters' shapes disagree ({a.shape[1]} x {b.shape[0]} vs {shape[0]} x {shape[1]})")
                scale = alpha / r if alpha else 1.0  # llama.cpp reads alpha 0 as scale 1
                a_blocks.append(a)
                b_blocks.append(b * np.float32(scale))
            else:
                a_blocks.append(np.zeros((r, shape[0]), np.float32))
                b_blocks.append(np.zeros((shape[1], r), np.float32))
        out += [(n + ".lora_a", np.ascontiguousarray(np.concatenate(a_blocks, 0), dtype=np.float32)),
                (n + ".lora_b", np.ascontiguousarray(np.concatenate(b_blocks, 1), dtype=np.float32))]
    total = sum(ranks)
    out_path = Path(out_path)
    write_adapter(out, out_path, archs.pop(), float(total), "f32", name)
    return {"path": str(out_path), "adapters": len(parts), "rank": total, "tensor_pairs": len(names)}
