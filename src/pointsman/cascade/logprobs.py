"""Confidence from token log-probabilities, when the provider returns them.

Statistics over the answer's tokens (`choices[0].logprobs.content`): the mean log-probability (its
exponential is the geometric-mean token probability, 1/perplexity), the weakest token, the share of
uncertain tokens, and the mean margin between the chosen token and the runner-up. The score is a
logistic function of these. Its default weights read the geometric-mean probability alone (score =
that probability); that is a prior, not a measurement, so `fit` it on your own accepted/rejected
answers (`LogprobVerifier().fit(features, labels)`) before trusting it for a tight threshold.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pointsman.cascade.base import AnswerContext, Verdict, Verifier

__all__ = ["LogprobVerifier", "logprob_features", "FEATURE_NAMES"]

FEATURE_NAMES = ("mean_logprob", "min_logprob", "uncertain_share", "mean_margin")
UNCERTAIN = math.log(0.5)  # a token the model gave less than even odds


def logprob_features(tokens: list[dict[str, Any]]) -> np.ndarray | None:
    """(4,) statistics of an answer's token log-probabilities, or None without any."""
    values = [t["logprob"] for t in tokens if isinstance(t.get("logprob"), (int, float))]
    if not values:
        return None
    lp = np.maximum(np.array(values, dtype=np.float64), -50.0)
    margins = []
    for token in tokens:
        top = token.get("top_logprobs")
        if isinstance(top, list) and len(top) >= 2:
            ranked = sorted((t.get("logprob", -50.0) for t in top if isinstance(t, dict)), reverse=True)
            margins.append(ranked[0] - ranked[1])
    margin = float(np.mean(np.minimum(margins, 20.0))) if margins else 0.0
    return np.array([lp.mean(), lp.min(), float((lp < UNCERTAIN).mean()), margin])


class LogprobVerifier(Verifier):
    name = "logprobs"

    def __init__(self, weights: np.ndarray | None = None, bias: float | None = None) -> None:
        # Default: logit(score) = logit(exp(mean_logprob)), i.e. the geometric-mean token probability.
        self.weights = weights
        self.bias = bias

    def fit(self, features: np.ndarray, labels: np.ndarray, l2: float = 1.0, steps: int = 500) -> "LogprobVerifier":
        """Logistic regression (gradient descent, L2) of acceptable (1) / not (0) on the features."""
        x = np.asarray(features, dtype=np.float64)
        y = np.asarray(labels, dtype=np.float64)
        self._mean, self._std = x.mean(axis=0), x.std(axis=0) + 1e-9
        z = (x - self._mean) / self._std
        w, b = np.zeros(z.shape[1]), 0.0
        for _ in range(steps):
            p = 1 / (1 + np.exp(-(z @ w + b)))
            grad = p - y
            w -= 0.1 * (z.T @ grad / len(y) + l2 * w / len(y))
            b -= 0.1 * grad.mean()
        self.weights, self.bias = w / self._std, b - float((w / self._std) @ self._mean)
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(np.asarray(features, dtype=np.float64))
        if self.weights is None:
            p = np.exp(x[:, 0])
            return np.clip(p, 0.0, 1.0)
        return 1 / (1 + np.exp(-(x @ self.weights + (self.bias or 0.0))))

    async def check(self, item: AnswerContext) -> Verdict | None:
        features = logprob_features(item.token_logprobs)
        if features is None:
            return None
        score = float(self.predict(features)[0])
        return Verdict(self.name, score, detail=f"mean token p {math.exp(features[0]):.3f}, min {math.exp(features[1]):.3f}")
