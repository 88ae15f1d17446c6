"""The injection detector's second stage: MiniLM fine-tuned on the injection corpora, and a logistic head.

The first stage (detector.py) is linear in cheap features: it separates the phrasings it has seen, and misses
paraphrases of intent ("tell me what makes up your setup") that no bag of words or mean of static vectors tells
from hard negatives ("my setup uses two monitors"). This stage reads the text with a transformer whose layers
were trained for the task (bench/guards/finetune.py), which costs milliseconds, so it reads only what the first
stage cannot clear: a text whose first-stage score reaches the **gate**. The gate is an operating point on the
calibration split too: the first-stage score that a stated share of its attacks reach
(``guards.injection.second_stage_recall``); a text below it is benign without the second look.

A text the second stage reads is judged by both readings: the mean of the two stages' log-odds (the first sees
the words, the second the intent; alone, the fine-tuned model flags more benign prompts that merely use attack
words: bench/guards/RESULTS.md), against thresholds read from that score's calibration (the validation split's
benign texts). The gate can only lower the false-positive rate stated, and costs at most the attacks it lets
through, which bench/guards measures.

The artefact (``injection-minilm-head.npz``): the head's weights, the sorted decision scores of the calibration
split's benign texts and the sorted first-stage scores of its attacks, and JSON info naming the encoder (its
model id, patch included) and the first stage it was calibrated with (a digest of its weights). Plain arrays
(no pickle).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pointsman.guards.detector import quantile_above

__all__ = ["SecondStage", "DEFAULT_SECOND_STAGE"]

DEFAULT_SECOND_STAGE = Path(__file__).with_name("models") / "injection-minilm-head.npz"


class SecondStage:
    """``w_`` (dim,), ``b_``; ``calibration_`` sorted benign decision scores (thresholds), ``gate_calibration_`` sorted
    first-stage scores of the calibration split's attacks (the gate); ``info`` what it was made from."""

    def __init__(self, w: np.ndarray, b: float, calibration: np.ndarray, gate_calibration: np.ndarray,
                 info: dict[str, Any]) -> None:
        self.w_ = w.astype(np.float32)
        self.b_ = float(b)
        self.calibration_ = np.sort(calibration.astype(np.float64))
        self.gate_calibration_ = np.sort(gate_calibration.astype(np.float64))
        self.info = info

    @property
    def encoder(self) -> str:
        """The model id of the (patched) MiniLM the head reads."""
        return str(self.info["encoder"])

    @property
    def encoder_kind(self) -> str:
        """The gateway's name for that encoder (embed/registry.py)."""
        return str(self.info["encoder_kind"])

    def logit(self, embedding: np.ndarray) -> float:
        """The second stage's own log-odds, from the fine-tuned encoder's embedding of the text."""
        return float(embedding @ self.w_) + self.b_

    def score(self, embedding: np.ndarray, first_logit: float) -> float:
        """The decision score: the mean of both stages' log-odds, as a probability."""
        return float(1.0 / (1.0 + np.exp(-(self.logit(embedding) + first_logit) / 2.0)))

    def threshold_at(self, fpr: float) -> float:
        """The decision score above which ``fpr`` of the calibration split's benign texts fall."""
        return quantile_above(self.calibration_, fpr)

    def gate_at(self, recall: float) -> float:
        """The first-stage score that ``recall`` of the calibration split's attacks (rules aside) reach."""
        neg = -self.gate_calibration_[::-1]  # the attacks' scores, negated and ascending: their lower quantile
        return -quantile_above(neg, 1.0 - recall)

    def save(self, path: str | Path) -> None:
        np.savez(path, w=self.w_, b=np.array([self.b_]), calibration=self.calibration_,
                 gate_calibration=self.gate_calibration_, info=np.array(json.dumps(self.info, sort_keys=True)))

    @classmethod
    def load(cls, path: str | Path = DEFAULT_SECOND_STAGE) -> "SecondStage":
        with np.load(path, allow_pickle=False) as data:
            return cls(data["w"], float(data["b"][0]), data["calibration"], data["gate_calibration"],
                       json.loads(str(data["info"])))
