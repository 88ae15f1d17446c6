"""Tiny numpy building blocks shared by the trainable predictors: Adam and masked BCE.

Training-time only; inference in the predictors is a few matrix products.
"""

from __future__ import annotations

import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class Adam:
    def __init__(self, params: dict[str, np.ndarray], lr: float = 1e-3, b1: float = 0.9, b2: float = 0.999,
                 eps: float = 1e-8):
        self.p = params
        self.lr, self.b1, self.b2, self.eps = lr, b1, b2, eps
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, grads: dict[str, np.ndarray], lr: float | None = None) -> None:
        self.t += 1
        lr = self.lr if lr is None else lr
        c1 = 1 - self.b1 ** self.t
        c2 = 1 - self.b2 ** self.t
        for k, g in grads.items():
            if k not in self.p:
                continue
            self.m[k] = self.b1 * self.m[k] + (1 - self.b1) * g
            self.v[k] = self.b2 * self.v[k] + (1 - self.b2) * g * g
            self.p[k] -= lr * (self.m[k] / c1) / (np.sqrt(self.v[k] / c2) + self.eps)


def masked_bce_grad(logits: np.ndarray, y: np.ndarray, mask: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean BCE over labelled cells and d(loss)/d(logits). ``y`` may be fractional in [0, 1]."""
    p = sigmoid(logits)
    cnt = max(float(mask.sum()), 1.0)
    eps = 1e-7
    loss = -float((mask * (y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps))).sum()) / cnt
    return loss, mask * (p - y) / cnt


def minibatches(n: int, batch: int, rng: np.random.Generator):
    perm = rng.permutation(n)
    for s in range(0, n, batch):
        yield perm[s: s + batch]


def cosine_lr(base: float, epoch: int, epochs: int) -> float:
    return base * 0.5 * (1 + np.cos(np.pi * epoch / max(epochs, 1)))
