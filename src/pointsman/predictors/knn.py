"""Cosine k-nearest-neighbour quality predictor.

The predicted quality of model j on a prompt is a similarity-weighted mean of its labels on the k
most similar training prompts, shrunk towards the model's overall mean by ``prior`` pseudo-labels
(a Beta-Binomial posterior for 0/1 outcomes). Neighbour weights are ``exp((sim - sim_max) / T)``
(``temperature`` large = plain average). The uncertainty is that posterior's standard deviation:
wide when the neighbours disagree or few of them carry a label (small effective evidence); it is
widened further by ``distance_scale * (1 - sim_max)`` when even the nearest neighbour is far away.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pointsman.predictors.base import QualityPredictor, register

__all__ = ["KNNPredictor"]


@register
class KNNPredictor(QualityPredictor):
    kind = "knn"

    def __init__(self, k: int = 40, temperature: float = 0.1, prior: float = 2.0, distance_scale: float = 2.0,
                 store_dtype: str = "float16", block: int = 1024):
        super().__init__()
        self.k = int(k)
        self.temperature = float(temperature)
        self.prior = float(prior)
        self.distance_scale = float(distance_scale)
        self.store_dtype = store_dtype
        self.block = int(block)
        self._X: np.ndarray | None = None
        self._Y: np.ndarray | None = None       # (n, m) in [0,1], NaN = no label
        self._mu: np.ndarray | None = None      # (m,) prior mean
        self._X32: np.ndarray | None = None     # _X as float32, converted once

    def _state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """_X, _Y, _mu."""
        if self._X is None or self._Y is None or self._mu is None:
            raise ValueError("this predictor is not fitted")
        return self._X, self._Y, self._mu

    def _fit(self, X, F, Y01):
        # Prompt features are not used by kNN (the embedding decides the neighbourhood).
        self._X = X.astype(self.store_dtype)
        self._X32 = None
        self._Y = Y01.astype(np.float32)
        self._mu = np.nanmean(Y01, axis=0).astype(np.float32)

    def neighbours(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(indices (n, k), cosine similarities (n, k)) of the nearest training prompts."""
        stored = self._state()[0]
        if self._X32 is None or len(self._X32) != len(stored):
            self._X32 = stored.astype(np.float32)   # converted once, not per call
        Xt = self._X32
        k = min(self.k, len(Xt))
        idx_out = np.empty((len(X), k), dtype=np.int64)
        sim_out = np.empty((len(X), k), dtype=np.float32)
        for s in range(0, len(X), self.block):
            S = X[s: s + self.block] @ Xt.T
            idx = np.argpartition(-S, k - 1, axis=1)[:, :k] if k < S.shape[1] else np.tile(np.arange(k), (len(S), 1))
            idx_out[s: s + len(S)] = idx
            sim_out[s: s + len(S)] = np.take_along_axis(S, idx, axis=1)
        return idx_out, sim_out

    def _predict(self, X, F):
        _, Y, mu = self._state()
        idx, sim = self.neighbours(X)
        # Softmax-style weights relative to the nearest neighbour: exp((sim - sim_max)/T).
        w = np.exp((sim - sim.max(axis=1, keepdims=True)) / self.temperature)[:, :, None]  # (n, k, 1)
        Yn = Y[idx]                                                # (n, k, m)
        has = ~np.isnan(Yn)
        Yz = np.where(has, Yn, 0.0)
        W = (w * has).sum(axis=1)                                        # (n, m) effective evidence
        num = (w * Yz).sum(axis=1)
        a = self.prior
        mean = (num + a * mu) / (W + a)
        # second moment for the spread of the labels (Bernoulli variance for 0/1)
        sq = (w * Yz * Yz).sum(axis=1)
        m2 = (sq + a * (mu ** 2 + mu * (1 - mu))) / (W + a)
        var_labels = np.clip(m2 - mean ** 2, 1e-6, None)
        far = 1.0 + self.distance_scale * np.clip(1.0 - sim.max(axis=1), 0.0, None)[:, None]
        sd = np.sqrt(var_labels / (W + a + 1.0)) * far
        return mean.astype(np.float64), sd.astype(np.float64)

    def _params(self) -> dict[str, Any]:
        return {"k": self.k, "temperature": self.temperature, "prior": self.prior, "distance_scale": self.distance_scale,
                "store_dtype": self.store_dtype, "block": self.block}

    def _arrays(self):
        return {"X": self._X, "Y": self._Y, "mu": self._mu}

    def _load_arrays(self, arrays):
        self._X = arrays["X"]
        self._X32 = None
        self._Y = arrays["Y"]
        self._mu = arrays["mu"]
