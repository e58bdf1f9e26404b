"""The whole loop on the real model at small settings: every stage recorded, a fictional fact learned."""

import json
from pathlib import Path

import pytest
import sqlite_utils
from click.testing import CliRunner

from sealq.cli import cli
from sealq.engine.config import Directive, LoopConfig, SelfEditConfig, TrainConfig
from sealq.engine.directive import parse_directive
from sealq.engine.loop import run_loop
from sealq.vocab import Condition, Source

STAGES = {"load_training_model", "baseline", "ceiling", "generate_self_edit", "generate_directive", "tokenize",
          "train", "convert", "evaluate"}


def test_every_stage_has_rows(cli_run):
    ws, summary = cli_run
    db = sqlite_utils.Database(str(ws / "runs.db"))
    (run,) = list(db["runs"].rows)
    assert run["status"] == "done" and run["id"] == summary["run_id"] and run["finished_utc"] and run["duration_ms"] > 0
    assert len(run["model_sha256"]) == 64 and json.loads(run["versions_json"])["llama-cpp-python"]
    assert json.loads(run["config_json"])["selfedit"]["k"] == 2
    assert db["passages"].count == 1 and db["questions"].count == 5
    edits = list(db["self_edits"].rows)
    assert [e["edit_type"] for e in edits] == ["implications", "self-qa"]
    assert {(e["source"], e["seed_idx"]) for e in edits} == {(Source.SELF_EDIT, 0)}
    assert [e["sample_idx"] for e in edits] == [0, 1]
    ok = [e for e in edits if e["status"] == "ok"]
    assert ok, "at least one self-edit must have usable items"
    train = LoopConfig.from_dict(json.loads(run["config_json"])).train
    assert train.default == Directive(epochs=2)  # --epochs 2, the other fields at their defaults
    adapters = {a["self_edit_id"]: a for a in db["adapters"].rows}
    for e in ok:
        assert e["text"] and json.loads(e["items_json"]) and e["directive_raw"].startswith("epochs=")
        # what was recorded is what parsing the model's directive under the run's default and bounds gives:
        # the directive used, and per field that fell back to the default, why
        parsed = parse_directive(e["directive_raw"], train.default, train.bounds)
        assert json.loads(e["directive_json"]) == {"epochs": parsed.directive.epochs, "lr": parsed.directive.lr,
                                                   "rank": parsed.directive.rank}
        assert json.loads(e["directive_fallback_json"]) == parsed.fallbacks
        # and the adapter was trained with exactly that directive (alpha = 2 rank)
        a = adapters[e["id"]]
        assert (a["epochs"], a["lr"], a["rank"], a["alpha"]) == (parsed.directive.epochs, parsed.directive.lr,
                                                                 parsed.directive.rank, 2 * parsed.directive.rank)
    for e in edits:
        if e["status"] != "ok":  # nothing usable: nothing trained, reward 0
            assert e["id"] not in adapters and e["reward"] == 0 and e["skip_reason"]
    assert sum(e["is_best"] for e in edits) == 1
    assert len(adapters) == len(ok)
    for a in adapters.values():
        assert a["tokens_trained"] > 0 and a["final_loss"] > 0 and a["train_seconds"] > 0 and len(a["gguf_sha256"]) == 64
        # the best self-edit's adapter is kept in both forms; the others are deleted
        assert Path(a["gguf_path"]).exists() == bool(a["kept"])
        assert (Path(a["peft_path"]) / "adapter_model.safetensors").exists() == bool(a["kept"])
    conditions = {r["condition"]: r["n"] for r in db.query("select condition, count(*) n from answers group by condition")}
    assert conditions == {Condition.NO_CONTEXT: 5, Condition.WITH_CONTEXT: 5, Condition.SELF_EDIT: 5 * len(ok)}
    assert {r["stage"] for r in db["timings"].rows} == STAGES
    assert summary["conditions"]["no_context"]["n"] == 5 and summary["self_edits"] == 2


def test_fictional_facts_are_learned(tmp_path, cache_root):
    """Best-of-K accuracy without the passage beats the base model, which cannot know invented facts."""
    config = LoopConfig(passages=2, seed=0,
                        selfedit=SelfEditConfig(k=2, edit_types=("rewrite",), directives="off"),
                        train=TrainConfig(default=Directive(epochs=8, lr=2e-3, rank=16)))
    summary = run_loop(config, tmp_path)
    c = summary["conditions"]
    assert c["no_context"]["contains"] == 0.0
    assert c["best_of_k"]["contains"] > c["no_context"]["contains"] + 0.2
    assert c["mean_self_edit"]["contains"] > c["no_context"]["contains"]
    assert summary["directive_fallbacks"] == 0  # --directives off: fixed settings, not fallbacks


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "/nonexistent.json"], "cannot read data file"),
        (["--model", "/nonexistent.gguf"], "no such file and not a known model"),
        (["--k", "0"], "--k must be at least 1"),
        (["--passages", "0"], "--passages must be at least 1"),
        (["--epochs", "99"], "--epochs must be in"),
        (["--rank", "5"], "--rank must be one of"),
        (["--temperature", "-1"], "--temperature must be in"),
        (["--edit-type", "poem"], "'poem' is not one of"),
        (["--k", "three"], "'three' is not a valid integer"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_records_nothing(args, message, workspace):
    result = CliRunner().invoke(cli, ["loop", *args])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0]
    assert not (workspace / "runs.db").exists() or sqlite_utils.Database(str(workspace / "runs.db"))["runs"].count == 0


def test_models_command():
    result = CliRunner().invoke(cli, ["models", "--json"], catch_exceptions=False)
    out = json.loads(result.stdout)
    (m,) = out["known"]
    assert m["name"] == "smollm2-135m" and m["installed"] and m["default"]
    assert [a["architecture"] for a in out["architectures"]] == ["llama", "qwen2", "qwen3", "gemma3"]
