"""sealq: a small language model teaches itself new passages on a CPU (SEAL, Zweiger et al. 2025,
arXiv 2506.10943), as a command (``sealq``) and as this Python API.

Run the loop and read the results::

    from sealq import LoopConfig, SelfEditConfig, run_loop, open_db, summarize
    summary = run_loop(LoopConfig(passages=2, selfedit=SelfEditConfig(k=2)), workspace="ws")

Continual self-edits (a forgetting matrix per gate)::

    from sealq import ContinualConfig, LoopConfig, run_continual
    summary = run_continual(ContinualConfig(loop=LoopConfig(), sequences=2, length=3,
                                            gates=("none", "retention:0.1", "kl:0.3")), workspace="ws")

Learn a plain document with the model's own probe questions (then ``sealq ask --run``, ``sealq export``)::

    from sealq import LearnConfig, LoopConfig, run_learn
    summary = run_learn(LearnConfig(loop=LoopConfig(), files=("notes.md",)), workspace="ws")

Or one inner step by hand (a self-edit, its LoRA, the answers after it; nothing is recorded)::

    from pathlib import Path
    from sealq import LoopConfig, StepInput, inner_step, load_models, load_passages, Source, Score
    config = LoopConfig()
    models = load_models(config)
    result = inner_step(StepInput(load_passages()[0], Source.SELF_EDIT, seed=0, baseline=Score(0, 0, 0),
                                  out_dir=Path("adapters"), name="try", edit_type="implications"), models, config)

Names are imported on first use, so ``import sealq`` (and the CLI's start-up) stays cheap.
"""

from __future__ import annotations

import importlib

#: public name -> the module that defines it
_EXPORTS = {
    # running (writes runs.db)
    "run_loop": "sealq.engine.loop", "resume_loop": "sealq.engine.loop", "LoopEvents": "sealq.engine.passage",
    "run_continual": "sealq.engine.continual", "resume_continual": "sealq.engine.continual",
    "ContinualEvents": "sealq.engine.continual", "run_learn": "sealq.engine.learn", "resume_learn": "sealq.engine.learn",
    # settings
    "LoopConfig": "sealq.engine.config", "SelfEditConfig": "sealq.engine.config", "TrainConfig": "sealq.engine.config",
    "EvalConfig": "sealq.engine.config", "PolicyConfig": "sealq.engine.config", "Directive": "sealq.engine.config",
    "ScaleConfig": "sealq.engine.config", "ContinualConfig": "sealq.engine.config", "Gate": "sealq.engine.config",
    "LearnConfig": "sealq.engine.config",
    # the inner step (touches no database)
    "inner_step": "sealq.engine.step", "StepInput": "sealq.engine.step", "StepResult": "sealq.engine.step",
    "Models": "sealq.engine.step", "load_models": "sealq.engine.step",
    # data
    "load_passages": "sealq.engine.dataset", "Passage": "sealq.engine.dataset", "Question": "sealq.engine.dataset",
    # vocabulary and grades
    "Source": "sealq.vocab", "Condition": "sealq.vocab", "Row": "sealq.vocab", "Split": "sealq.vocab",
    "Score": "sealq.metrics", "score": "sealq.metrics",
    # reading results (runs.db)
    "open_db": "sealq.store", "summarize": "sealq.analysis.summary", "scores_by_passage": "sealq.analysis.summary",
    "run_overview": "sealq.analysis.summary", "eval_table": "sealq.analysis.tables",
    "restem_table": "sealq.analysis.tables", "build_report": "sealq.analysis.report",
    "continual_summary": "sealq.analysis.continual", "learn_summary": "sealq.analysis.learn",
    # documents and probes
    "split_document": "sealq.engine.document", "write_probes": "sealq.engine.probes",
    # conversion
    "convert_peft_to_gguf": "sealq.convert.lora_gguf", "combine_adapters": "sealq.convert.combine",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'sealq' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
