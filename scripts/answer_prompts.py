"""The answering sweep: which answer prompt makes the model give the short span when it knows it.

Answers every question of the dev passages greedily (``max_tokens`` 24, as ``EvalConfig``) with each
answer prompt, with the passage in the prompt (the ceiling) and without (the baseline); no training. The
passages are ``sealq eval``'s protocol selection (docs/eval.md): the first N squad-dev passages that have a
GPT-4.1 completion. Prints contains / EM / F1 with 95% passage-bootstrap intervals per prompt and
condition, and each prompt's paired difference against ``short-phrase`` (sealq's prompt,
:func:`sealq.engine.answer.qa_messages`). Per-question answers go to OUT (JSON lines, one per answer;
a prompt and condition already in OUT is not answered again).

    .venv/bin/python scripts/answer_prompts.py OUT.jsonl [--passages 50] [--prompt NAME ...] [--threads T]

Results and wall times: docs/notes/2026-12-02-what-self-edit-recipe-teaches-best.md. About 9 minutes per prompt with the passage and 3 without on
2 cores (50 passages, 276 questions).
"""

import argparse
import json
import time
from pathlib import Path

from sealq.analysis.stats import cluster_bootstrap, format_interval, paired_difference
from sealq.engine.answer import qa_messages
from sealq.engine.config import EvalConfig, LoopConfig
from sealq.engine.selection import select_passages
from sealq.metrics import score
from sealq.models.llama import LlamaRunner
from sealq.models.registry import resolve_model

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad-dev"
MAX_TOKENS = EvalConfig().max_tokens  # the loop's answer budget
INSTRUCTION = "Answer the question with a short phrase."
SPAN = "Answer with the shortest phrase that answers the question (a name, number, date or a few words), not a sentence."
# worked examples on an invented passage (no SQuAD text, so nothing of the dev set leaks into the prompt)
EXAMPLE = ("The Harlow Bridge", "The Harlow Bridge crosses the river Tamsin at Ebbridge. It was designed by the "
           "engineer Mara Quill and opened in 1911. Its main span is 212 metres long and it is painted dark red.")
EXAMPLE_QA = [("Who designed the Harlow Bridge?", "Mara Quill"), ("When did the Harlow Bridge open?", "1911"),
              ("How long is the main span of the Harlow Bridge?", "212 metres"),
              ("What colour is the Harlow Bridge painted?", "dark red")]
THREE = [EXAMPLE_QA[0], EXAMPLE_QA[2], EXAMPLE_QA[3]]  # a name, a quantity, a colour (no year to copy)


def _block(title: str, context: str, ctx: bool) -> str:
    return f"Passage:\n{title}\n{context}\n\n" if ctx else ""


def _turns(examples, instruction: str, examples_keep_passage: bool = False):
    """A prompt of worked-example chat turns (user question, assistant answer) before the real question;
    no examples: the instruction and the question alone. ``examples_keep_passage``: the examples show their
    passage also when the real question comes without one."""
    def build(p, q, ctx):
        msgs = []
        for eq, ea in examples:
            msgs += [{"role": "user", "content": _block(*EXAMPLE, ctx or examples_keep_passage) + f"{instruction}\nQuestion: {eq}"},
                     {"role": "assistant", "content": ea}]
        return msgs + [{"role": "user", "content": _block(p.title, p.context, ctx) + f"{instruction}\nQuestion: {q.question}"}]
    return build


def _inline(p, q, ctx):
    """One user turn: the examples as ``Q:``/``A:`` lines, then the real question ending in ``A:``."""
    ex = "\n".join(f"Q: {a}\nA: {b}" for a, b in THREE)
    return [{"role": "user", "content": "Answer each question with a few words, as in the examples.\n\n"
             + _block(*EXAMPLE, ctx) + f"{ex}\n\n" + _block(p.title, p.context, ctx) + f"Q: {q.question}\nA:"}]


PROMPTS = {
    "short-phrase": lambda p, q, ctx: qa_messages(p, q, ctx),
    "span": _turns([], SPAN),
    "few-shot-2": _turns(EXAMPLE_QA[:2], INSTRUCTION),
    "few-shot-2-span": _turns(EXAMPLE_QA[:2], SPAN),
    "few-shot-3": _turns(THREE, INSTRUCTION),
    "inline-3": _inline,
    # the examples keep their passage without the real one: they teach the answer format, not answers to copy
    "few-shot-3-ex-passage": _turns(THREE, INSTRUCTION, examples_keep_passage=True),
}


