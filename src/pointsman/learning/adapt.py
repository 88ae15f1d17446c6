"""Adapting a router to live traffic from partial outcome rows (issue 16's "train on your own traffic").

::

    router = adapt(base, X, F, models, scores, prompt_ids=ids)   # an AdaptedPredictor
    router.save("candidate.npz")                                 # loads with load_predictor, routes in tier 2

Each row is one observation: the prompt's embedding ``X[i]`` and features ``F[i]`` (made with the base
router's encoder and window, as :func:`pointsman.evaluation.datasets.embed_prompts` makes them), the model
that answered ``models[i]`` and its score ``scores[i]`` in 0..1. A prompt may have one row (the model the
router chose, scored by the client) or more (a shadow answer scored by a judge). Rows of the same prompt and
model are averaged first, so a prompt seen often does not outweigh the rest.

The method is described in :mod:`pointsman.predictors.adapted`. Adapting an adapted router starts again
from its base: pass every feedback row, not only the new ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pointsman.predictors.adapted import AdaptedPredictor
from pointsman.predictors.base import QualityPredictor

__all__ = ["Adapter", "adapt"]


class Adapter:
    """Estimator for an :class:`AdaptedPredictor`: hyper-parameters here, data in :meth:`fit`.

    ``temperature``: width of the similarity kernel of the local parts (cosine units); ``shared_shrink`` and
    ``shrink``: pseudo-weights of "no correction" in the shared and the per-model local part; ``level_shrink`` / ``slope_shrink``: ridge strengths (in rows) of each
    model's level and slope on the base's signal. ``temperature``, the two local shrinks and ``slope_shrink`` left
    at ``None`` are chosen from ``temperatures``, ``shrinks`` and ``slope_shrinks`` by leave-one-out error on the
    rows (as RidgeCV chooses its alpha): how much a few noisy outcomes may move the base's view depends on
    how noisy the scores are and how much the models really differ across prompts, which only the data
    says. ``pool``: the gateway's model configs, used to start models
    the base never saw where the semantic tier would place them (their quality priors); without it they start
    at the base's mean prediction.
    """

    def __init__(self, temperature: float | None = None, shrink: float | None = None, level_shrink: float = 5.0,
                 slope_shrink: float | None = None, shared_shrink: float | None = None, pool: Sequence[Any] | None = None,
                 temperatures: Sequence[float] = (0.02, 0.05, 0.1),
                 shrinks: Sequence[float] = (1.0, 3.0, 10.0, 30.0, 100.0, 1e6),
                 slope_shrinks: Sequence[float] = (3000.0, 1e6)) -> None:
        self.temperature = temperature
        self.shrink = shrink
        self.level_shrink = level_shrink
        self.slope_shrink = slope_shrink
        self.shared_shrink = shared_shrink
        self.pool = pool
        self.temperatures = temperatures
        self.shrinks = shrinks
        self.slope_shrinks = slope_shrinks

    def get_params(self, deep: bool = False) -> dict[str, Any]:
        return {"temperature": self.temperature, "shrink": self.shrink, "level_shrink": self.level_shrink,
                "slope_shrink": self.slope_shrink, "shared_shrink": self.shared_shrink, "pool": self.pool,
                "temperatures": self.temperatures,
                "shrinks": self.shrinks, "slope_shrinks": self.slope_shrinks}

    def set_params(self, **params: Any) -> "Adapter":
        for key, value in params.items():
            if key not in self.get_params():
                raise ValueError(f"unknown hyper-parameter {key!r}")
            setattr(self, key, value)
        return self

    def fit(self, base: QualityPredictor, X: np.ndarray, F: np.ndarray | None, models: Sequence[str],
            scores: np.ndarray, prompt_ids: Sequence[Any] | None = None) -> "Adapter":
        if isinstance(base, AdaptedPredictor):
            assert base.base is not None
            base = base.base
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(scores, dtype=np.float64)
        names = [str(m) for m in models]
        if X.ndim != 2 or len(X) != len(y) or len(names) != len(y):
            raise ValueError("X, models and scores need one entry per row")
        if F is not None and len(F) != len(y):
            raise ValueError("F needs one row per observation")
        if len(y) and (np.isnan(y).any() or y.min() < 0 or y.max() > 1):
            raise ValueError("scores must be in 0..1 (normalise a 1-10 grade first), without NaN")
        X, F, names, y, prompt_keys = _merge_duplicates(X, F, names, y, prompt_ids)
        model_names = list(base.model_names) + [m for m in dict.fromkeys(names) if m not in base.model_names]
        column = np.array([model_names.index(m) for m in names], dtype=np.int64)
        m = len(model_names)

        predictor = AdaptedPredictor()
        state: dict[str, np.ndarray] = {"signal_models": np.array([0, 0]), "signal_scale": np.array([0.0, 1.0]),
                                        "new_offset": np.zeros(m - len(base.model_names)),
                                        "new_slope": np.zeros(m - len(base.model_names))}
        predictor._set_state(base, model_names, state)
        if len(y):
            q01, _, _ = predictor.base_view(X, F)
            order = np.argsort(q01.mean(axis=0))
            gap = q01[:, order[-1]] - q01[:, order[0]]
            state["signal_models"] = np.array([order[-1], order[0]])
            state["signal_scale"] = np.array([float(gap.mean()), max(float(gap.std()), 1e-3)])
            if self.pool is not None and m > len(base.model_names):
                state["new_offset"], state["new_slope"] = _new_model_start(predictor, X, F, list(self.pool))
        start, _, z = predictor.base_view(X, F) if len(y) else (np.zeros((0, m)), None, np.zeros(0))
        residual = y - start[np.arange(len(y)), column]
        level, common = _levels(residual, z, column, m, self.level_shrink)
        pairs = _pairs(prompt_keys, column)
        slope_shrink = self.slope_shrink if self.slope_shrink is not None else \
            _best_slope_shrink(residual - level[column] - common * z, z, pairs, column, m, self.slope_shrinks)
        slope = common + _slope_deviations(residual - level[column] - common * z, z, pairs, column, m, slope_shrink)
        rest = residual - level[column] - slope[column] * z
        onehot = np.zeros((len(y), m), dtype=np.float32)
        onehot[np.arange(len(y)), column] = 1.0
        # the shared local part first (every row informs every model), then each model's own on what it leaves
        everyone = np.ones((len(y), 1), dtype=np.float32)
        temperature, shared_shrink = _best_kernel(X, rest, everyone, self.temperature, self.shared_shrink,
                                                  self.temperatures, self.shrinks)
        rest = rest - _kernel_fit(X, rest, everyone, temperature, shared_shrink)
        _, shrink = _best_kernel(X, rest, onehot, temperature, self.shrink, [temperature], self.shrinks)
        shared_rest = residual - level[column] - slope[column] * z
        total_var = float(np.mean(rest ** 2)) if len(y) else 0.25
        sq = onehot.T @ rest ** 2
        residual_var = (sq + total_var) / (onehot.sum(axis=0) + 1.0)  # one pseudo-row of the pooled variance
        state.update({"level": level, "slope": slope, "rows": X.astype(np.float16), "shared": shared_rest,
                      "residual": (onehot * rest[:, None]).astype(np.float32), "onehot": onehot,
                      "residual_var": residual_var, "feedback_rows": np.bincount(column, minlength=m)})
        predictor = AdaptedPredictor(temperature, shrink, self.level_shrink, slope_shrink, shared_shrink)
        predictor._set_state(base, model_names, state)
        predictor.info["adapted_on_rows"] = int(len(y))
        self.predictor_ = predictor
        return self


def adapt(base: QualityPredictor, X: np.ndarray, F: np.ndarray | None, models: Sequence[str], scores: np.ndarray,
          *, prompt_ids: Sequence[Any] | None = None, **hyper: Any) -> AdaptedPredictor:
    """``base`` corrected by feedback rows; ``hyper``: :class:`Adapter`'s hyper-parameters."""
    return Adapter(**hyper).fit(base, X, F, models, scores, prompt_ids).predictor_


