"""ReST-EM: a tiny real two-round outer loop on the bundled passages (split by title), its lineage rows,
and proof that each round's model writes its self-edits with the policy adapter attached."""

import json
from pathlib import Path

import pytest
import sqlite_utils
from click.testing import CliRunner

from sealq.cli import cli
from sealq.engine.config import LoopConfig
from sealq.engine.selection import select_passages
from sealq.engine.train import PromptCompletion, make_batches
from sealq.metrics import copied_ngram_share
from sealq.vocab import Source


@pytest.fixture(scope="module")
def restem_run(tmp_path_factory, cache_root):
    ws = tmp_path_factory.mktemp("restem-ws")
    result = CliRunner().invoke(
        cli, ["loop", "--rounds", "2", "--holdout-fraction", "0.25", "--passages", "2", "--holdout-passages", "1",
              "--k", "2", "--edit-type", "rewrite", "--directives", "off", "--epochs", "4", "--workspace", str(ws),
              "--json"], catch_exceptions=False, env={"SEALQ_CACHE": str(cache_root)})
    assert result.exit_code == 0, result.output
    return ws, json.loads(result.stdout)


@pytest.mark.unit
def test_split_is_by_title():
    sel = select_passages(LoopConfig(rounds=1, holdout_fraction=0.25))
    assert len(sel.train) == 6 and len(sel.holdout) == 2
    assert not {p.title for p in sel.train} & {p.title for p in sel.holdout}
    assert select_passages(LoopConfig(rounds=1, holdout_fraction=0.25)).holdout == sel.holdout  # seeded


