"""``sealq convert``: a PEFT LoRA adapter folder -> a GGUF LoRA adapter for llama.cpp."""

from __future__ import annotations

import click

from sealq.cli.main import cli
from sealq.convert.lora_gguf import OUTTYPES
from sealq.models.registry import DEFAULT_MODEL


@cli.command()
@click.argument("adapter_dir", type=click.Path(file_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--base", default=DEFAULT_MODEL, show_default=True,
              help="The base model the adapter was trained on: a known name or a GGUF path (llama, qwen2, qwen3, gemma3).")
@click.option("--outtype", type=click.Choice(OUTTYPES), default="f32", show_default=True,
              help="Tensor type of lora_a/lora_b in the output.")
def convert(adapter_dir, out, base, outtype):
    """Convert a PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors) to GGUF.

    The output loads with llama.cpp's --lora, llama-cpp-python's Llama(lora_path=...) and `sealq ask
    --adapter`. DoRA, modules_to_save and non-linear targets are refused.
    """
    from pathlib import Path

    from sealq.convert import convert_peft_to_gguf
    from sealq.errors import SealqError
    from sealq.models.registry import resolve_model

    if not Path(adapter_dir).is_dir():
        raise SealqError(f"{adapter_dir}: no such adapter folder")
    model = resolve_model(base)
    result = convert_peft_to_gguf(adapter_dir, out, model.path, outtype=outtype)
    if result.peft_alpha == 0:
        click.echo(f"Warning: {adapter_dir}: lora_alpha is 0, so PEFT scales this adapter by 0 and it changes "
                   f"nothing; written as alpha {result.alpha:g} with every lora_b = 0 (llama.cpp reads alpha 0 as "
                   "no scaling)", err=True)
    click.echo(f"wrote {result.path}: {result.n_pairs} LoRA tensor pairs, alpha {result.alpha:g}, "
               f"{outtype}, {result.seconds:.2f} s")
