"""The injection corpora of ../shared/data/injection, read as (texts, labels), and benign user prompts of other
shared sources (MMLU, AlpacaEval) as extra negatives.

S-Labs (train / validation / test, balanced held-out splits) and yanismiraoui's 1,034 multilingual injection
strings (positives only). The corpora held back for others' evaluation (neuralchemy's, MT-Bench, QQP) are never
read.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

ROOT = Path(os.environ.get("POINTSMAN_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")) / "injection"


def s_labs(split: str) -> tuple[list[str], np.ndarray]:
    with open(ROOT / "s-labs" / f"{split}.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], np.array([int(r["label"]) for r in rows])


def multilingual() -> list[str]:
    with open(ROOT / "yanismiraoui" / "prompt_injections.csv", newline="", encoding="utf-8") as f:
        return [r["prompt_injections"] for r in csv.DictReader(f) if r["prompt_injections"].strip()]


SHARED = ROOT.parent


def benign_extra(n_mmlu: int = 2000) -> list[str]:
    """Benign training text beyond S-Labs: its benign rows are short questions, and a head trained on them alone
    flags a quarter of real users' longer prompts (RESULTS.md). 2,000 MMLU questions (a seeded sample) and the
    even-numbered half of AlpacaEval's instructions; the odd half, arena-bench and GSM8K stay held out."""
    import glob
    import random

    mmlu: list[str] = []
    for path in sorted(glob.glob(str(SHARED / "routellm" / "mmlu" / "*.csv"))):
        with open(path, newline="", encoding="utf-8") as f:
            mmlu += [row["prompt"] for row in csv.DictReader(f)]
    random.Random(0).shuffle(mmlu)
    return mmlu[:n_mmlu] + alpacaeval()[::2]


def alpacaeval() -> list[str]:
    import json

    with open(SHARED / "alpacaeval" / "instructions.jsonl", encoding="utf-8") as f:
        return [json.loads(line)["instruction"] for line in f]
