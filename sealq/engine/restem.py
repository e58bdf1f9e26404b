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

import json
import os
import shutil

from sealq.engine.config import Directive, DirectiveBounds, TrainConfig
from sealq.engine.dataset import Passage
from sealq.engine.selfedit import copied_ngram_share
from sealq.engine.stats import cluster_bootstrap, paired_difference
from sealq.engine.summary import METRICS, scores_by_passage, summarize
from sealq.engine.train import PromptCompletion, train_lora
from sealq.faults import kill_point
from sealq.models.registry import file_sha256

__all__ = ["run_rounds", "policy_pairs", "restem_table"]


def run_rounds(ctx, train: list[Passage], holdout: list[Passage]) -> dict:
    """Run ``ctx.config.rounds`` ReST-EM rounds (see the module docstring); resumable unit by unit.

    Args:
        ctx: the loop context (``sealq.engine.loop._Ctx``): database, runner, training model, config.
        train: passages whose best self-edits train the policy.
        holdout: passages only ever evaluated.

    Returns:
        The run summary: :func:`sealq.engine.summary.summarize` of the last round's held-out passages,
        plus ``"rounds"`` (:func:`restem_table`).
    """
    from sealq.engine.loop import _run_passage

    config = ctx.config
    ctx.keep_best = False
    for r in range(config.rounds + 1):
        if r > 0:
            _policy(ctx, r, train)
        ctx.round = r
        ctx.split = "holdout"
        for idx, p in enumerate(holdout):
            _run_passage(ctx, idx, p)
            ctx.events.passage_done(idx)
        if r == config.rounds:
            break
        ctx.split = "train"
        for idx, p in enumerate(train):
            _run_passage(ctx, idx, p)
            ctx.events.passage_done(idx)
    summary = summarize(ctx.db, ctx.run_id, round=config.rounds, split="holdout")
    summary["rounds"] = restem_table(ctx.db, ctx.run_id)
    return summary


def policy_pairs(db, run_id: str, round_: int) -> list[dict]:
    """The E-step: per training passage of ``round_``, its best-of-K self-edit if its reward is positive.

    Returns:
        ``[{"self_edit_id", "prompt", "text", "reward"}]`` in passage order.
    """
    return list(db.query(
        """select s.id self_edit_id, s.prompt, s.text, s.reward from self_edits s join passages p on p.id = s.passage_id
           where p.run_id = ? and p.round = ? and p.split = 'train' and s.source = 'model' and s.is_best = 1
             and s.status = 'ok' and s.reward > 0 order by p.idx""", [run_id, round_]))


def _policy(ctx, r: int, train: list[Passage]) -> None:
    """Make policy r (trained on round r-1's kept self-edits) part of the model; train it unless recorded."""
    from sealq.convert import convert_peft_to_gguf

    db, config = ctx.db, ctx.config
    row = db.execute("select * from policies where run_id = ? and round = ?", [ctx.run_id, r]).fetchone()
    if row is None:
        pairs, seqs = [], []
        for pair in policy_pairs(db, ctx.run_id, r - 1):
            prompt = ctx.runner.chat_prompt_ids([{"role": "user", "content": pair["prompt"]}])
            completion = ctx.runner.completion_ids(pair["text"])
            if len(prompt) + len(completion) > config.policy.max_seq_tokens:
                continue  # would be cut; only pairs trained whole are recorded as lineage
            pairs.append(pair)
            seqs.append(PromptCompletion(prompt + completion, len(prompt)))
        if not pairs:
            with db.atomic():
                db["policies"].insert({"run_id": ctx.run_id, "round": r, "status": "no_data", "n_pairs": 0})
            ctx.events.stage(f"round {r}: no usable self-edit with a positive reward; the model is unchanged")
        else:
            ctx.events.stage(f"round {r}: fine-tuning the policy on {len(pairs)} kept self-edits")
            pc = config.policy
            tc = TrainConfig(default=Directive(pc.epochs, pc.lr, pc.rank), max_seq_tokens=pc.max_seq_tokens,
                             bounds=DirectiveBounds((1, 20), (1e-6, 1e-2), (4, 8, 16, 32, 64)),
                             targets=config.train.targets, threads=config.train.threads)
            folder = ctx.run_dir / "policy"
            peft_dir, tmp = folder / f"round{r}", folder / f".tmp-round{r}"
            shutil.rmtree(tmp, ignore_errors=True)
            with ctx.clock("train_policy"):
                result = train_lora(ctx.hf_model, seqs, tc.default, tc, tmp, seed=config.seed * 7919 + r)
            shutil.rmtree(peft_dir, ignore_errors=True)
            os.replace(tmp, peft_dir)
            gguf_path = folder / f"round{r}.gguf"
            with ctx.clock("convert_policy"):
                convert_peft_to_gguf(peft_dir, gguf_path, ctx.model.path)
            kill_point("policy")
            with db.atomic():
                pid = db["policies"].insert({
                    "run_id": ctx.run_id, "round": r, "status": "trained", "n_pairs": len(pairs),
                    "peft_path": str(peft_dir), "gguf_path": str(gguf_path), "gguf_sha256": file_sha256(gguf_path),
                    "rank": result.rank, "alpha": result.alpha, "epochs": pc.epochs, "lr": pc.lr,
                    "tokens_trained": result.tokens_trained, "final_loss": result.final_loss,
                    "loss_curve_json": json.dumps([round(x, 5) for x in result.losses]),
                    "train_seconds": result.seconds,
                }).last_pk
                db["policy_pairs"].insert_all([{"policy_id": pid, "self_edit_id": p["self_edit_id"]} for p in pairs])
                ctx.clock.flush(db, ctx.run_id)
        row = db.execute("select * from policies where run_id = ? and round = ?", [ctx.run_id, r]).fetchone()
    cols = [d[0] for d in db.execute("select * from policies limit 0").description]
    row = dict(zip(cols, row))
    if row["status"] == "trained":
        _merge_into_training_model(ctx.hf_model, row["peft_path"])
    trained = [g for (g,) in db.execute("select gguf_path from policies where run_id = ? and round <= ? "
                                        "and status = 'trained' order by round", [ctx.run_id, r])]
    ctx.runner.set_policy([(g, 1.0) for g in trained], validate=False)


