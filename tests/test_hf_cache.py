"""The dequantized training model is cached by the GGUF's sha256: identical when warm, rebuilt when the file changes."""

import shutil

from sealq.models.hf import load_training_model
from sealq.models.registry import resolve_model


def test_warm_load_equals_cold_and_a_changed_file_misses(model, tmp_path):
    cache = tmp_path / "cache"
    cold, hit1 = load_training_model(model, cache)
    warm, hit2 = load_training_model(model, cache)
    assert (hit1, hit2) == (False, True)
    a, b = cold.state_dict(), warm.state_dict()
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert warm.lm_head.weight.data_ptr() == warm.model.embed_tokens.weight.data_ptr()  # still tied
    assert not hasattr(warm.config, "quantization_config")

    changed = tmp_path / "changed.gguf"
    shutil.copy(model.path, changed)
    with open(changed, "ab") as f:  # trailing bytes: same weights, different file, different sha256
        f.write(b"\0" * 64)
    _, hit3 = load_training_model(resolve_model(str(changed)), cache)
    assert hit3 is False
    assert len(list((cache / "hf").iterdir())) == 2
