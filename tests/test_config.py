"""The settings dataclasses (sealq.engine.config): every validation message, frozen instances, and the
JSON round trip ``sealq loop --resume`` relies on. No model needed."""

from __future__ import annotations

import dataclasses
import json

import pytest

from sealq.engine.config import (
    DEFAULT_EDIT_TYPES,
    EDIT_TYPES,
    PAPER_EDIT_TYPES,
    PAPER_TEMPERATURE,
    Directive,
    DirectiveBounds,
    EvalConfig,
    LoopConfig,
    PolicyConfig,
    SelfEditConfig,
    TrainConfig,
)
from sealq.errors import SealqError
from sealq.vocab import LINEAR_TARGETS

pytestmark = pytest.mark.unit  # no model: the unit tier (tests/conftest.py)


def _message(make) -> str:
    with pytest.raises(SealqError) as e:
        make()
    return str(e.value)


SELFEDIT_ERRORS = [
    (dict(k=-1), "--k must be at least 1, got -1"),
    (dict(edit_types=()), "--edit-type: at least one edit type is needed"),
    (dict(edit_types=("rewrite", "poem")),
     "--edit-type: unknown edit type 'poem' (choose from implications, implications-long, implications-very-long, rewrite, self-qa)"),
    (dict(temperature=-0.5), "--temperature must be in [0, 5], got -0.5"),
    (dict(temperature=5.5), "--temperature must be in [0, 5], got 5.5"),
    (dict(top_p=0), "--top-p must be in (0, 1], got 0"),
    (dict(top_p=1.5), "--top-p must be in (0, 1], got 1.5"),
    (dict(max_tokens=15), "self-edit max_tokens must be >= 16, got 15"),
    (dict(directives="on"), "--directives must be 'model' or 'off', got 'on'"),
    (dict(min_grounding=-0.1), "--min-grounding must be in [0, 1], got -0.1"),
    (dict(min_grounding=1.5), "--min-grounding must be in [0, 1], got 1.5"),
    (dict(train_on="passage"), "--train-on must be one of items+passage, items, got 'passage'"),
]


@pytest.mark.parametrize("kwargs, message", SELFEDIT_ERRORS, ids=[m for _, m in SELFEDIT_ERRORS])
def test_selfedit_config_errors(kwargs, message):
    assert _message(lambda: SelfEditConfig(**kwargs)) == message


TRAIN_ERRORS = [
    (dict(default=Directive(epochs=0)), "--epochs must be in 1-10, got 0"),
    (dict(default=Directive(epochs=11)), "--epochs must be in 1-10, got 11"),
    (dict(default=Directive(lr=1.0)), "--lr must be in 1e-05-0.003, got 1"),
    (dict(default=Directive(lr=1e-6)), "--lr must be in 1e-05-0.003, got 1e-06"),
    (dict(default=Directive(rank=5)), "--rank must be one of 4, 8, 16, 32, got 5"),
    (dict(default=Directive(rank=64)), "--rank must be one of 4, 8, 16, 32, got 64"),
    (dict(default=Directive(rank=64), bounds=DirectiveBounds(ranks=(4, 8))), "--rank must be one of 4, 8, got 64"),
    (dict(batch_tokens=15), "batch_tokens must be >= 16, got 15"),
    (dict(max_seq_tokens=15), "max_seq_tokens must be >= 16, got 15"),
    (dict(warmup_fraction=1.0), "warmup_fraction must be in [0, 1), got 1.0"),
    (dict(warmup_fraction=-0.1), "warmup_fraction must be in [0, 1), got -0.1"),
]


@pytest.mark.parametrize("kwargs, message", TRAIN_ERRORS, ids=[m for _, m in TRAIN_ERRORS])
def test_train_config_errors(kwargs, message):
    assert _message(lambda: TrainConfig(**kwargs)) == message