def test_rounds_lineage_and_table(restem_run):
    ws, summary = restem_run
    db = sqlite_utils.Database(str(ws / "runs.db"))
    (run,) = list(db["runs"].rows)
    assert run["command"] == "restem" and run["status"] == "done"
    sides = {(r["round"], r["split"]): r["n"] for r in db.query("select round, split, count(*) n from passages group by 1, 2")}
    assert sides == {(0, "holdout"): 1, (0, "train"): 2, (1, "holdout"): 1, (1, "train"): 2, (2, "holdout"): 1}
    policies = list(db.query("select * from policies order by round"))
    assert [p["round"] for p in policies] == [1, 2]
    for p in policies:
        pairs = list(db.query(
            """select s.*, ps.round, ps.split from policy_pairs pp join self_edits s on s.id = pp.self_edit_id
               join passages ps on ps.id = s.passage_id where pp.policy_id = ?""", [p["id"]]))
        assert len(pairs) == p["n_pairs"]
        # ReST-EM's filter: each pair is the best self-edit of a training passage of the previous round, reward > 0
        for s in pairs:
            assert (s["round"], s["split"], s["is_best"], s["source"]) == (p["round"] - 1, "train", 1, Source.SELF_EDIT)
            assert s["reward"] > 0
        if p["status"] == "trained":
            assert p["n_pairs"] >= 1 and len(p["gguf_sha256"]) == 64 and Path(p["gguf_path"]).exists()
            assert p["final_loss"] > 0 and p["tokens_trained"] > 0
        else:
            assert p["status"] == "no_data" and p["n_pairs"] == 0
    assert any(p["status"] == "trained" for p in policies), "the fictional passages give positive rewards"
    rounds = summary["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    for r in rounds:
        h = r["holdout"]
        assert h["passages"] == 1 and h["questions"] > 0
        for key in ("no_context", "with_context", "mean_self_edit", "best_of_k", "mean_gain", "best_gain"):
            assert h[key]["contains"]["low"] <= h[key]["contains"]["estimate"] <= h[key]["contains"]["high"]
    assert "train" in rounds[0] and "train" in rounds[1] and "train" not in rounds[2]
    # round r against round 0, paired on the same held-out questions
    assert "vs_round0" not in rounds[0]["holdout"]
    for r in rounds:
        # what the round's model wrote for the held-out passage, recomputed from its rows
        rows = list(db.query(
            """select s.text, s.status, s.n_items, p.context from self_edits s join passages p on p.id = s.passage_id
               where p.round = ? and p.split = 'holdout' and s.source = ? order by s.sample_idx""",
            [r["round"], Source.SELF_EDIT.value]))
        assert len(rows) == 2
        e = r["holdout"]["self_edits"]
        assert e["n"] == 2
        assert e["skipped"] == sum(x["status"] != "ok" for x in rows)
        assert e["mean_words"] == pytest.approx(sum(len(x["text"].split()) for x in rows) / 2)
        assert e["mean_items"] == pytest.approx(sum(x["n_items"] or 0 for x in rows) / 2)
        assert e["copied_5grams"] == pytest.approx(sum(copied_ngram_share(x["text"], x["context"]) for x in rows) / 2)
        assert e["mean_words"] > 0
    h0 = rounds[0]["holdout"]
    for r in rounds[1:]:
        v, h = r["holdout"]["vs_round0"], r["holdout"]
        for key, mine, theirs in (("mean_self_edit", h["mean_self_edit"], h0["mean_self_edit"]),
                                  ("mean_gain", h["mean_gain"], h0["mean_gain"]),
                                  ("no_context", h["no_context"], h0["no_context"])):
            for m in ("contains", "em", "f1"):
                assert v[key][m]["estimate"] == pytest.approx(mine[m]["estimate"] - theirs[m]["estimate"])
                assert v[key][m]["low"] <= v[key][m]["estimate"] <= v[key][m]["high"]
    # knowledge adapters are not kept in a ReST-EM run; the policy adapters are
    assert not list((ws / "runs" / run["id"] / "adapters").glob("*.gguf"))


def test_policy_is_attached_when_the_next_round_writes(restem_run):
    """Self-edits are sampled with the same seeds every round, so the same passage gets the same text
    unless the model changed: a round after a trained policy must write differently."""
    ws, _ = restem_run
    db = sqlite_utils.Database(str(ws / "runs.db"))
    texts = {(r["round"], r["sample_idx"]): r["text"] for r in db.query(
        """select p.round, s.sample_idx, s.text from self_edits s join passages p on p.id = s.passage_id
           where p.split = 'holdout' order by p.round""")}
    status = {p["round"]: p["status"] for p in db["policies"].rows}
    for r in (1, 2):
        same = all(texts[(r, j)] == texts[(r - 1, j)] for j in range(2))
        assert same == (status[r] == "no_data"), (r, status)


def test_prompt_tokens_carry_no_loss(hf_model, tmp_path):
    """Policy SFT: with the whole sequence as prompt but one token, the loss is that one token's."""
    import torch

    from sealq.engine.config import Directive, TrainConfig
    from sealq.engine.train import train_lora

    ids = list(range(100, 140))
    with torch.no_grad():
        logits = hf_model(input_ids=torch.tensor([ids])).logits[0]
    last = torch.nn.functional.cross_entropy(logits[-2:-1], torch.tensor(ids[-1:])).item()
    res = train_lora(hf_model, [PromptCompletion(ids, len(ids) - 1)], Directive(1, 1e-5, 4),
                     TrainConfig(default=Directive(1, 1e-5, 4), warmup_fraction=0.0), tmp_path / "sft", seed=0)
    assert res.losses[0] == pytest.approx(last, rel=1e-3)
    assert make_batches([PromptCompletion([1, 2, 3], 2)], 192, __import__("random").Random(0))[0][0].n_prompt == 2


def test_report_of_a_restem_run_has_the_rounds_table(restem_run):
    from sealq.analysis.report import build_report

    ws, summary = restem_run
    db = sqlite_utils.Database(str(ws / "runs.db"))
    rep = build_report(db, summary["run_id"])
    assert "<h2>ReST-EM rounds</h2>" in rep.html and "## ReST-EM rounds" in rep.markdown
    assert rep.markdown.count("\n| 2 |") == 1  # one row per round, the last is round 2


def test_show_of_a_restem_run_names_round_and_side(restem_run):
    ws, summary = restem_run
    res = CliRunner().invoke(cli, ["show", summary["run_id"], "--workspace", str(ws), "--json"])
    detail = json.loads(res.stdout)
    sides = [(p["round"], p["split"]) for p in detail["passages"]]
    assert sides == sorted(sides, key=lambda x: (x[0], x[1] == "train"))  # rounds in order, held-out first
    assert set(sides) == {(0, "holdout"), (0, "train"), (1, "holdout"), (1, "train"), (2, "holdout")}
    text = CliRunner().invoke(cli, ["show", summary["run_id"], "--workspace", str(ws)]).stdout
    assert "round 2 holdout [0]" in text and "round 0 train [1]" in text
    assert "fixed" in text  # --directives off: fixed settings, not parse fallbacks


def test_round_comparison_needs_a_complete_round(restem_run, tmp_path):
    """A round whose held-out evaluation is missing a self-edit (an interrupted run) gets no paired
    comparison with round 0: it would compare different samples."""
    import sqlite3

    from sealq.analysis.tables import restem_table

    ws, summary = restem_run
    copy = sqlite3.connect(tmp_path / "runs.db")
    sqlite3.connect(ws / "runs.db").backup(copy)
    copy.execute("pragma foreign_keys = off")
    (sid,) = copy.execute("""select s.id from self_edits s join passages p on p.id = s.passage_id
                             where p.round = 2 and p.split = 'holdout' and s.source = 'self_edit' limit 1""").fetchone()
    copy.execute("delete from answers where self_edit_id = ?", [sid])
    copy.execute("delete from self_edits where id = ?", [sid])
    copy.commit()
    table = restem_table(sqlite_utils.Database(copy), summary["run_id"], n_boot=50)
    assert "vs_round0" in table[1]["holdout"] and "vs_round0" not in table[2]["holdout"]
    assert table[2]["holdout"]["self_edits"]["n"] == 1
