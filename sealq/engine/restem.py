"""The outer loop: ReST-EM on self-edits (SEAL, Zweiger et al. 2025, sec. 3.1 and 4.2; ReST-EM: Singh et
al. 2023, "Beyond Human Data").

Which model does what, round by round (``sealq loop --rounds R``):

* **Round 0** uses the base model M0. It answers the held-out passages' questions (baseline), writes K
  self-edits per held-out passage, and each self-edit's knowledge LoRA is trained, hot-loaded and scored
  (mean and best-of-K gain: the *evaluation*). Then it does the same on the training passages (the
  *collection*): per training passage the best self-edit is kept if its reward is positive (ReST-EM's
  filter, "E-step"; no positive reward, no example).
* **Generator update** ("M-step"): a *policy* LoRA is fine-tuned on (self-edit prompt -> kept self-edit)
  pairs, loss on the completion tokens only, on top of the round's model. Converted to GGUF, it becomes
  part of the model: merged into the dequantized training weights (PEFT ``merge_and_unload``) and
  attached under every other adapter in llama.cpp (:meth:`sealq.models.llama.LlamaRunner.set_policy`).
* **Round r >= 1** uses M_r = base + policy_1 + ... + policy_r: it writes the self-edits, answers the
  baseline questions, and is the model the knowledge adapters are trained on (in PEFT: policies merged;
  in llama.cpp: base + policies + knowledge adapter attached together). The held-out evaluation of the
  last round measures M_R; no collection follows it.

Every round's held-out table reports the round model's own no-context accuracy (to catch a policy that
damages the model) and its in-context accuracy, the mean self-edit gain (what one sample gives: the
number the outer loop should raise) and the best-of-K gain, each with a 95% passage-bootstrap interval.
"""

from __future__ import annotations

from sealq.analysis.tables import policy_pairs
from sealq.engine import record
from sealq.engine.dataset import Passage
from sealq.engine.passage import Scope, Session, run_passages
from sealq.engine.train import PromptCompletion
from sealq.faults import kill_point
from sealq.vocab import PolicyStatus, Split

__all__ = ["run_rounds"]


def run_rounds(s: Session, train: list[Passage], holdout: list[Passage]) -> None:
    """Run ``s.config.rounds`` ReST-EM rounds (see the module docstring); resumable step by step.

    Args:
        s: the run's session (database, models, settings).
        train: passages whose best self-edits train the policy.
        holdout: passages only ever evaluated.
    """
    for r in range(s.config.rounds + 1):
        if r > 0:
            _apply_policy(s, r)
        _run_side(s, holdout, Scope(r, Split.HOLDOUT, keep_best=False))
        if r < s.config.rounds:
            _run_side(s, train, Scope(r, Split.TRAIN, keep_best=False))


def _run_side(s: Session, passages: list[Passage], scope: Scope) -> None:
    run_passages(s, passages, scope)


def _apply_policy(s: Session, r: int) -> None:
    """Make policy r (trained on round r-1's kept self-edits) part of the model; train it unless recorded."""
    row = record.find_policy(s.db, s.run_id, r)
    if row is None:
        _train_policy(s, r)
        row = record.find_policy(s.db, s.run_id, r)
        assert row is not None  # _train_policy recorded it (trained or no_data)
    if row["status"] == PolicyStatus.TRAINED:  # rounds 1..r-1 were added before this one (resume: again, in order)
        s.executor.add_policy(row["peft_path"], row["gguf_path"])


def _policy_data(s: Session, r: int) -> tuple[list[dict], list[PromptCompletion]]:
    """Round r-1's kept self-edits as (self-edit prompt -> self-edit) sequences; pairs that would be cut
    are left out (only pairs trained whole are recorded as lineage)."""
    pairs, seqs = [], []
    for pair in policy_pairs(s.db, s.run_id, r - 1):
        prompt = s.models.runner.chat_prompt_ids([{"role": "user", "content": pair["prompt"]}])
        completion = s.models.runner.completion_ids(pair["text"])
        if len(prompt) + len(completion) > s.config.policy.max_seq_tokens:
            continue
        pairs.append(pair)
        seqs.append(PromptCompletion(prompt + completion, len(prompt)))
    return pairs, seqs


def _train_policy(s: Session, r: int) -> None:
    """The M-step: fine-tune policy r on round r-1's kept self-edits and record it (or record no_data)."""
    pairs, seqs = _policy_data(s, r)
    if not pairs:
        record.record_policy(s.db, s.run_id, r, [], None, s.clock)
        s.events.stage(f"round {r}: no usable self-edit with a positive reward; the model is unchanged")
        return
    s.events.stage(f"round {r}: fine-tuning the policy on {len(pairs)} kept self-edits")
    tc = s.config.policy.train_config(s.config.train)
    adapter = s.executor.train_adapter(seqs, tc.default, tc, s.run_dir / "policy", f"round{r}",
                                       s.config.seed * 7919 + r, s.clock.timer, "train_policy", "convert_policy")
    kill_point("policy")
    record.record_policy(s.db, s.run_id, r, pairs, adapter, s.clock)
