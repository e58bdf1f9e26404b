"""Benchmark: start-up of the everyday commands, as whole processes (what a user waits for).

Times ``sealq convert`` of a 7-target r16 adapter against llama.cpp's own ``convert_lora_to_gguf.py`` on
the same adapter (from the llama-cpp-python 0.3.36 source distribution, ``vendor/llama.cpp/``), and
``sealq ask``, ``sealq runs`` and ``sealq --help``, and a bare ``import peft`` (the part of ``sealq
convert`` that PEFT's own config parsing costs); median of 3, the commands run in turn. Prints one
line per figure and appends each to ``bench/results/startup.jsonl``.

Run: .venv/bin/python bench/startup.py   (the upstream script and ``sentencepiece``, which it imports, are
installed by ``make install``: the converters are unpacked from the sdist into ``.venv/src/llama.cpp``)
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, record

BIN = Path(sys.executable).parent


def upstream_converter() -> Path:
    """``convert_lora_to_gguf.py`` as ``make install`` unpacked it from the llama-cpp-python sdist."""
    from tiny_models import upstream

    return upstream() / "convert_lora_to_gguf.py"


def timed(argv: list[str], repeats: int = 3) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True)
        out.append(time.perf_counter() - t)
        if proc.returncode not in (0, 2):
            raise SystemExit(f"{argv[:3]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return out


def main() -> None:
    from conftest import random_peft_adapter

    from sealq.models.hf import default_cache_root, load_training_model
    from sealq.models.registry import resolve_model
    from sealq.store import open_db

    model = resolve_model(None)
    hf, _ = load_training_model(model, default_cache_root())  # the cache folder is upstream's --base
    tmp = Path(tempfile.mkdtemp(prefix="sealq-startup-"))
    # upstream reads the base's config.json (hparams, architecture name) from a folder: the training model's
    hf_dir = tmp / "base"
    hf_dir.mkdir()
    hf.config.architectures = hf.config.architectures or ["LlamaForCausalLM"]
    hf.config.to_json_file(str(hf_dir / "config.json"))
    random_peft_adapter(hf, tmp / "peft", seed=0, r=16, lora_alpha=32)
    del hf
    open_db(tmp / "ws")  # an empty workspace for `sealq runs`
    script = upstream_converter()
    sealq = str(BIN / "sealq")
    commands = {
        "sealq convert": [sealq, "convert", str(tmp / "peft"), str(tmp / "ours.gguf")],
        "upstream convert_lora_to_gguf.py": [sys.executable, str(script), "--base", str(hf_dir), "--outfile",
                                             str(tmp / "theirs.gguf"), "--outtype", "f32", str(tmp / "peft")],
        "sealq ask": [sealq, "ask", "Who was the last keeper of the Varnholt Lighthouse?"],
        "sealq runs": [sealq, "runs", "--workspace", str(tmp / "ws")],
        "sealq --help": [sealq, "--help"],
        # what PEFT's own import costs (sealq convert parses adapter_config.json with PEFT): the bound of convert
        "python -c 'import peft'": [sys.executable, "-c", "import peft"],
    }
    times = {name: [] for name in commands}
    for _ in range(3):  # in turn, so a slow spell of the machine hits every command alike
        for name, argv in commands.items():
            times[name] += timed(argv, repeats=1)
    print(f"start-up, whole processes, median of 3 ({machine()}):")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:34s} {med:6.2f} s   (runs: {', '.join(f'{t:.2f}' for t in ts)})")
        record("startup", name, round(med, 3), "s", runs=[round(t, 3) for t in ts])
    ratio = statistics.median(times["upstream convert_lora_to_gguf.py"]) / statistics.median(times["sealq convert"])
    print(f"  sealq convert is {ratio:.2f}x upstream's speed (>1: faster)")
    record("startup", "convert speed vs upstream", round(ratio, 3), "x")


if __name__ == "__main__":
    main()
