"""How the injection guard's second stage and its decision rule were chosen: on the validation split only.

For each candidate second stage (an encoder patch and head weights written by finetune.py), the recall at 1% FPR
on the S-Labs validation split of five ways to combine the two stages' log-odds (z1: the shipped first stage,
z2: the candidate): z2 alone, their mean, their minimum, z2 + z1/2, z1 + z2/2. Two halves of the split (seeded):
the threshold is read on one half's benign texts, recall and FPR measured on the other, and the two averaged.
Also printed for each: the over-defence set's pass rate (triggers.py, at the threshold read on the whole split),
the share flagged of number_prompts.py's validation templates (every fifth of its train half, never trained on),
and the encoder's time for a 1,000-character text. The test split is never read here. Writes CHOICE.md.

    .venv/bin/python bench/guards/choose.py NAME PATCH WEIGHTS [NAME PATCH WEIGHTS ...]
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bench.guards.calibrate import second_embeddings  # noqa: E402
from bench.guards.data import s_labs  # noqa: E402
from bench.guards.number_prompts import prompts as number_prompts  # noqa: E402
from bench.guards.train import embed  # noqa: E402
from bench.guards.triggers import prompts as trigger_prompts  # noqa: E402
from pointsman.embed.encoder import MiniLMEncoder  # noqa: E402
from pointsman.guards.detector import InjectionHead  # noqa: E402
from pointsman.guards.rules import match_rule  # noqa: E402

RULES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "z2 alone": lambda z1, z2: z2, "mean": lambda z1, z2: (z1 + z2) / 2, "min": np.minimum,
    "z2 + z1/2": lambda z1, z2: z2 + z1 / 2, "z1 + z2/2": lambda z1, z2: z1 + z2 / 2}


def bar_of(score: np.ndarray, benign: np.ndarray, fpr: float = 0.01) -> float:
    neg = np.sort(score[benign])
    return float(neg[int(np.ceil((1 - fpr) * len(neg))) - 1])


def halves(score: np.ndarray, rule: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    idx = np.random.RandomState(0).permutation(len(y))
    parts = [idx[::2], idx[1::2]]
    recall, fpr = [], []
    for a, b in ((parts[0], parts[1]), (parts[1], parts[0])):
        bar = bar_of(score[a], (y[a] == 0) & ~rule[a])
        flagged = (score[b] > bar) | rule[b]
        recall.append(flagged[y[b] == 1].mean())
        fpr.append(flagged[y[b] == 0].mean())
    return float(np.mean(recall)), float(np.mean(fpr))


def main() -> int:
    args = sys.argv[1:]
    if not args or len(args) % 3:
        print(__doc__)
        return 2
    head = InjectionHead.load()
    texts, y = s_labs("validation")
    triggers = trigger_prompts()
    numbers = number_prompts("train", validation=True)
    n1 = np.array([head.logit(t, e) for t, e in zip(numbers, embed(numbers))])
    z1 = np.array([head.logit(t, e) for t, e in zip(texts, embed(texts))])
    t1 = np.array([head.logit(t, e) for t, e in zip(triggers, embed(triggers))])
    rule = np.array([match_rule(t) is not None for t in texts])
    trule = np.array([match_rule(t) is not None for t in triggers])
    lines = ["# Choosing the injection guard's second stage and its decision rule (validation split only)", "",
             f"Run: `.venv/bin/python bench/guards/choose.py {shlex.join(args)}` on "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
             "Recall and FPR at 1% FPR on the S-Labs validation split (two halves: threshold from one, measured on",
             "the other); over-defence: the share of triggers.py's benign prompts passed at the threshold read on the",
             "whole split. The first stage alone: "
             + "recall {:.1%}, FPR {:.2%}.".format(*halves(z1, rule, y)), "",
             "| second stage | decision | recall | FPR | over-defence passed | number prompts flagged | "
             "encoder ms, 1,000 chars |", "|---|---|---|---|---|---|---|"]
    for name, patch, weights in zip(args[::3], args[1::3], args[2::3]):
        encoder = MiniLMEncoder(patch=patch)
        with np.load(weights) as data:
            w, b = data["w"], float(data["b"][0])
        z2 = second_embeddings(texts, encoder)[0] @ w + b
        t2 = second_embeddings(triggers, encoder)[0] @ w + b
        n2 = second_embeddings(numbers, encoder)[0] @ w + b
        times = []
        for i in range(30):  # a new text each time: the encoder keeps recent results
            text = f"Section {i}: " + "the report covers revenue, hiring plans and a new supplier contract " * 15
            started = time.perf_counter()
            encoder.encode_with_features([text[:1000]])
            times.append(time.perf_counter() - started)
        ms = 1000 * float(np.median(times))
        for decision, combine in RULES.items():
            score, tscore = combine(z1, z2), combine(t1, t2)
            recall, fpr = halves(score, rule, y)
            bar = bar_of(score, (y == 0) & ~rule)
            passed = float(np.mean(~((tscore > bar) | trule)))
            flagged = float(np.mean(combine(n1, n2) > bar))
            lines.append(f"| {name} | {decision} | {recall:.1%} | {fpr:.2%} | {passed:.1%} | {flagged:.1%} | {ms:.1f} |")
    text = "\n".join(lines) + "\n"
    (Path(__file__).parent / "CHOICE.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