POLICY_ERRORS = [
    (dict(epochs=0), "--policy-epochs must be in 1-20, got 0"),
    (dict(epochs=21), "--policy-epochs must be in 1-20, got 21"),
    (dict(lr=1.0), "--policy-lr must be in 1e-06-0.01, got 1"),
    (dict(lr=1e-7), "--policy-lr must be in 1e-06-0.01, got 1e-07"),
    (dict(rank=2), "--policy-rank must be one of 4, 8, 16, 32, 64, got 2"),
    (dict(rank=128), "--policy-rank must be one of 4, 8, 16, 32, 64, got 128"),
]


@pytest.mark.parametrize("kwargs, message", POLICY_ERRORS, ids=[m for _, m in POLICY_ERRORS])
def test_policy_config_errors(kwargs, message):
    assert _message(lambda: PolicyConfig(**kwargs)) == message


RESTEM = dict(rounds=1, holdout_fraction=0.25)

LOOP_ERRORS = [
    (dict(selfedit=SelfEditConfig(k=0)),
     "--k must be at least 1, got 0 (0: only with passage-only or teacher steps)"),
    (dict(passages=0), "--passages must be at least 1, got 0"),
    (dict(seeds=0), "--seeds must be at least 1, got 0"),
    (dict(rounds=-1), "--rounds must be in 0-100, got -1"),
    (dict(rounds=101, holdout_fraction=0.25), "--rounds must be in 0-100, got 101"),
    (dict(rounds=1, holdout_fraction=1.0), "--holdout-fraction must be in (0, 1), got 1.0"),
    (dict(rounds=1, holdout_fraction=0.0), "--holdout-fraction must be in (0, 1), got 0.0"),
    (dict(**RESTEM, holdout_passages=0), "--holdout-passages must be at least 1, got 0"),
    (dict(rounds=1, holdout="h.json", holdout_fraction=0.25), "give --holdout or --holdout-fraction, not both"),
    (dict(rounds=1), "--rounds needs held-out passages: --holdout FILE or --holdout-fraction F"),
    (dict(**RESTEM, passage_only=True), "--rounds is a `sealq loop` option"),
    (dict(**RESTEM, teacher="t.json"), "--rounds is a `sealq loop` option"),
    # ReST-EM-only options without --rounds
    (dict(holdout="h.json"), "--holdout: only used by the ReST-EM outer loop; add --rounds R"),
    (dict(holdout_fraction=0.25), "--holdout-fraction: only used by the ReST-EM outer loop; add --rounds R"),
    (dict(holdout_passages=3), "--holdout-passages: only used by the ReST-EM outer loop; add --rounds R"),
    (dict(policy=PolicyConfig(epochs=3)), "--policy-epochs: only used by the ReST-EM outer loop; add --rounds R"),
    (dict(policy=PolicyConfig(lr=1e-4)), "--policy-lr: only used by the ReST-EM outer loop; add --rounds R"),
    (dict(policy=PolicyConfig(rank=8)), "--policy-rank: only used by the ReST-EM outer loop; add --rounds R"),
    (dict(holdout_fraction=0.5, holdout_passages=2, policy=PolicyConfig(epochs=3, lr=1e-4, rank=8)),
     "--holdout-fraction, --holdout-passages, --policy-epochs, --policy-lr, --policy-rank: "
     "only used by the ReST-EM outer loop; add --rounds R"),
]


@pytest.mark.parametrize("kwargs, message", LOOP_ERRORS, ids=[m for _, m in LOOP_ERRORS])
def test_loop_config_errors(kwargs, message):
    assert _message(lambda: LoopConfig(**kwargs)) == message


def test_valid_configs_are_accepted():
    """The boundaries of each range, k = 0 with another trained condition, every ReST-EM option with --rounds."""
    SelfEditConfig(k=0, temperature=0, top_p=1, max_tokens=16)
    SelfEditConfig(temperature=5)
    TrainConfig(default=Directive(epochs=1, lr=1e-5, rank=4), batch_tokens=16, max_seq_tokens=16, warmup_fraction=0)
    TrainConfig(default=Directive(epochs=10, lr=3e-3, rank=32))
    PolicyConfig(epochs=1, lr=1e-6, rank=4)
    PolicyConfig(epochs=20, lr=1e-2, rank=64)
    assert LoopConfig(selfedit=SelfEditConfig(k=0), passage_only=True).selfedit.k == 0
    assert LoopConfig(selfedit=SelfEditConfig(k=0), teacher="t.json").selfedit.k == 0
    LoopConfig(rounds=100, holdout="h.json", holdout_passages=1, policy=PolicyConfig(epochs=3, lr=1e-4, rank=8))
    LoopConfig(rounds=1, holdout_fraction=0.99)
    # policy options at their defaults are not "given"
    LoopConfig(policy=PolicyConfig(epochs=PolicyConfig.epochs, lr=PolicyConfig.lr, rank=PolicyConfig.rank))