def _cap_words(n: int) -> str:
    """A GBNF grammar (llama.cpp grammars/README.md) for at most ``n`` space-separated words on one line."""
    return f'root ::= word (" " word){{0,{n - 1}}}\nword ::= [^ \\n]+\n'


#: prompts answered under a grammar (the others decode freely): sealq's prompt, the answer held to at most N
#: words (greedy decoding stops there)
GRAMMARS = {f"cap-{n}-words": _cap_words(n) for n in (3, 5)}
PROMPTS.update(dict.fromkeys(GRAMMARS, qa_messages))


#: --condition: which halves to answer (with the passage in the prompt: True)
CONDITIONS = {"both": (True, False), "ceiling": (True,), "baseline": (False,)}


def _answer(runner, passages, name: str, ctx: bool, out: Path) -> None:
    t0 = time.time()
    with out.open("a") as f:
        for i, p in enumerate(passages):
            for j, q in enumerate(p.questions):
                text = runner.chat(PROMPTS[name](p, q, ctx), max_tokens=MAX_TOKENS, temperature=0.0,
                                  grammar=GRAMMARS.get(name)).text.strip()
                s = score(text, q.answers)
                f.write(json.dumps({"prompt": name, "with_passage": ctx, "passage": i, "question": j, "answer": text,
                                    "contains": s.contains, "em": s.em, "f1": s.f1}) + "\n")
    print(f"  {name}, {'with' if ctx else 'without'} the passage: {time.time() - t0:.0f} s", flush=True)


def _groups(rows, name, ctx, metric, n):
    g = [[] for _ in range(n)]
    for r in sorted((r for r in rows if r["prompt"] == name and r["with_passage"] == ctx), key=lambda r: (r["passage"], r["question"])):
        g[r["passage"]].append(r[metric])
    return g


def _report(rows, names, n):
    answered = {(r["prompt"], r["with_passage"]) for r in rows}
    for ctx in (True, False):
        print(f"\n{'ceiling (passage in prompt)' if ctx else 'baseline (no passage)'}:")
        names_here = [x for x in names if (x, ctx) in answered]
        for name in names_here:
            cells = [format_interval(cluster_bootstrap(_groups(rows, name, ctx, m, n)).as_dict()) for m in ("contains", "em", "f1")]
            words = [len(r["answer"].split()) for r in rows if r["prompt"] == name and r["with_passage"] == ctx]
            print(f"  {name:16s} contains {cells[0]}  EM {cells[1]}  F1 {cells[2]}  words {sum(words) / len(words):.1f}")
        for name in names_here[1:] if names_here[:1] == ["short-phrase"] else []:
            d = [format_interval(paired_difference(_groups(rows, name, ctx, m, n), _groups(rows, "short-phrase", ctx, m, n)).as_dict(), signed=True)
                 for m in ("contains", "em", "f1")]
            print(f"  {name} - short-phrase: contains {d[0]}  EM {d[1]}  F1 {d[2]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--passages", type=int, default=50)
    ap.add_argument("--prompt", action="append", choices=list(PROMPTS))
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--condition", choices=list(CONDITIONS), default="both",
                    help="answer with the passage (ceiling), without (baseline) or both")
    a = ap.parse_args()
    names = a.prompt or list(PROMPTS)
    if "short-phrase" in names:
        names = ["short-phrase"] + [x for x in names if x != "short-phrase"]
    passages = select_passages(LoopConfig(data=str(DEV / "squad.json"), teacher=str(DEV / "gpt41_implications.json"),
                                          passages=a.passages)).train
    rows = [json.loads(x) for x in a.out.read_text().splitlines()] if a.out.exists() else []
    n_q = sum(len(p.questions) for p in passages)
    done = {k for k in {(r["prompt"], r["with_passage"]) for r in rows}
            if sum((r["prompt"], r["with_passage"]) == k for r in rows) == n_q}
    if len(rows) != n_q * len(done):  # a prompt and condition cut off part-way: answered again from the start
        a.out.write_text("".join(json.dumps(r) + "\n" for r in rows if (r["prompt"], r["with_passage"]) in done))
    runner = LlamaRunner(resolve_model("smollm2-135m"), n_ctx=2048, seed=0, threads=a.threads)
    for name in names:
        for ctx in CONDITIONS[a.condition]:
            if (name, ctx) not in done:
                _answer(runner, passages, name, ctx, a.out)
    rows = [json.loads(x) for x in a.out.read_text().splitlines()]
    _report(rows, names, len(passages))


if __name__ == "__main__":
    main()
