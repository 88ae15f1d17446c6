"""Drift: is recent traffic still like the prompts the deployed router was trained on?

A router carries a summary of its training prompts (``QualityPredictor.reference``, made at training time by
:func:`reference_of`): centres of their embeddings, how close a training prompt typically is to its nearest
centre, and their task mix (the dominant task-type cue of each prompt, embed/features.py). Recent traffic is
compared on two numbers, each with a threshold in ``learning`` that says "retrain":

* **unseen share**: recent prompts farther from every training centre than 95% of the training prompts are
  (about 0.05 on traffic like the training data; ``drift_unseen_share``, 0.3 by default);
* **task shift**: the total-variation distance between the recent and the training task mix (0 = the same
  mix, 1 = disjoint; ``drift_task_shift``, 0.2 by default).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pointsman.embed.features import FEATURE_NAMES, TASK_TYPES

__all__ = ["DriftReport", "MIN_PROMPTS", "drift_report", "reference_of", "task_mix", "traffic_drift"]

CENTRES = 256
TRAINING_QUANTILE = 0.05  # a recent prompt below the 5th percentile of training prompts' nearness is "unseen"
MIN_PROMPTS = 50  # fewer recent prompts than this tell too little to say "retrain"
TASK_LABELS = (*TASK_TYPES, "other")


def _normalised(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def _task_columns() -> list[int]:
    return [FEATURE_NAMES.index(f"task_{name}") for name in TASK_TYPES]


def task_mix(features: np.ndarray) -> np.ndarray:
    """Share of prompts whose strongest task cue is each of :data:`TASK_LABELS` ("other": no cue at all).
    ``features``: raw (not standardised) prompt features, as embed/features.py makes them."""
    F = np.asarray(features, dtype=np.float64)
    counts = np.zeros(len(TASK_LABELS))
    if len(F) == 0:
        return counts
    cues = F[:, _task_columns()] if F.shape[1] >= len(FEATURE_NAMES) else np.zeros((len(F), len(TASK_TYPES)))
    dominant = np.where(cues.max(axis=1) > 0, cues.argmax(axis=1), len(TASK_TYPES))
    np.add.at(counts, dominant, 1.0)
    return counts / len(F)


def _nearness(X: np.ndarray, centres: np.ndarray) -> np.ndarray:
    return (_normalised(X) @ centres.astype(np.float32).T).max(axis=1)


def reference_of(X: np.ndarray, features: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """The training prompts' summary a router artefact carries (a few hundred KB at most)."""
    from pointsman.predictors.transfer import _kmeans

    Xn = _normalised(X)
    centres, _ = _kmeans(Xn, min(CENTRES, len(Xn)), seed=seed)
    centres = _normalised(centres).astype(np.float16)
    nearness = _nearness(Xn, centres)
    return {"centres": centres, "nearness_floor": np.array([float(np.quantile(nearness, TRAINING_QUANTILE))]),
            "task_mix": task_mix(features)}


@dataclass(frozen=True)
class DriftReport:
    prompts: int
    unseen_share: float | None
    task_shift: float | None
    recent_mix: dict[str, float]
    training_mix: dict[str, float]
    retrain: bool
    reasons: list[str]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        lines = [f"recent prompts: {self.prompts}"]
        if self.unseen_share is not None:
            lines.append(f"unseen share:   {self.unseen_share:.3f}  (share of recent prompts unlike the training prompts)")
        if self.task_shift is not None:
            lines.append(f"task shift:     {self.task_shift:.3f}  (total variation between task mixes)")
            lines.append("task mix        recent  training")
            lines += [f"  {name:<12} {self.recent_mix[name]:6.3f}  {self.training_mix[name]:8.3f}" for name in TASK_LABELS]
        lines.append(("RETRAIN: " if self.retrain else "no retraining needed: ") + "; ".join(self.reasons))
        return "\n".join(lines)


def drift_report(reference: dict[str, np.ndarray], X: np.ndarray, features: np.ndarray, *,
                 unseen_share_limit: float, task_shift_limit: float) -> DriftReport:
    """Recent traffic (embeddings ``X`` by the router's encoder, raw ``features``) against a router's reference."""
    if "centres" not in reference:
        raise ValueError("this router carries no summary of its training prompts (it predates drift checks): "
                         "retrain it with `pointsman train` to get one")
    n = len(X)
    training = reference["task_mix"]
    training_mix = {name: round(float(v), 4) for name, v in zip(TASK_LABELS, training)}
    if n < MIN_PROMPTS:
        return DriftReport(n, None, None, dict.fromkeys(TASK_LABELS, 0.0), training_mix, False,
                           [f"too few recent prompts to tell ({n}; at least {MIN_PROMPTS})"])
    unseen = float((_nearness(X, reference["centres"]) < float(reference["nearness_floor"][0])).mean())
    recent = task_mix(features)
    shift = float(0.5 * np.abs(recent - training).sum())
    reasons = []
    if unseen > unseen_share_limit:
        reasons.append(f"{unseen:.0%} of recent prompts are unlike the training prompts (limit {unseen_share_limit:.0%})")
    if shift > task_shift_limit:
        reasons.append(f"the task mix moved by {shift:.2f} (limit {task_shift_limit:.2f})")
    retrain = bool(reasons)
    if not retrain:
        reasons.append(f"unseen share {unseen:.2f} <= {unseen_share_limit:.2f}, task shift {shift:.2f} <= {task_shift_limit:.2f}")
    return DriftReport(n, round(unseen, 4), round(shift, 4), {k: round(float(v), 4) for k, v in zip(TASK_LABELS, recent)},
                       training_mix, retrain, reasons)


def traffic_drift(ledger_url: str, router: Any, *, since: float, unseen_share_limit: float,
                  task_shift_limit: float, limit: int = 5000) -> DriftReport:
    """The drift report of the stored prompts since ``since`` (newest ``limit``) against a router artefact
    (a path, or a loaded predictor)."""
    from pointsman.learning.store import outcome_store_from_url
    from pointsman.learning.traffic import embed_traffic
    from pointsman.predictors import QualityPredictor, load_predictor

    predictor = router if isinstance(router, QualityPredictor) else load_predictor(router)
    store = outcome_store_from_url(ledger_url)
    try:
        texts = store.recent_prompts(since, limit)
    finally:
        store.close()
    if len(texts) < MIN_PROMPTS:
        X, F = np.zeros((len(texts), 1), dtype=np.float32), np.zeros((len(texts), len(FEATURE_NAMES)))
    else:
        X, F = embed_traffic(texts, predictor.info)
    return drift_report(predictor.reference, X, F, unseen_share_limit=unseen_share_limit,
                        task_shift_limit=task_shift_limit)