def test_defaults():
    c = LoopConfig()
    # the dev sweep's choice (docs/notes/2026-12-02-what-self-edit-recipe-teaches-best.md); continual and learn keep SEAL's prompt and temperature
    assert (c.selfedit.edit_types, c.selfedit.temperature) == (DEFAULT_EDIT_TYPES, 0.3) == (("rewrite",), 0.3)
    assert (PAPER_EDIT_TYPES, PAPER_TEMPERATURE) == (("implications",), 0.8)
    assert c.train.targets == LINEAR_TARGETS
    assert set(DEFAULT_EDIT_TYPES) | set(PAPER_EDIT_TYPES) <= set(EDIT_TYPES)
    assert c.rounds == 0 and c.seeds == 1 and not c.passage_only and c.teacher is None
    assert SelfEditConfig(edit_types=["rewrite"]).edit_types == ("rewrite",)  # a list from JSON or click


def _every_config() -> list:
    return [Directive(), DirectiveBounds(), SelfEditConfig(), TrainConfig(), EvalConfig(), PolicyConfig(), LoopConfig()]


@pytest.mark.parametrize("config", _every_config(), ids=lambda c: type(c).__name__)
def test_configs_are_frozen(config):
    for f in dataclasses.fields(config):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(config, f.name, getattr(config, f.name))


def test_nested_configs_cannot_be_changed_through_the_loop_config():
    c = LoopConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.selfedit.k = 7
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.train.default.epochs = 3
    with pytest.raises(AttributeError):  # a tuple, not a list: no in-place change either
        c.selfedit.edit_types.append("rewrite")
    assert c == LoopConfig()
    changed = dataclasses.replace(c, seed=5)  # the way to get a different config
    assert changed.seed == 5 and c.seed == 0


def _non_default() -> LoopConfig:
    return LoopConfig(
        model="/models/m.gguf", data="/data/d.json", passages=3, seed=7, keep_adapters=True, seeds=2, rounds=2,
        holdout="/data/h.json", holdout_passages=4, policy=PolicyConfig(epochs=3, lr=5e-4, rank=32, max_seq_tokens=512),
        selfedit=SelfEditConfig(k=4, edit_types=("self-qa", "rewrite"), temperature=0.5, top_p=0.9, max_tokens=128,
                                max_items=6, directives="off"),
        train=TrainConfig(default=Directive(epochs=3, lr=1e-3, rank=8),
                          bounds=DirectiveBounds(epochs=(1, 5), lr=(1e-4, 2e-3), ranks=(8, 16)), batch_tokens=64,
                          targets=("q_proj", "v_proj"), max_seq_tokens=256, warmup_fraction=0.2, threads=2),
        eval=EvalConfig(max_tokens=32, n_ctx=1024, threads=1),
    )


@pytest.mark.parametrize("config", [LoopConfig(), _non_default(),
                                    LoopConfig(selfedit=SelfEditConfig(k=0), passage_only=True, teacher="/t.json")],
                         ids=["default", "non-default", "eval"])
def test_to_dict_from_dict_round_trip(config):
    d = config.to_dict()
    assert LoopConfig.from_dict(d) == config
    # through JSON, as stored in runs.config_json (tuples come back as lists)
    stored = json.loads(json.dumps(d))
    back = LoopConfig.from_dict(stored)
    assert back == config and back.to_dict() == d
    assert isinstance(back.selfedit.edit_types, tuple) and isinstance(back.train.targets, tuple)
    assert isinstance(back.train.bounds.ranks, tuple) and isinstance(back.train.bounds.epochs, tuple)
    assert stored == json.loads(json.dumps(d))  # from_dict did not change its argument


