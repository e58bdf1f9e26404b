from sealq.convert.lora_gguf import ConvertResult, convert_peft_to_gguf

__all__ = ["convert_peft_to_gguf", "ConvertResult"]