def _levels(residual: np.ndarray, z: np.ndarray, column: np.ndarray, m: int, level_shrink: float
            ) -> tuple[np.ndarray, float]:
    """Per-model levels and one slope on z shared by every model, jointly (ridge on the levels).

    The slope is shared because each model is seen on the prompts the router sent it: fitted apart, a model
    sent only the hard-looking prompts and one sent only the easy-looking ones get slopes from disjoint
    ranges of z, and their difference (which reorders the models) would be an extrapolation."""
    if len(residual) == 0:
        return np.zeros(m), 0.0
    D = np.zeros((len(residual), m + 1))
    D[np.arange(len(residual)), column] = 1.0
    D[:, m] = z
    penalty = np.diag([level_shrink] * m + [1.0])
    coef = np.linalg.solve(D.T @ D + penalty, D.T @ residual)
    return coef[:m], float(coef[m])


def _pairs(prompt_keys: list[Any], column: np.ndarray) -> list[tuple[int, int]]:
    """Row pairs of the same prompt (a shadow answer beside the router's): the only evidence on how the models'
    difference moves with z."""
    rows_of: dict[Any, list[int]] = {}
    for i, key in enumerate(prompt_keys):
        rows_of.setdefault(key, []).append(i)
    return [(a, b) for rows in rows_of.values() for k, a in enumerate(rows) for b in rows[k + 1:]
            if column[a] != column[b]]


