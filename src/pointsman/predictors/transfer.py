"""A router that knows where its training data ends: task-type transfer plus a local correction.

It predicts a prompt's **gain**: the expected score gap between a stronger and a weaker model on it (the
harmonised label of :mod:`pointsman.evaluation.labels`, as a share of the score scale), in two parts:

* a **transfer model** on signals that mean the same on any traffic: the cheap prompt features, among
  them the task-type cues (code, math, reasoning, extraction, writing, role-play) and the prompt's shape
  and length (:mod:`pointsman.embed.features`). It is a ridge regression, every training source weighted
  equally whatever its size, fitted only on sources whose labels are absolute (correctness, a judge's
  grade): a preference against a reference answer measures the distance to that answer, not where a
  stronger model helps;
* a **local correction**: the transfer model's residuals on the nearest training prompts (spherical
  k-means centres of their embeddings), shrunk towards zero, and faded out by an in-distribution gate
  that opens only when the nearest centre is close. Far from the training data the prediction is the
  transfer model's alone, and its uncertainty is the wider out-of-distribution one.

Per trained model ``m`` the predicted quality is ``mean + gain(x) * (ability_m - mean) / gap`` (abilities:
each model's mean score; ``gap``: strongest minus weakest), so the strongest and weakest model differ by
the predicted gain. Inference is numpy only: a dot product for the ridge, one (centres, d) product for
the neighbourhood.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pointsman.predictors.base import QualityPredictor, register

__all__ = ["TransferPredictor"]


def _kmeans(X: np.ndarray, k: int, iterations: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means: (centres (k, d) L2-normalised, assignment (n,))."""
    rng = np.random.default_rng(seed)
    k = min(k, len(X))
    centres = X[rng.choice(len(X), size=k, replace=False)].astype(np.float32)
    assign = np.zeros(len(X), dtype=np.int64)
    for _ in range(iterations):
        assign = np.concatenate([np.argmax(X[s:s + 4096] @ centres.T, axis=1) for s in range(0, len(X), 4096)])
        sums = np.zeros_like(centres)
        np.add.at(sums, assign, X)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        empty = norms[:, 0] == 0
        centres = np.where(empty[:, None], centres, sums / np.maximum(norms, 1e-12))
    return centres.astype(np.float32), assign


