"""Linear / small-MLP heads on [embedding, standardised prompt features].

``head="logistic"``: one logistic regression per model (sigmoid output, BCE on [0,1] scores).
``head="ridge"``: closed-form ridge regression per model on [0,1] scores, clipped to [0, 1].
``head="mlp"``: one hidden ReLU layer shared by all models, one sigmoid output per model.

Uncertainty: an ensemble of ``n_members`` heads trained on bootstrap resamples (and different
seeds); the prediction is the members' mean and the uncertainty their standard deviation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pointsman.predictors._nn import Adam, cosine_lr, minibatches, sigmoid
from pointsman.predictors.base import QualityPredictor, register

__all__ = ["LinearPredictor"]


@register
class LinearPredictor(QualityPredictor):
    kind = "linear"

    def __init__(self, head: str = "logistic", hidden: int = 128, weight_decay: float = 1e-3,
                 alpha: float = 10.0, epochs: int = 30, lr: float = 3e-3, batch: int = 256,
                 dropout: float = 0.0, n_members: int = 5, bootstrap: bool = True, use_features: bool = True,
                 seed: int = 0):
        super().__init__()
        if head not in ("logistic", "ridge", "mlp"):
            raise ValueError("head must be logistic, ridge or mlp")
        self.head = head
        self.hidden = int(hidden)
        self.weight_decay = float(weight_decay)
        self.alpha = float(alpha)
        self.epochs = int(epochs)
        self.lr = float(lr)
        self.batch = int(batch)
        self.dropout = float(dropout)
        self.n_members = int(n_members)
        self.bootstrap = bool(bootstrap)
        self.use_features = bool(use_features)
        self.seed = int(seed)
        self._w: dict[str, np.ndarray] = {}

    # ----------------------------------------------------------------- helpers
    def _inputs(self, X, F):
        if self.use_features and F.shape[1]:
            return np.concatenate([X, F.astype(np.float32)], axis=1)
        return X

    def _fit(self, X, F, Y01):
        Z = self._inputs(X, F).astype(np.float32)
        n, D = Z.shape
        rng = np.random.default_rng(self.seed)
        members = []
        for e in range(self.n_members):
            idx = rng.integers(0, n, n) if (self.bootstrap and self.n_members > 1) else np.arange(n)
            Ze, Ye = Z[idx], Y01[idx]
            if self.head == "ridge":
                members.append(self._fit_ridge(Ze, Ye))
            else:
                members.append(self._fit_sgd(Ze, Ye, np.random.default_rng(self.seed * 1000 + e)))
        self._w = {k: np.stack([mb[k] for mb in members]).astype(np.float32) for k in members[0]}
        self.info["n_train"] = int(n)

    def _fit_ridge(self, Z, Y):
        D, m = Z.shape[1], Y.shape[1]
        W = np.zeros((D, m))
        b = np.zeros(m)
        for j in range(m):
            ok = ~np.isnan(Y[:, j])
            Zj, yj = Z[ok].astype(np.float64), Y[ok, j]
            zm, ym = Zj.mean(0), yj.mean()
            Zc = Zj - zm
            W[:, j] = np.linalg.solve(Zc.T @ Zc + self.alpha * np.eye(D), Zc.T @ (yj - ym))
            b[j] = ym - zm @ W[:, j]
        return {"W2": W, "b2": b}

    def _fit_sgd(self, Z, Y, rng):
        n, D = Z.shape
        m = Y.shape[1]
        mask = (~np.isnan(Y)).astype(np.float32)
        Yz = np.nan_to_num(Y).astype(np.float32)
        prior = np.clip(np.nanmean(Y, axis=0), 1e-3, 1 - 1e-3)
        p: dict[str, np.ndarray] = {}
        if self.head == "mlp":
            p["W1"] = (rng.standard_normal((D, self.hidden)) * np.sqrt(2.0 / D)).astype(np.float32)
            p["b1"] = np.zeros(self.hidden, np.float32)
            p["W2"] = (rng.standard_normal((self.hidden, m)) * 0.01).astype(np.float32)
        else:
            p["W2"] = np.zeros((D, m), np.float32)
        p["b2"] = np.log(prior / (1 - prior)).astype(np.float32)
        opt = Adam(p, lr=self.lr)
        wd = self.weight_decay
        for ep in range(self.epochs):
            lr = cosine_lr(self.lr, ep, self.epochs)
            for bi in minibatches(n, self.batch, rng):
                z, y, mk = Z[bi], Yz[bi], mask[bi]
                if self.head == "mlp":
                    pre = z @ p["W1"] + p["b1"]
                    h = np.maximum(pre, 0)
                    if self.dropout > 0:
                        keep = (rng.random(h.shape) >= self.dropout) / (1 - self.dropout)
                        h = h * keep
                    logits = h @ p["W2"] + p["b2"]
                    g = mk * (sigmoid(logits) - y) / len(bi)  # d(sum of cell BCE / rows)
                    gW2 = h.T @ g + wd * p["W2"]
                    gh = g @ p["W2"].T
                    if self.dropout > 0:
                        gh = gh * keep
                    gpre = gh * (pre > 0)
                    grads = {"W1": z.T @ gpre + wd * p["W1"], "b1": gpre.sum(0), "W2": gW2, "b2": g.sum(0)}
                else:
                    logits = z @ p["W2"] + p["b2"]
                    g = mk * (sigmoid(logits) - y) / len(bi)
                    grads = {"W2": z.T @ g + wd * p["W2"], "b2": g.sum(0)}
                opt.step(grads, lr=lr)
        return p

    def _member_outputs(self, Z):
        w = self._w
        E = w["W2"].shape[0]
        outs = []
        for e in range(E):
            if self.head == "mlp":
                h = np.maximum(Z @ w["W1"][e] + w["b1"][e], 0)
                out = sigmoid(h @ w["W2"][e] + w["b2"][e])
            elif self.head == "logistic":
                out = sigmoid(Z @ w["W2"][e] + w["b2"][e])
            else:
                out = np.clip(Z @ w["W2"][e] + w["b2"][e], 0.0, 1.0)
            outs.append(out)
        return np.stack(outs)  # (E, n, m)

    def _predict(self, X, F):
        outs = self._member_outputs(self._inputs(X, F).astype(np.float32)).astype(np.float64)
        sd = outs.std(axis=0, ddof=1) if len(outs) > 1 else np.zeros(outs.shape[1:])
        return outs.mean(axis=0), sd

    def _params(self) -> dict[str, Any]:
        return {"head": self.head, "hidden": self.hidden, "weight_decay": self.weight_decay, "alpha": self.alpha,
                "epochs": self.epochs, "lr": self.lr, "batch": self.batch, "dropout": self.dropout,
                "n_members": self.n_members, "bootstrap": self.bootstrap, "use_features": self.use_features,
                "seed": self.seed}

    def _arrays(self):
        return dict(self._w)

    def _load_arrays(self, arrays):
        self._w = {k: v for k, v in arrays.items() if not k.startswith("_")}
