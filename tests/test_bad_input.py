"""Every bad input of the reliability checklist, through the real CLI: one line naming the file, field or
option, exit code 2, no traceback, and nothing recorded. docs/errors.md is the table of these cases."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sqlite_utils
from click.testing import CliRunner

from sealq.cli import cli

GOOD = {"title": "T", "context": "Some passage text.", "questions": [{"question": "Q?", "answer": "A"}]}


def _data(tmp: Path, content) -> str:
    path = tmp / "data.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def _adapter(tmp: Path, out_rows: int = 999, cut: int | None = None) -> str:
    """A GGUF LoRA adapter whose lora_b does not fit this base (999 outputs), optionally truncated."""
    import gguf

    path = tmp / "adapter.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 8.0)
    w.add_tensor("blk.0.attn_q.weight.lora_a", np.zeros((4, 576), np.float32))
    w.add_tensor("blk.0.attn_q.weight.lora_b", np.zeros((out_rows, 4), np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()  # noqa: E702
    if cut:
        path.write_bytes(path.read_bytes()[:cut])
    return str(path)


def _odd_gguf(tmp: Path, name: str, arch="llama", kind=None, tensors=True) -> str:
    """A GGUF with hand-made metadata: ``arch``/``kind`` may be of any GGUF value type (lists, ints)."""
    import gguf

    path = tmp / f"{name}.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.kv_data[0].pop(gguf.Keys.General.ARCHITECTURE, None)
    w.add_key_value(gguf.Keys.General.ARCHITECTURE, arch,
                    gguf.GGUFValueType.ARRAY if isinstance(arch, list) else gguf.GGUFValueType.get_type(arch),
                    sub_type=gguf.GGUFValueType.UINT32 if isinstance(arch, list) else None)
    if kind is not None:
        w.add_key_value(gguf.Keys.General.TYPE, kind, gguf.GGUFValueType.get_type(kind))
    if tensors:
        w.add_tensor("token_embd.weight", np.zeros((8, 4), np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()  # noqa: E702
    return str(path)


def test_models_lists_odd_ggufs_as_unusable_rows(tmp_path):
    """Non-string metadata, a vocabulary-only file, damaged files: one "no" row each, never a traceback."""
    _odd_gguf(tmp_path, "arch-array", arch=[1, 2])
    _odd_gguf(tmp_path, "type-int", kind=7)
    _odd_gguf(tmp_path, "vocab-only", tensors=False)
    (tmp_path / "empty.gguf").write_bytes(b"")
    good = _odd_gguf(tmp_path, "plain-llama")
    result = CliRunner().invoke(cli, ["models", "--json", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = {Path(r["path"]).stem: r for r in json.loads(result.stdout)["found"]}
    assert rows[Path(good).stem]["usable"] and sum(r["usable"] for r in rows.values()) == 1, rows
    assert "not a string" in rows["arch-array"]["why_not"] and "not a string" in rows["type-int"]["why_not"]
    assert "token_embd" in rows["vocab-only"]["why_not"]
    table = CliRunner().invoke(cli, ["models", "--dir", str(tmp_path)])  # the table renders every row too,
    assert table.exit_code == 0 and "…" not in table.stdout, table.output  # paths folded, never cut short
    for name in ("arch-array", "type-int"):
        r = CliRunner().invoke(cli, ["loop", "--model", str(tmp_path / f"{name}.gguf")])
        lines = r.stderr.strip().splitlines()
        assert r.exit_code == 2 and len(lines) == 1 and "not a string" in lines[0], r.output


def _other_arch(tmp: Path) -> str:
    """A GGUF model of an architecture sealq does not support (gpt2)."""
    return _odd_gguf(tmp, "gpt2", arch="gpt2")


def _without_chat_template() -> str:
    """The default GGUF without ``tokenizer.chat_template`` (as older converters and base models write it)."""
    return _with_chat_template(None)


@functools.cache
def _with_chat_template(template: str | None) -> str:
    """The default GGUF with ``tokenizer.chat_template`` replaced (None: removed), copied with gguf-py:
    every other key and every tensor byte for byte."""
    import atexit
    import shutil
    import tempfile

    import gguf

    from sealq.models.registry import resolve_model

    reader = gguf.GGUFReader(str(resolve_model(None).path))
    folder = Path(tempfile.mkdtemp(prefix="sealq-chat-template-"))
    atexit.register(shutil.rmtree, folder, True)  # ~100 MB each
    path = folder / "odd-chat-template.gguf"
    writer = gguf.GGUFWriter(str(path), reader.fields[gguf.Keys.General.ARCHITECTURE].contents())
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in (gguf.Keys.General.ARCHITECTURE,
                                                             gguf.Keys.Tokenizer.CHAT_TEMPLATE):
            continue
        sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), field.types[0], sub_type=sub)
    for t in reader.tensors:
        writer.add_tensor(t.name, t.data, raw_shape=t.data.shape, raw_dtype=t.tensor_type)
    if template is not None:
        writer.add_chat_template(template)
    writer.write_header_to_file(); writer.write_kv_data_to_file(); writer.write_tensors_to_file(); writer.close()  # noqa: E702
    return str(path)


def _llama_without(tmp: Path, missing: str) -> str:
    """A llama GGUF model whose metadata lacks ``missing`` (head_count is 9, block_count 30 otherwise)."""
    import gguf

    path = tmp / "odd.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_type(gguf.GGUFType.MODEL)
    for key, value in (("llama.block_count", 30), ("llama.attention.head_count", 9)):
        if key != missing:
            w.add_uint32(key, value)
    if missing == "llama.attention.head_count_kv":
        w.add_array(missing, [3] * 30)  # per-layer KV heads, as some converters write
    w.add_tensor("token_embd.weight", np.zeros((8, 4), np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()  # noqa: E702
    return str(path)


def _case(name: str) -> str:
    path = CASES_DIR / name
    if not path.exists():
        pytest.skip(f"{path} not found (../shared beside the clone)")
    return str(path)


CASES_DIR = Path(__file__).resolve().parents[2] / "shared" / "cases"
NO_CHAT = "the GGUF has no tokenizer.chat_template; sealq formats every prompt with the model's own chat template"
LONG = {"title": "Long", "context": " ".join(["word"] * 3000), "questions": [{"question": "Q?", "answer": "A"}]}

# (case id, argv builder given a temporary folder, text the one error line must contain)
CASES = [
    ("data-missing", lambda t: ["loop", "--data", str(t / "nope.json")], "cannot read data file (No such file"),
    ("data-is-a-folder", lambda t: ["loop", "--data", str(t)], "is a directory"),
    ("malformed-json", lambda t: ["loop", "--data", _data(t, '[{"title": "T",')], "malformed JSON at line 1"),
    ("not-utf8", lambda t: ["loop", "--data", _data(t, b'[{"title": "\xff\xfe"}]')], "not UTF-8 text (byte 12)"),
    ("not-a-dataset", lambda t: ["loop", "--data", _data(t, {"rows": []})], "not a SQuAD-style dataset"),
    ("missing-title", lambda t: ["loop", "--data", _data(t, [{k: v for k, v in GOOD.items() if k != "title"}])],
     "passage 0: missing field 'title'"),
    ("missing-context", lambda t: ["loop", "--data", _data(t, [{k: v for k, v in GOOD.items() if k != "context"}])],
     "passage 0: missing field 'context'"),
    ("missing-questions", lambda t: ["loop", "--data", _data(t, [{k: v for k, v in GOOD.items() if k != "questions"}])],
     "passage 0: missing field 'questions'"),
    ("missing-answer", lambda t: ["loop", "--data", _data(t, [{**GOOD, "questions": [{"question": "Q?"}]}])],
     "passage 0 question 0: missing field 'answer'"),
    ("empty-passage", lambda t: ["loop", "--data", _data(t, [{**GOOD, "context": "  "}])],
     "passage 0.context: expected a non-empty string, got an empty string"),
    ("empty-question", lambda t: ["loop", "--data", _data(t, [{**GOOD, "questions": [{"question": "", "answer": "A"}]}])],
     "question 0.question: expected a non-empty string"),
    ("passage-too-long", lambda t: ["loop", "--data", _data(t, [LONG])],
     "passage 0 ('Long'), rewrite self-edit: the prompt needs "),
    ("question-too-long", lambda t: ["loop", "--data", _case("question-too-long.json")],
     "passage 0 ('Tarnwick Guild'), question 0 ('Considering the detail number 0 of the record, the detail...'), "
     "answer prompt with the passage: the prompt needs "),
    ("title-too-long", lambda t: ["eval", "--data", _case("title-too-long.json")],
     "), rewrite self-edit: the prompt needs "),
    ("question-too-long-ask", lambda t: ["ask", "Why? " * 3000], "the prompt needs "),
    ("base-without-block-count", lambda t: ["convert", _case("adapter-no-alpha"), str(t / "o.gguf"), "--base",
                                            _llama_without(t, "llama.block_count")],
     "metadata llama.block_count is None, expected a positive integer"),
    ("base-with-per-layer-kv-heads", lambda t: ["convert", _case("adapter-no-alpha"), str(t / "o.gguf"), "--base",
                                                _llama_without(t, "llama.attention.head_count_kv")],
     "metadata llama.attention.head_count_kv is [3, 3,"),
    ("no-chat-template-loop", lambda t: ["loop", "--model", _without_chat_template()], NO_CHAT),
    ("no-chat-template-restem", lambda t: ["loop", "--model", _without_chat_template(), "--rounds", "1",
                                           "--holdout-fraction", "0.5"], NO_CHAT),
    ("chat-template-broken", lambda t: ["loop", "--model", _with_chat_template("{% for m in messages %}{{ m.content }")],
     "the GGUF's tokenizer.chat_template cannot format a chat (TemplateSyntaxError"),
    ("chat-template-refuses-assistant", lambda t: ["ask", "Q?", "--model", _with_chat_template(
        "{% for m in messages %}{% if m.role == 'assistant' %}{{ raise_exception('no assistant turns') }}"
        "{% endif %}{{ m.content }}{% endfor %}")],
     "cannot format a chat (ValueError: no assistant turns)"),
    ("chat-template-renders-nothing", lambda t: ["loop", "--model", _with_chat_template("{% if false %}x{% endif %}")],
     "tokenizer.chat_template leaves the user's message out of the prompt"),
    ("chat-template-needs-history", lambda t: ["ask", "Q?", "--model", _with_chat_template(
        "{% if messages|length == 1 %}{{ raise_exception('need history') }}{% endif %}"
        "{% for m in messages %}{{ m.content }}{% endfor %}")],
     "cannot format a chat (ValueError: need history)"),
    ("ask-question-not-unicode", lambda t: ["ask", "caf\udce9?"], "the question is not valid UTF-8 text (surrogates not allowed at character 3)"),
    ("ask-max-tokens-too-large-for-question", lambda t: ["ask", "Why? " * 600, "--max-tokens", "1024"],
     "(or lower --max-tokens)"),
    ("no-chat-template-ask", lambda t: ["ask", "Q?", "--model", _without_chat_template()], NO_CHAT),
    ("k-zero", lambda t: ["loop", "--k", "0"], "--k must be at least 1, got 0"),
    ("k-negative", lambda t: ["eval", "--k", "-2"], "--k must be at least 1, got -2"),
    ("passages-zero", lambda t: ["loop", "--passages", "0"], "--passages must be at least 1"),
    ("seeds-zero", lambda t: ["eval", "--seeds", "0"], "--seeds must be at least 1"),
    ("lr-out-of-bounds", lambda t: ["loop", "--lr", "1"], "--lr must be in 1e-05-0.003, got 1"),
    ("not-a-number", lambda t: ["loop", "--k", "three"], "'three' is not a valid integer"),
    ("model-missing", lambda t: ["loop", "--model", str(t / "m.gguf")], "no such file and not a known model"),
    ("model-not-gguf", lambda t: ["loop", "--model", _data(t, "hello")], "not a GGUF file"),
    ("model-is-an-adapter", lambda t: ["loop", "--model", _adapter(t)], "a GGUF adapter, not a base model"),
    ("model-other-architecture", lambda t: ["loop", "--model", _other_arch(t)],
     "unsupported architecture 'gpt2' (sealq supports llama, qwen2, qwen3, gemma3)"),
    ("convert-base-other-architecture", lambda t: ["convert", str(t), str(t / "o.gguf"), "--base", _other_arch(t)],
     "unsupported architecture 'gpt2' (sealq supports llama, qwen2, qwen3, gemma3)"),
    ("adapter-for-another-base", lambda t: ["ask", "Q?", "--adapter", _adapter(t)], "adapter for another base"),
    ("adapter-corrupted", lambda t: ["ask", "Q?", "--adapter", _adapter(t, cut=300)], "not a readable GGUF adapter"),
    ("resume-unknown-run", lambda t: ["loop", "--resume", "NOPE"], "no run 'NOPE' in runs.db"),
    ("resume-empty-run-id", lambda t: ["loop", "--resume", ""], "empty run id"),
    ("restem-options-without-rounds", lambda t: ["loop", "--holdout-fraction", "0.5", "--policy-lr", "1e-4"],
     "--holdout-fraction, --policy-lr: only used by the ReST-EM outer loop; add --rounds R"),
    ("holdout-leaves-nothing-to-train", lambda t: ["loop", "--rounds", "1", "--holdout-fraction", "0.99"],
     "--holdout-fraction 0.99 holds out every title (8); nothing is left to train on"),
    ("rounds-too-many", lambda t: ["loop", "--rounds", "101", "--holdout-fraction", "0.5"], "--rounds must be in 0-100"),
    ("teacher-missing-field", lambda t: ["eval", "--teacher", _data(t, [{"title": "T", "context": "C"}])],
     "record 0: missing field 'completions'"),
    ("workspace-is-a-file", lambda t: ["loop", "--workspace", _data(t, "x")], "is a file"),
    ("workspace-cannot-be-created", lambda t: ["loop", "--workspace", "/sys/kernel/sealq-ws"], "cannot create"),
]


@pytest.mark.parametrize("case, argv, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, argv, message, tmp_path, workspace):
    result = CliRunner().invoke(cli, argv(tmp_path))
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    errors = [x for x in lines if x.startswith("Error: ")]
    # one error line, last; before it at most the progress line of a model that was loaded
    assert len(errors) == 1 and lines[-1] == errors[0] and message in errors[0], result.stderr
    assert len(lines) == 1 or (len(lines) == 2 and lines[0].startswith("loading ") and
                               lines[0].endswith(" into llama.cpp")), result.stderr
    if (workspace / "runs.db").exists():
        assert sqlite_utils.Database(str(workspace / "runs.db"))["runs"].count == 0


def test_truncated_real_model_on_the_cli(tmp_path, model):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(model.path.read_bytes()[: 1 << 20])
    result = CliRunner().invoke(cli, ["loop", "--model", str(cut)])
    assert result.exit_code == 2 and "not a readable GGUF model" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_read_only_workspace(tmp_path):
    """A folder the user cannot write. Not root: a real folder made read-only. Root may write anywhere
    except where the kernel refuses, so as root (CI) the folder is /sys/kernel, where no one can create a
    file: the check must make a real write, since os.access() says yes to root."""
    if os.geteuid() == 0:
        ws = Path("/sys/kernel")
        if not ws.is_dir():
            pytest.skip("no /sys/kernel here")
    else:
        ws = tmp_path / "ro"
        ws.mkdir()
        os.chmod(ws, 0o555)
    before = sorted(os.listdir(ws))
    proc = subprocess.run([str(Path(sys.executable).parent / "sealq"), "loop", "--workspace", str(ws)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"Error: workspace {ws}: not writable (Permission denied)"
    assert sorted(os.listdir(ws)) == before