@register
class TransferPredictor(QualityPredictor):
    kind = "transfer"

    def __init__(self, alpha: float = 30.0, centres: int = 1024, k: int = 8, shrink: float = 20.0,
                 gate_low: float = 0.75, gate_high: float = 0.9, neighbour_temperature: float = 0.05):
        super().__init__()
        self.alpha = float(alpha)
        self.n_centres = int(centres)
        self.k = int(k)
        self.shrink = float(shrink)
        self.gate_low, self.gate_high = float(gate_low), float(gate_high)
        self.neighbour_temperature = float(neighbour_temperature)
        self._state: dict[str, np.ndarray] = {}
        self._centres32: np.ndarray | None = None
        self._labels: tuple[np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------------ fitting
    def fit(self, X, features, scores, model_names=None, score_range=None, *, gain=None, sources=None
            ) -> "TransferPredictor":
        """As every predictor, plus ``gain`` (n,): each row's harmonised gain label, NaN where it has none or
        its source's labels are not absolute (see :meth:`GainLabels.absolute`), and ``sources`` (n,)."""
        if gain is None or sources is None:
            raise ValueError("a transfer predictor needs gain labels and sources (pointsman.training builds them)")
        if features is None:
            raise ValueError("a transfer predictor needs the prompt features")
        self._labels = (np.asarray(gain, dtype=np.float64), np.asarray(sources))
        try:
            return super().fit(X, features, scores, model_names=model_names, score_range=score_range)  # type: ignore[return-value]
        finally:
            self._labels = None  # the training labels are not part of the router

    def _fit(self, X, F, Y01):
        assert self._labels is not None
        gain, sources = self._labels
        labelled = ~np.isnan(gain)
        if labelled.sum() < 10:
            raise ValueError("too few prompts with an absolute gain label (correctness or judge scores) to train on")
        # a linear model must not extrapolate: at inference each feature is held inside its training range
        low, high = F[labelled].min(axis=0), F[labelled].max(axis=0)
        D = np.hstack([F.astype(np.float64), np.ones((len(F), 1))])
        weight = np.zeros(len(gain))
        names = list(dict.fromkeys(sources[labelled].tolist()))
        for source in names:  # every source counts the same, however many prompts it has
            rows = labelled & (sources == source)
            weight[rows] = 1.0 / rows.sum()
        weight *= labelled.sum() / weight.sum()
        penalty = self.alpha * np.eye(D.shape[1])
        penalty[-1, -1] = 0.0  # the intercept is not shrunk
        Dw = D[labelled] * weight[labelled, None]
        beta = np.linalg.solve(Dw.T @ D[labelled] + penalty, Dw.T @ gain[labelled])
        residual = gain[labelled] - D[labelled] @ beta
        centres, assign = _kmeans(X[labelled], self.n_centres)
        count = np.bincount(assign, minlength=len(centres)).astype(np.float64)
        total = np.bincount(assign, weights=residual, minlength=len(centres))
        # how far the transfer model can be off on a source as a whole: its sources' mean residuals
        source_bias = [float(residual[sources[labelled] == s].mean()) for s in names]
        # abilities from absolute labels only (a model seen only in preference data gets the average)
        known = labelled[:, None] & ~np.isnan(Y01)
        seen = known.sum(axis=0)
        mean = np.where(known, Y01, 0.0).sum(axis=0) / np.maximum(seen, 1)
        ability = np.where(seen > 0, mean, float(mean[seen > 0].mean()) if (seen > 0).any() else 0.5)
        self._centres32 = None
        self._state = {
            "beta": beta, "feature_low": low, "feature_high": high, "centres": centres.astype(np.float16), "centre_sum": total, "centre_count": count,
            "residual_var": np.array([float(np.average(residual ** 2, weights=weight[labelled]))]),
            "source_var": np.array([float(np.mean(np.square(source_bias)))]),
            "ability": ability, "gap": np.array([max(float(ability.max() - ability.min()), 1e-6)]),
        }

    # ------------------------------------------------------------------ inference
    def gain(self, X: np.ndarray, F: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(predicted gain (n,), its sd (n,), in-distribution gate 0..1 (n,)); F standardised."""
        st = self._state
        inside = np.clip(np.asarray(F, dtype=np.float64), st["feature_low"], st["feature_high"])
        transfer = np.hstack([inside, np.ones((len(F), 1))]) @ st["beta"]
        if self._centres32 is None:
            self._centres32 = st["centres"].astype(np.float32)  # stored as float16; converted once, not per call
        sims = np.asarray(X, dtype=np.float32) @ self._centres32.T
        k = min(self.k, sims.shape[1])
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top_sim = np.take_along_axis(sims, top, axis=1)
        w = np.exp((top_sim - top_sim.max(axis=1, keepdims=True)) / self.neighbour_temperature)
        w /= w.sum(axis=1, keepdims=True)
        local_n = (w * st["centre_count"][top]).sum(axis=1)
        local = (w * st["centre_sum"][top]).sum(axis=1) / (local_n + self.shrink)
        gate = np.clip((top_sim.max(axis=1) - self.gate_low) / (self.gate_high - self.gate_low), 0.0, 1.0)
        prediction = transfer + gate * local
        # unsure of the mean: the local standard error where the neighbourhood is dense; where there is
        # none, how far off the transfer model was on whole training sources
        residual_var, source_var = float(st["residual_var"][0]), float(st["source_var"][0])
        in_var = residual_var / (local_n + self.shrink)
        out_var = source_var + residual_var / self.shrink
        sd = np.sqrt(gate * in_var + (1 - gate) * out_var)
        return prediction, sd, gate

    def _predict(self, X, F):
        st = self._state
        prediction, sd, _ = self.gain(X, F)
        ability, gap = st["ability"], float(st["gap"][0])
        centre = float(ability.mean())
        offset = (ability - centre)[None, :] / gap
        mean = centre + prediction[:, None] * offset
        # move a row that leaves 0..1 back inside as a whole: the gap between the models is the prediction
        mean -= np.maximum(mean.max(axis=1, keepdims=True) - 1.0, 0.0)
        mean += np.maximum(-mean.min(axis=1, keepdims=True), 0.0)
        return np.clip(mean, 0.0, 1.0), np.abs(offset) * sd[:, None]

    # ------------------------------------------------------------------ persistence
    def _params(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "centres": self.n_centres, "k": self.k, "shrink": self.shrink,
                "gate_low": self.gate_low, "gate_high": self.gate_high,
                "neighbour_temperature": self.neighbour_temperature}

    def _arrays(self) -> dict[str, np.ndarray]:
        return dict(self._state)

    def _load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self._state = {k: v for k, v in arrays.items() if not k.startswith("_feat")}
        self._centres32 = None