def test_from_dict_of_a_config_stored_before_policies_existed():
    d = json.loads(json.dumps(LoopConfig().to_dict()))
    del d["policy"]
    assert LoopConfig.from_dict(d) == LoopConfig()


def _stored(**change) -> dict:
    d = json.loads(json.dumps(LoopConfig().to_dict()))
    for path, value in change.items():
        *parents, leaf = path.split("__")
        node = d
        for p in parents:
            node = node[p]
        if value is _DELETE:
            del node[leaf]
        else:
            node[leaf] = value
    return d


_DELETE = object()

BAD_STORED = [
    ("not-a-dict-none", None),
    ("not-a-dict-list", [1, 2]),
    ("not-a-dict-string", "config"),
    ("missing-selfedit", _stored(selfedit=_DELETE)),
    ("missing-train", _stored(train=_DELETE)),
    ("missing-eval", _stored(eval=_DELETE)),
    ("missing-train-default", _stored(train__default=_DELETE)),
    ("missing-bounds-field", _stored(train__bounds__ranks=_DELETE)),
    ("unknown-top-level-field", _stored(temperature=0.3)),
    ("unknown-selfedit-field", _stored(selfedit__beam=4)),
    ("unknown-directive-field", _stored(train__default__momentum=0.9)),
    ("selfedit-not-a-dict", _stored(selfedit=[1])),
    ("train-not-a-dict-list", _stored(train=[1, 2])),
    ("train-is-a-string", _stored(train="fast")),
    ("default-not-a-dict", _stored(train__default=8)),
    ("bounds-not-a-dict", _stored(train__bounds=[1, 10])),
    ("bounds-epochs-not-a-list", _stored(train__bounds__epochs=10)),
    ("targets-not-a-list", _stored(train__targets=None)),
    ("policy-not-a-dict", _stored(policy=3)),
    ("eval-not-a-dict", _stored(eval="x")),
    # values of the wrong type or out of range: the same error type, never a bare TypeError / ValueError
    ("k-is-text", _stored(selfedit__k="three")),
    ("k-negative", _stored(selfedit__k=-1)),
    ("epochs-is-text", _stored(train__default__epochs="8")),
    ("rounds-without-holdout", _stored(rounds=2)),
]


@pytest.mark.parametrize("stored", [s for _, s in BAD_STORED], ids=[i for i, _ in BAD_STORED])
def test_from_dict_of_a_bad_dict_raises_sealq_error(stored):
    with pytest.raises(SealqError) as e:
        LoopConfig.from_dict(stored)
    assert "\n" not in str(e.value)


def test_precision_is_checked_against_this_cpu():
    """--precision: fp32 everywhere; bf16 only where the CPU has native bfloat16, refused in one line
    elsewhere; auto resolves to what this CPU has; anything else is refused."""
    from sealq.cores import bf16_supported
    from sealq.engine.config import resolve_precision

    assert TrainConfig(precision="fp32").precision == "fp32"
    assert resolve_precision("auto") == ("bf16" if bf16_supported() else "fp32")
    assert resolve_precision("fp32") == "fp32"
    if bf16_supported():
        assert TrainConfig(precision="bf16").precision == "bf16"
    else:
        with pytest.raises(SealqError, match=r"^--precision bf16: this CPU has no native bfloat16"):
            TrainConfig(precision="bf16")
    with pytest.raises(SealqError, match=r"^--precision must be one of auto, fp32, bf16, got 'fp16'$"):
        TrainConfig(precision="fp16")
    with pytest.raises(SealqError, match="--precision must be one of"):
        TrainConfig(precision="auto")  # resolved before it is stored: a run's config says what it used
    stored = LoopConfig(train=TrainConfig(precision="fp32")).to_dict()
    del stored["train"]["precision"]  # a run recorded before --precision existed trained in fp32
    assert LoopConfig.from_dict(stored).train.precision == "fp32"
