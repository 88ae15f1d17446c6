"""RouteLLM-style matrix factorisation: projected prompt embedding x learned model embedding.

    h(prompt) = [embedding, features] @ P            (k dims, shared by all models)
    quality(prompt, model j) = sigmoid(h . v_j + b_j)

Trained on every labelled (prompt, model) cell with BCE on [0, 1] scores, plus an optional pairwise
term (``pair_weight``) on the logit differences of two models on the same prompt, which is what a
router ranks on (RouteLLM trains on such pairwise preferences only). Because models live in one
k-dimensional space, N models share statistical strength, and :meth:`MFPredictor.add_model` fits a
new model from a handful of labels (P frozen; v_new, b_new shrunk towards the mean model).

Uncertainty: ensemble spread over ``n_members`` models trained on bootstrap resamples.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pointsman.predictors._nn import Adam, cosine_lr, minibatches, sigmoid
from pointsman.predictors.base import QualityPredictor, register

__all__ = ["MFPredictor"]


@register
class MFPredictor(QualityPredictor):
    kind = "mf"

    def __init__(self, dim: int = 32, weight_decay: float = 1e-3, pair_weight: float = 1.0, epochs: int = 30,
                 lr: float = 3e-3, batch: int = 256, n_members: int = 5, bootstrap: bool = True,
                 use_features: bool = True, seed: int = 0):
        super().__init__()
        self.dim = int(dim)
        self.weight_decay = float(weight_decay)
        self.pair_weight = float(pair_weight)
        self.epochs = int(epochs)
        self.lr = float(lr)
        self.batch = int(batch)
        self.n_members = int(n_members)
        self.bootstrap = bool(bootstrap)
        self.use_features = bool(use_features)
        self.seed = int(seed)
        # per ensemble member: the prompt projection (E, D, k), model vectors (E, m, k), model biases (E, m)
        self._P: np.ndarray | None = None
        self._V: np.ndarray | None = None
        self._b: np.ndarray | None = None

    def _state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """_P, _V, _b."""
        if self._P is None or self._V is None or self._b is None:
            raise ValueError("this predictor is not fitted")
        return self._P, self._V, self._b

    def _inputs(self, X, F):
        if self.use_features and F.shape[1]:
            return np.concatenate([X, F.astype(np.float32)], axis=1)
        return X

    def _fit(self, X, F, Y01):
        Z = self._inputs(X, F).astype(np.float32)
        n = len(Z)
        rng = np.random.default_rng(self.seed)
        Ps, Vs, bs = [], [], []
        for e in range(self.n_members):
            idx = rng.integers(0, n, n) if (self.bootstrap and self.n_members > 1) else np.arange(n)
            p = self._fit_member(Z[idx], Y01[idx], np.random.default_rng(self.seed * 1000 + e))
            Ps.append(p["P"]); Vs.append(p["V"]); bs.append(p["b"])
        self._P = np.stack(Ps).astype(np.float32)
        self._V = np.stack(Vs).astype(np.float32)
        self._b = np.stack(bs).astype(np.float32)
        self.info["n_train"] = int(n)

    def _fit_member(self, Z, Y, rng):
        n, D = Z.shape
        m = Y.shape[1]
        k = self.dim
        mask = (~np.isnan(Y)).astype(np.float32)
        Yz = np.nan_to_num(Y).astype(np.float32)
        prior = np.clip(np.nanmean(Y, axis=0), 1e-3, 1 - 1e-3)
        p = {
            "P": (rng.standard_normal((D, k)) / np.sqrt(D)).astype(np.float32),
            "V": (rng.standard_normal((m, k)) * 0.1).astype(np.float32),
            "b": np.log(prior / (1 - prior)).astype(np.float32),
        }
        opt = Adam(p, lr=self.lr)
        wd = self.weight_decay
        pairs = [(a, c) for a in range(m) for c in range(a + 1, m)] if self.pair_weight > 0 else []
        for ep in range(self.epochs):
            lr = cosine_lr(self.lr, ep, self.epochs)
            for bi in minibatches(n, self.batch, rng):
                z, y, mk = Z[bi], Yz[bi], mask[bi]
                h = z @ p["P"]                       # (B, k)
                logits = h @ p["V"].T + p["b"]       # (B, m)
                g = mk * (sigmoid(logits) - y) / len(bi)
                if pairs:
                    # pairwise: sigmoid(l_a - l_c) should match (y_a - y_c + 1) / 2 where both labelled
                    gp = np.zeros_like(logits)
                    scale = self.pair_weight / (len(bi) * len(pairs))
                    for a, c in pairs:
                        both = mk[:, a] * mk[:, c]
                        t = (y[:, a] - y[:, c] + 1.0) * 0.5
                        r = both * (sigmoid(logits[:, a] - logits[:, c]) - t) * scale
                        gp[:, a] += r
                        gp[:, c] -= r
                    g = g + gp * max(m - 1, 1)
                gV = g.T @ h + wd * p["V"]
                gh = g @ p["V"]
                gP = z.T @ gh + wd * p["P"]
                opt.step({"P": gP, "V": gV, "b": g.sum(0)}, lr=lr)
        return p

    def _predict(self, X, F):
        Z = self._inputs(X, F).astype(np.float32)
        P, V, b = self._state()
        outs = np.stack([sigmoid((Z @ P[e]) @ V[e].T + b[e]) for e in range(len(P))])
        outs = outs.astype(np.float64)
        sd = outs.std(axis=0, ddof=1) if len(outs) > 1 else np.zeros(outs.shape[1:])
        return outs.mean(axis=0), sd

    def prompt_embedding(self, X: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        """(E, n, k) projected prompts, one per ensemble member."""
        Z = self._inputs(np.asarray(X, np.float32), self.scaler.transform(features, len(X)))
        return np.stack([Z @ P for P in self._state()[0]])

    def add_model(self, name: str, X: np.ndarray | None = None, features: np.ndarray | None = None,
                  scores: np.ndarray | None = None, reg: float = 1.0, iters: int = 50) -> "MFPredictor":
        """Add a model from a few labelled prompts (or none: it then predicts like the average model).

        P stays frozen; (v_new, b_new) is a ridge-penalised logistic regression on the projected
        prompts, shrunk towards the mean of the existing models' (v, b) with strength ``reg``.
        """
        if name in self.model_names:
            raise ValueError(f"{name} already in the predictor")
        P, V, b = self._state()
        E = len(P)
        v0 = V.mean(axis=1)   # (E, k)
        b0 = b.mean(axis=1)   # (E,)
        newV, newb = v0.copy(), b0.copy()
        if X is not None and scores is not None and len(scores):
            lo, hi = self.score_range
            y = np.clip((np.asarray(scores, float) - lo) / (hi - lo), 0, 1)
            ok = ~np.isnan(y)
            H = self.prompt_embedding(np.asarray(X)[ok], None if features is None else np.asarray(features)[ok])
            y = y[ok]
            for e in range(E):
                A = np.concatenate([H[e], np.ones((len(y), 1))], axis=1).astype(np.float64)
                w = np.concatenate([v0[e], [b0[e]]]).astype(np.float64)
                w_prior = w.copy()
                lam = reg * np.ones(len(w))
                for _ in range(iters):  # Newton steps
                    pr = sigmoid(A @ w)
                    grad = A.T @ (pr - y) + lam * (w - w_prior)
                    Hs = (A * (pr * (1 - pr))[:, None]).T @ A + np.diag(lam)
                    step = np.linalg.solve(Hs, grad)
                    w -= step
                    if np.abs(step).max() < 1e-6:
                        break
                newV[e], newb[e] = w[:-1], w[-1]
        self._V = np.concatenate([V, newV[:, None, :].astype(np.float32)], axis=1)
        self._b = np.concatenate([b, newb[:, None].astype(np.float32)], axis=1)
        self.model_names.append(name)
        return self

    def _params(self) -> dict[str, Any]:
        return {"dim": self.dim, "weight_decay": self.weight_decay, "pair_weight": self.pair_weight,
                "epochs": self.epochs, "lr": self.lr, "batch": self.batch, "n_members": self.n_members,
                "bootstrap": self.bootstrap, "use_features": self.use_features, "seed": self.seed}

    def _arrays(self):
        return {"P": self._P, "V": self._V, "b": self._b}

    def _load_arrays(self, arrays):
        self._P, self._V, self._b = arrays["P"], arrays["V"], arrays["b"]