def _pair_design(rest: np.ndarray, z: np.ndarray, pairs: list[tuple[int, int]], column: np.ndarray, m: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    D = np.zeros((len(pairs), m))
    target = np.zeros(len(pairs))
    for k, (a, b) in enumerate(pairs):
        D[k, column[a]], D[k, column[b]] = z[a], -z[a]
        target[k] = rest[a] - rest[b]
    return D, target


def _slope_deviations(rest: np.ndarray, z: np.ndarray, pairs: list[tuple[int, int]], column: np.ndarray, m: int,
                      slope_shrink: float) -> np.ndarray:
    """Per-model slope deviations from the shared one, from paired rows only (ridge)."""
    if not pairs:
        return np.zeros(m)
    D, target = _pair_design(rest, z, pairs, column, m)
    return np.linalg.solve(D.T @ D + slope_shrink * np.eye(m), D.T @ target)


def _best_slope_shrink(rest: np.ndarray, z: np.ndarray, pairs: list[tuple[int, int]], column: np.ndarray, m: int,
                       grid: Sequence[float]) -> float:
    """The deviations' ridge strength with the least leave-one-pair-out error (the hat matrix's closed form)."""
    if len(pairs) < 2:
        return float(max(grid))
    D, target = _pair_design(rest, z, pairs, column, m)
    errors = []
    for slope_shrink in grid:
        inverse = np.linalg.inv(D.T @ D + slope_shrink * np.eye(m))
        fitted = D @ (inverse @ (D.T @ target))
        hat = np.einsum("ij,jk,ik->i", D, inverse, D)
        errors.append(float(np.sum(((target - fitted) / (1 - hat)) ** 2)))
    return float(grid[int(np.argmin(errors))])


def _kernel_fit(X: np.ndarray, rest: np.ndarray, groups: np.ndarray, temperature: float, shrink: float) -> np.ndarray:
    """Each row's kernel average of the rows of its group (itself included, as at inference)."""
    same = groups @ groups.T
    kernel = np.exp((X @ X.T - 1.0) / temperature) * same
    return (kernel @ rest) / (kernel.sum(axis=1) + shrink)


def _best_kernel(X: np.ndarray, rest: np.ndarray, onehot: np.ndarray, temperature: float | None, shrink: float | None,
                 temperatures: Sequence[float], shrinks: Sequence[float]) -> tuple[float, float]:
    """Kernel width and shrinkage of the local part with the least leave-one-out error over the rows."""
    t_grid = [temperature] if temperature is not None else list(temperatures)
    s_grid = [shrink] if shrink is not None else list(shrinks)
    if len(rest) < 2 or (len(t_grid) == 1 and len(s_grid) == 1):
        return float(t_grid[0]), float(s_grid[0])
    similarity = X @ X.T
    same_model = onehot @ onehot.T  # only rows of the same model inform each other
    best, best_error = (float(t_grid[0]), float(s_grid[0])), np.inf
    for t in t_grid:
        kernel = np.exp((similarity - 1.0) / t) * same_model
        np.fill_diagonal(kernel, 0.0)  # leave each row out of its own prediction
        weight, total = kernel.sum(axis=1), kernel @ rest
        for s in s_grid:
            error = float(np.sum((rest - total / (weight + s)) ** 2))
            if error < best_error:
                best, best_error = (float(t), float(s)), error
    return best


def _merge_duplicates(X: np.ndarray, F: np.ndarray | None, names: list[str], y: np.ndarray,
                      prompt_ids: Sequence[Any] | None
                      ) -> tuple[np.ndarray, np.ndarray | None, list[str], np.ndarray, list[Any]]:
    """One row per (prompt, model), its mean score; and each row's prompt key."""
    if prompt_ids is None:
        return X, F, names, y, list(range(len(y)))
    if len(prompt_ids) != len(y):
        raise ValueError("prompt_ids needs one entry per row")
    first: dict[tuple[Any, str], int] = {}
    group = np.empty(len(y), dtype=np.int64)
    for i, key in enumerate(zip(prompt_ids, names)):
        group[i] = first.setdefault(key, len(first))
    keep = np.unique(group, return_index=True)[1]  # group ids count up from 0 in order of first appearance
    mean = np.bincount(group, weights=y) / np.bincount(group)
    return (X[keep], None if F is None else np.asarray(F)[keep], [names[i] for i in keep], mean,
            [prompt_ids[i] for i in keep])


def _new_model_start(predictor: AdaptedPredictor, X: np.ndarray, F: np.ndarray | None, pool: list[Any]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Offset and slope on the base's signal that best reproduce, on these prompts, where the semantic tier
    places each model the base never saw (its quality prior, through the base's anchors)."""
    from pointsman.config.priors import quality_prior
    from pointsman.routing.semantic import PoolQualityMap

    assert predictor.base is not None
    base = predictor.base
    trained = list(base.model_names)
    new = predictor.model_names[len(trained):]
    by_name = {mc.name: mc for mc in pool}
    offset, slope = np.zeros(len(new)), np.zeros(len(new))
    known = [by_name[name] for name in new if name in by_name]
    if not known:
        return offset, slope
    anchors = dict(base.info.get("anchor_quality") or {})
    for name in trained:
        if name in by_name and name not in anchors:
            anchors[name] = quality_prior(by_name[name])
    mapper = PoolQualityMap(trained, anchors, known)
    if not mapper.usable_anchors.any():
        return offset, slope
    q, sd = base.predict_with_uncertainty(X, F)
    low, high = base.score_range
    q01, sd01 = (q - low) / ((high - low) or 1.0), sd / ((high - low) or 1.0)
    placed = np.array([mapper.map(q01[i], sd01[i])[0] for i in range(len(q01))])  # (n, known)
    _, _, z = predictor.base_view(X, F)
    D = np.stack([np.ones(len(z)), z], axis=1)
    for col, mc in enumerate(known):
        coef = np.linalg.lstsq(D, placed[:, col] - q01.mean(axis=1), rcond=None)[0]
        offset[new.index(mc.name)], slope[new.index(mc.name)] = coef
    return offset, slope