def _merge_into_training_model(hf_model, peft_dir: str) -> None:
    """Add a LoRA's update to the training model's weights in place (W <- W + scale * B A)."""
    import warnings

    from peft import PeftModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        wrapped = PeftModel.from_pretrained(hf_model, peft_dir)
        wrapped.merge_and_unload()
    if hasattr(hf_model, "peft_config"):
        del hf_model.peft_config


def restem_table(db, run_id: str, n_boot: int = 2000) -> list[dict]:
    """Per-round results of a ReST-EM run.

    Returns:
        One dict per round r with ``"round"``, ``"holdout"`` (passages, questions; ``no_context``,
        ``with_context``, ``mean_self_edit``, ``best_of_k`` accuracy and ``mean_gain`` / ``best_gain``
        paired differences against ``no_context``, each ``{metric: {"estimate", "low", "high"}}``),
        ``"train"`` (passages, mean reward, kept pairs; absent in the last round) and ``"policy"``
        (the policy the round's model carries: id, status, pairs, final loss; None in round 0). From
        round 1 on, when its held-out evaluation is complete, ``"holdout"`` also has ``"vs_round0"``:
        ``mean_self_edit``, ``mean_gain`` and ``no_context`` minus round 0's, paired on the same
        held-out questions (the direct test of whether the outer loop made the first try better), and
        ``"self_edits"``: what the round's model wrote for the held-out passages (``n``, ``skipped``,
        ``mean_words``, ``mean_items``, ``copied_5grams``: :func:`sealq.engine.selfedit.copied_ngram_share`).
    """
    rounds = [r for (r,) in db.execute("select distinct round from passages where run_id = ? order by round", [run_id])]
    out = []
    s0, n0 = None, 0
    for r in rounds:
        s = scores_by_passage(db, run_id, round=r, split="holdout")
        entry: dict = {"round": r}
        if s.get("no_context"):
            def col(c, i, s=s):
                return [[g[i] for g in p] for p in s[c]]

            h = {"passages": len(s["no_context"]), "questions": sum(len(p) for p in s["no_context"])}
            for c in ("no_context", "with_context", "mean_self_edit", "best_of_k"):
                h[c] = {m: cluster_bootstrap(col(c, i), n_boot).as_dict() for i, m in enumerate(METRICS)}
            for name, c in (("mean_gain", "mean_self_edit"), ("best_gain", "best_of_k")):
                h[name] = {m: paired_difference(col(c, i), col("no_context", i), n_boot).as_dict() for i, m in enumerate(METRICS)}
            edits = list(db.query(
                """select s.text, s.n_items, s.status, p.context from self_edits s join passages p on p.id = s.passage_id
                   where p.run_id = ? and p.round = ? and p.split = 'holdout' and s.source = 'model'""", [run_id, r]))
            if r == 0:
                s0, n0 = s, len(edits)
            elif (s0 is not None and len(edits) == n0  # complete: every passage, every sample, as in round 0
                  and [len(p) for p in s["no_context"]] == [len(p) for p in s0["no_context"]]):
                def gain(sc, i):
                    return [[a[i] - b[i] for a, b in zip(pe, pb)] for pe, pb in zip(sc["mean_self_edit"], sc["no_context"])]

                def base(c, i):
                    return [[g[i] for g in p] for p in s0[c]]

                h["vs_round0"] = {
                    "mean_self_edit": {m: paired_difference(col("mean_self_edit", i), base("mean_self_edit", i), n_boot).as_dict()
                                       for i, m in enumerate(METRICS)},
                    "mean_gain": {m: paired_difference(gain(s, i), gain(s0, i), n_boot).as_dict() for i, m in enumerate(METRICS)},
                    "no_context": {m: paired_difference(col("no_context", i), base("no_context", i), n_boot).as_dict()
                                   for i, m in enumerate(METRICS)},
                }
            h["self_edits"] = {
                "n": len(edits), "skipped": sum(e["status"] != "ok" for e in edits),
                "mean_words": sum(len(e["text"].split()) for e in edits) / max(len(edits), 1),
                "mean_items": sum(e["n_items"] or 0 for e in edits) / max(len(edits), 1),
                "copied_5grams": sum(copied_ngram_share(e["text"], e["context"]) for e in edits) / max(len(edits), 1),
            }
            entry["holdout"] = h
        t = db.execute(
            """select count(distinct p.id), avg(s.reward) from passages p join self_edits s on s.passage_id = p.id
               where p.run_id = ? and p.round = ? and p.split = 'train' and s.source = 'model'""", [run_id, r]).fetchone()
        if t[0]:
            nxt = db.execute("select n_pairs from policies where run_id = ? and round = ?", [run_id, r + 1]).fetchone()
            entry["train"] = {"passages": t[0], "mean_reward": t[1], "kept_pairs": len(policy_pairs(db, run_id, r)),
                              "policy_trained": bool(nxt and nxt[0])}
        pol = db.execute("select id, status, n_pairs, final_loss, gguf_path from policies where run_id = ? and round = ?",
                         [run_id, r]).fetchone()
        entry["policy"] = None if pol is None else dict(zip(("id", "status", "n_pairs", "final_loss", "gguf_path"), pol))
        out.append(entry)
    return out
