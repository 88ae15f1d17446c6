"""Should a candidate router replace the deployed one? Compared on held-out recent traffic, at equal cost.

::

    result = compare({"deployed": old, "candidate": new}, X, F, prompt_ids, models, scores,
                     prices={"gpt-4": 10.0, "mixtral": 0.6}, margin=0.01, propensity=p)
    print(result.table()); result.promote

Rows are partial outcome rows (one prompt, one model, one score in 0..1), in time order. The most recent
``holdout_share`` of the prompts is held out (or pass ``held_out``); a kNN baseline is fitted on the rows
before them and reported beside the routers. Each router is swept over the knob (``argmax quality -
lambda * relative price``, the semantic tier's rule) on the held-out prompts, giving (mean relative cost,
estimated mean score) points; its quality at a cost is read off the upper hull of those points (mixing two
knob settings reaches every point between them, as for AIQ).

**Estimating a router's score from partial labels.** On a held-out prompt the router may choose a model
nobody scored, and which models were scored depends on the deployed router's choice: simply dropping the
unscored choices would favour routers that agree with the deployed one. Two unbiased estimates:

* ``propensity`` given (per row: the probability that this row's model was scored for this prompt, 1 for
  the deployed router's own choice, the shadow share divided by the models a shadow could pick for a shadow
  answer): the **doubly robust** estimate ``q(x, a) + [a scored] (score - q(x, a)) / p(x, a)``, ``q`` the kNN
  baseline fitted on the earlier rows (so independent of the held-out ones). Unbiased whenever the
  propensities are right and positive for every model a router may choose; ``q`` only lowers the variance.
  Where shadows are rare the estimate leans on ``q`` and is noisy: the bootstrap interval says so.
* no ``propensity``: only held-out prompts with a score for **every** pool model count (a shadow for each
  other model). Unbiased when those prompts were picked independently of their content (random shadow
  sampling); with many models such prompts are rare, and with fewer than ``min_prompts`` nothing is promoted.

**Promotion.** The candidate is promoted only when, at the deployed router's cost at the default knob and
over the whole knob (the area under the hull, cost normalised between the cheapest and the dearest model),
the lower ``confidence`` bound of (candidate - deployed) from a paired bootstrap over prompts is above
``-margin``: "not worse beyond the margin, at equal cost", with the noise of a small sample counted against
the candidate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

from pointsman.config.schema import DEFAULT_LAMBDA
from pointsman.evaluation.metrics import aiq, hull_quality_at, upper_hull
from pointsman.predictors.base import QualityPredictor
from pointsman.predictors.decide import lambda_grid
from pointsman.predictors.knn import KNNPredictor

__all__ = ["Comparison", "RouterResult", "compare"]

# a router: a predictor, or a function from (X, F) to (n, pool) quality in 0..1 (e.g. one mapped onto the pool)
Router = Union[QualityPredictor, Callable[[np.ndarray, np.ndarray | None], np.ndarray]]
KNN_NAME = "knn (earlier rows)"


@dataclass
class RouterResult:
    name: str
    cost_at_knob: float  # mean price relative to the dearest model, at the default knob
    quality_at_knob: float  # estimated mean score at the default knob
    quality_at_cost: float  # on the hull, at the deployed router's cost at the default knob
    area: float  # mean hull quality over the cost range
    delta: float = float("nan")  # quality_at_cost minus the deployed router's
    delta_low: float = float("nan")  # its lower confidence bound
    area_delta: float = float("nan")
    area_delta_low: float = float("nan")


@dataclass
class Comparison:
    results: list[RouterResult]
    promote: bool
    reason: str
    estimator: str
    margin: float
    confidence: float
    lambda_: float
    prompts: int
    rows: int
    notes: list[str] = field(default_factory=list)

    def result(self, name: str) -> RouterResult:
        return next(r for r in self.results if r.name == name)

    def table(self) -> str:
        lines = [f"Held-out prompts: {self.prompts} ({self.rows} rows); estimate: {self.estimator}; "
                 f"default knob lambda={self.lambda_:g}; margin {self.margin:g}; "
                 f"bounds: one-sided {self.confidence:.0%} paired bootstrap", "",
                 "| router | cost at knob | score at knob | score at equal cost | vs deployed (lower bound) "
                 "| area over knob | vs deployed (lower bound) |", "|---|---|---|---|---|---|---|"]
        for r in self.results:
            vs = "" if np.isnan(r.delta) else f"{r.delta:+.4f} ({r.delta_low:+.4f})"
            vs_area = "" if np.isnan(r.area_delta) else f"{r.area_delta:+.4f} ({r.area_delta_low:+.4f})"
            lines.append(f"| {r.name} | {r.cost_at_knob:.4f} | {r.quality_at_knob:.4f} | {r.quality_at_cost:.4f} | "
                         f"{vs} | {r.area:.4f} | {vs_area} |")
        lines += ["", f"**{'promote' if self.promote else 'refuse'}**: {self.reason}"]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def compare(routers: Mapping[str, Router], X: np.ndarray, F: np.ndarray | None, prompt_ids: Sequence[Any],
            models: Sequence[str], scores: np.ndarray, *, prices: Mapping[str, float], margin: float = 0.01,
            deployed: str = "deployed", candidate: str = "candidate", held_out: np.ndarray | None = None,
            holdout_share: float = 0.3, propensity: np.ndarray | None = None, lambda_: float = DEFAULT_LAMBDA,
            confidence: float = 0.95, n_boot: int = 400, min_prompts: int = 30, knn: bool = True,
            seed: int = 0) -> Comparison:
    """Compare ``routers`` (which must include ``deployed`` and ``candidate``) on held-out rows; see the module."""
    if deployed not in routers or candidate not in routers:
        raise ValueError(f"routers must include {deployed!r} and {candidate!r}")
    pool = list(prices)
    price = np.array([float(prices[m]) for m in pool])
    cost = price / price.max() if price.max() > 0 else price
    ids = list(prompt_ids)
    y = np.asarray(scores, dtype=np.float64)
    X = np.asarray(X, dtype=np.float32)
    if not (len(ids) == len(models) == len(y) == len(X)):
        raise ValueError("X, prompt_ids, models and scores need one entry per row")
    unknown = sorted(set(models) - set(pool))
    if unknown:
        raise ValueError(f"rows of models without a price: {unknown}")
    order = list(dict.fromkeys(ids))  # prompts in order of first appearance: rows are in time order
    index = {p: i for i, p in enumerate(order)}
    row_prompt = np.array([index[p] for p in ids])
    row_model = np.array([pool.index(m) for m in models])
    if held_out is None:
        held_prompts = np.arange(len(order)) >= int(round(len(order) * (1 - holdout_share)))
        held = held_prompts[row_prompt]
    else:
        held = np.asarray(held_out, dtype=bool)
    test_prompts = np.unique(row_prompt[held])
    if propensity is not None:
        propensity = np.asarray(propensity, dtype=np.float64)
        if len(propensity) != len(y) or (propensity[held] <= 0).any():
            raise ValueError("propensity needs one positive entry per row")

    # the held-out prompts: one embedding each, observed scores (and propensities) as (prompts, pool) tables
    local = {p: i for i, p in enumerate(test_prompts)}
    first: dict[int, int] = {}
    for row in np.flatnonzero(held):
        first.setdefault(int(local[row_prompt[row]]), int(row))
    rows_of = np.array([first[i] for i in range(len(test_prompts))])
    Xt = X[rows_of]
    Ft = None if F is None else np.asarray(F)[rows_of]
    observed = _table(len(test_prompts), len(pool), [local[p] for p in row_prompt[held]], row_model[held], y[held])
    prop = None if propensity is None else _table(len(test_prompts), len(pool), [local[p] for p in row_prompt[held]],
                                                  row_model[held], propensity[held])

    named: dict[str, Router] = dict(routers)
    notes: list[str] = []
    baseline = None
    train_rows = ~held
    if knn and train_rows.sum() >= 10:
        baseline = _knn_on_rows(X[train_rows], row_prompt[train_rows], row_model[train_rows], y[train_rows], pool)
        named[KNN_NAME] = baseline
    elif knn:
        notes.append("too few earlier rows for the kNN baseline")

    if propensity is not None:
        estimator = "doubly robust (kNN on earlier rows as the direct model, logged propensities)"
        keep = np.ones(len(test_prompts), dtype=bool)
        direct = (_predict_pool(baseline, Xt, Ft, pool) if baseline is not None
                  else np.tile(np.nanmean(observed, axis=0), (len(test_prompts), 1)))
        direct = np.nan_to_num(direct, nan=float(np.nanmean(observed)))
    else:
        estimator = "prompts with every pool model scored"
        keep = ~np.isnan(observed).any(axis=1)
        direct = None
    n_eval = int(keep.sum())
    rows_used = int(held.sum())
    if n_eval < min_prompts:
        return Comparison([], False, f"only {n_eval} held-out prompts can be scored (at least {min_prompts} needed)",
                          estimator, margin, confidence, lambda_, n_eval, rows_used, notes)

    predictions = {name: _predict_pool(router, Xt[keep], None if Ft is None else Ft[keep], pool)
                   for name, router in named.items()}
    grid = np.unique(np.concatenate([lambda_grid(np.vstack(list(predictions.values())), cost, n=40), [lambda_]]))
    obs, p = observed[keep], None if prop is None else prop[keep]
    dm = None if direct is None else direct[keep]
    contributions = {name: _contributions(q, cost, grid, obs, p, dm) for name, q in predictions.items()}
    costs = {name: _costs(q, cost, grid) for name, q in predictions.items()}
    knob = int(np.flatnonzero(grid == lambda_)[0])
    c_star = float(costs[deployed][knob])
    c_min, c_max = float(cost.min()), float(cost.max())

    def summary(weights: np.ndarray) -> dict[str, tuple[float, float]]:
        out = {}
        for name in named:
            values = weights @ contributions[name] / weights.sum()
            hc, hq = upper_hull(costs[name], values)
            at = float(hull_quality_at(hc, hq, c_star))
            out[name] = (hq[0] if np.isnan(at) else at, aiq(costs[name], values, c_min, c_max) if c_max > c_min
                         else float(values.max()))
        return out

    point = summary(np.ones(n_eval))
    rng = np.random.default_rng(seed)
    boots = [summary(np.bincount(rng.integers(0, n_eval, n_eval), minlength=n_eval).astype(np.float64))
             for _ in range(n_boot)]
    results = []
    for name in named:
        values = contributions[name].mean(axis=0)
        r = RouterResult(name, float(costs[name][knob]), float(values[knob]), point[name][0], point[name][1])
        if name != deployed:
            d = np.array([b[name][0] - b[deployed][0] for b in boots])
            a = np.array([b[name][1] - b[deployed][1] for b in boots])
            r.delta, r.area_delta = point[name][0] - point[deployed][0], point[name][1] - point[deployed][1]
            r.delta_low = float(np.quantile(d, 1 - confidence))
            r.area_delta_low = float(np.quantile(a, 1 - confidence))
        results.append(r)
    cand = next(r for r in results if r.name == candidate)
    ok_cost, ok_area = cand.delta_low >= -margin, cand.area_delta_low >= -margin
    if ok_cost and ok_area:
        reason = (f"at equal cost the candidate is {cand.delta:+.4f} (lower bound {cand.delta_low:+.4f}) and over the knob "
                  f"{cand.area_delta:+.4f} (lower bound {cand.area_delta_low:+.4f}): not worse beyond {margin:g}")
    else:
        which = [f"at equal cost {cand.delta:+.4f} (lower bound {cand.delta_low:+.4f})"] if not ok_cost else []
        which += [f"over the knob {cand.area_delta:+.4f} (lower bound {cand.area_delta_low:+.4f})"] if not ok_area else []
        reason = f"the candidate may be worse than the deployed router beyond {margin:g}: " + "; ".join(which)
    return Comparison(results, ok_cost and ok_area, reason, estimator, margin, confidence, lambda_, n_eval, rows_used,
                      notes)


def _table(n: int, m: int, prompt: Sequence[int], model: np.ndarray, value: np.ndarray) -> np.ndarray:
    """(n, m) mean value per (prompt, model), NaN where none."""
    total, count = np.zeros((n, m)), np.zeros((n, m))
    np.add.at(total, (np.asarray(prompt), model), value)
    np.add.at(count, (np.asarray(prompt), model), 1.0)
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _knn_on_rows(X: np.ndarray, prompt: np.ndarray, model: np.ndarray, y: np.ndarray, pool: list[str]) -> KNNPredictor:
    """A kNN router on partial rows: one training prompt per distinct prompt, NaN where a model was not scored."""
    prompts, first = np.unique(prompt, return_index=True)
    where = {p: i for i, p in enumerate(prompts)}
    Y = _table(len(prompts), len(pool), [where[p] for p in prompt], model, y)
    used = ~np.isnan(Y).all(axis=0)
    knn = KNNPredictor(k=20)
    knn.fit(X[first], None, Y[:, used], model_names=[m for m, u in zip(pool, used) if u], score_range=(0.0, 1.0))
    return knn


def _predict_pool(router: Router, X: np.ndarray, F: np.ndarray | None, pool: list[str]) -> np.ndarray:
    """(n, pool) predicted quality in 0..1; a kNN that never saw a model predicts its pool-wide mean."""
    if not isinstance(router, QualityPredictor):
        return np.asarray(router(X, F), dtype=np.float64)
    q = router.predict(X, F)
    low, high = router.score_range
    q = (q - low) / ((high - low) or 1.0)
    missing = [m for m in pool if m not in router.model_names]
    if missing and not isinstance(router, KNNPredictor):
        raise ValueError(f"router does not predict {missing}: pass a function mapping it onto the pool")
    out = np.tile(q.mean(axis=1, keepdims=True), (1, len(pool)))
    for j, m in enumerate(pool):
        if m in router.model_names:
            out[:, j] = q[:, router.model_names.index(m)]
    return out


def _choices(q: np.ndarray, cost: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """(lambdas, n) the knob's choice per prompt (the semantic tier's rule; infinity: the cheapest)."""
    out = np.empty((len(grid), len(q)), dtype=np.int64)
    for k, lam in enumerate(grid):
        out[k] = np.argmin(np.broadcast_to(cost, q.shape), axis=1) if np.isinf(lam) else \
            np.argmax(q - lam * cost - 1e-9 * cost, axis=1)
    return out


def _costs(q: np.ndarray, cost: np.ndarray, grid: np.ndarray) -> np.ndarray:
    return cost[_choices(q, cost, grid)].mean(axis=1)


def _contributions(q: np.ndarray, cost: np.ndarray, grid: np.ndarray, observed: np.ndarray,
                   propensity: np.ndarray | None, direct: np.ndarray | None) -> np.ndarray:
    """(n, lambdas) each prompt's estimated score of the router's choice."""
    choice = _choices(q, cost, grid).T  # (n, lambdas)
    rows = np.arange(len(q))[:, None]
    got = observed[rows, choice]
    if direct is None:  # complete prompts: every choice is scored
        return got
    assert propensity is not None
    base = direct[rows, choice]
    seen = ~np.isnan(got)
    correction = np.where(seen, (np.nan_to_num(got) - base) / np.where(seen, propensity[rows, choice], 1.0), 0.0)
    return base + correction
