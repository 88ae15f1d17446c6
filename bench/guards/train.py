"""Train the shipped injection head (src/pointsman/guards/models/injection.npz).

Training data: the S-Labs train split, yanismiraoui's multilingual injection strings as extra positives, and
benign prompts of other sources as extra negatives (2,000 MMLU questions, half of AlpacaEval: data.benign_extra).
Calibration (the benign scores thresholds are read from): the S-Labs validation split. The test split is never
read here; bench/guards/run.py reports on it.

    .venv/bin/python bench/guards/train.py [--l2 1e-5] [--out src/pointsman/guards/models/injection.npz]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.guards.data import benign_extra, multilingual, s_labs  # noqa: E402
from pointsman.embed.static import StaticEncoder  # noqa: E402
from pointsman.guards.detector import DEFAULT_HEAD, InjectionHead  # noqa: E402

_ENCODER: StaticEncoder | None = None


def embed(texts: Sequence[str]) -> np.ndarray:
    global _ENCODER
    if _ENCODER is None:
        _ENCODER = StaticEncoder()
    return _ENCODER.encode_with_features(list(texts))[0]


def train(texts: list[str], labels: np.ndarray, sources: str, l2: float = 1e-5) -> InjectionHead:
    val_texts, val_labels = s_labs("validation")
    return InjectionHead.fit(texts, labels, embed(texts), val_texts, val_labels, embed(val_texts),
                             {"encoder": StaticEncoder.model_id, "trained_on": sources,
                              "calibration": "s-labs validation split (benign rows, rules excluded)"}, l2=l2)


def with_benign(texts: list[str], labels: np.ndarray) -> tuple[list[str], np.ndarray]:
    extra = benign_extra()
    return texts + extra, np.append(labels, np.zeros(len(extra), dtype=int))


def shipped(l2: float = 1e-5) -> InjectionHead:
    texts, labels = s_labs("train")
    extra = multilingual()
    texts, labels = with_benign(texts + extra, np.append(labels, np.ones(len(extra), dtype=int)))
    return train(texts, labels, "s-labs train split + yanismiraoui multilingual (positives) + 2,000 MMLU questions "
                                "and AlpacaEval's even-numbered instructions (negatives)", l2)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--l2", type=float, default=1e-5)
    parser.add_argument("--out", default=str(DEFAULT_HEAD))
    args = parser.parse_args()
    started = time.time()
    head = shipped(args.l2)
    head.save(args.out)
    print(f"wrote {args.out} in {time.time() - started:.0f} s; threshold at 1% FPR {head.threshold_at(0.01):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
