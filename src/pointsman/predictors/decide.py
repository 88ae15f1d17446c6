"""Routing decisions from predicted quality and cost: the knob and its sweep.

* :func:`choose_by_lambda`: per prompt, ``argmax_j quality[j] - lam * cost[j]`` (quality in [0, 1]
  units if you normalise it, cost in USD or any unit; ``lam`` converts between them).
* :func:`choose_by_floor`: the cheapest model whose predicted quality clears ``floor``; the best
  predicted model when none does.
* :func:`decision_confidence`: how sure the predictor is that the chosen model beats the runner-up,
  from the predictions' uncertainty (normal approximation): ``Phi(margin / sqrt(sd_a^2 + sd_b^2))``.
  A deferral tier can send prompts with a confidence below a threshold to a slower judge.
* :func:`lambda_grid` / :func:`sweep`: the knob values that trace a cost-quality curve.

All functions are vectorised over prompts: ``quality``/``cost`` are (n, m) (cost may be (m,)).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["choose_by_lambda", "choose_by_floor", "decision_confidence", "lambda_grid", "sweep",
           "choose_by_threshold"]


def _cost2d(cost, n: int, m: int) -> np.ndarray:
    c = np.asarray(cost, dtype=np.float64)
    if c.ndim == 1:
        c = np.broadcast_to(c, (n, m))
    return c


def choose_by_lambda(quality: np.ndarray, cost: np.ndarray, lam: float) -> np.ndarray:
    """(n,) model indices maximising quality - lam * cost (ties -> the cheaper model)."""
    q = np.atleast_2d(np.asarray(quality, dtype=np.float64))
    c = _cost2d(cost, *q.shape)
    util = q - lam * c
    # tie-break towards lower cost: subtract a tiny cost-proportional epsilon
    util = util - 1e-12 * (c / (np.abs(c).max() + 1e-300))
    return np.argmax(util, axis=1)


def choose_by_floor(quality: np.ndarray, cost: np.ndarray, floor: float) -> np.ndarray:
    """(n,) cheapest model with quality >= floor, else the best-quality model."""
    q = np.atleast_2d(np.asarray(quality, dtype=np.float64))
    c = _cost2d(cost, *q.shape)
    ok = q >= floor
    masked = np.where(ok, c, np.inf)
    cheapest = np.argmin(masked, axis=1)
    best = np.argmax(q, axis=1)
    return np.where(ok.any(axis=1), cheapest, best)


def choose_by_threshold(strong_score: np.ndarray, threshold: float, strong: int, weak: int) -> np.ndarray:
    """Two-model routing: strong where the router's score (e.g. predicted gain) >= threshold."""
    s = np.asarray(strong_score)
    return np.where(s >= threshold, strong, weak)


def decision_confidence(quality: np.ndarray, sd: np.ndarray, cost: np.ndarray, lam: float,
                        choice: np.ndarray | None = None) -> np.ndarray:
    """(n,) probability in [0.5, 1] that ``choice`` (default: the lambda choice) beats the runner-up.

    Uses the utility margin over the second-best model and the two predictions' uncertainties,
    assumed independent and normal.
    """
    q = np.atleast_2d(np.asarray(quality, dtype=np.float64))
    s = np.atleast_2d(np.asarray(sd, dtype=np.float64))
    n, m = q.shape
    c = _cost2d(cost, n, m)
    util = q - lam * c
    if choice is None:
        choice = choose_by_lambda(q, c, lam)
    rows = np.arange(n)
    if m == 1:
        return np.ones(n)
    other = util.copy()
    other[rows, choice] = -np.inf
    runner = np.argmax(other, axis=1)
    margin = util[rows, choice] - util[rows, runner]
    spread = np.sqrt(s[rows, choice] ** 2 + s[rows, runner] ** 2) + 1e-12
    z = margin / spread
    return 0.5 * (1.0 + _erf(z / math.sqrt(2.0)))


def _erf(x: np.ndarray) -> np.ndarray:
    """Vectorised erf (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7)."""
    x = np.asarray(x, dtype=np.float64)
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t
    return s * (1.0 - poly * np.exp(-a * a))


def lambda_grid(quality: np.ndarray, cost: np.ndarray, n: int = 60) -> np.ndarray:
    """Knob values from 0 (best quality, any price) to large enough to always pick the cheapest.

    Log-spaced between the smallest and largest per-prompt quality/cost trade-off rates, so a sweep
    visits every distinct decision region at reasonable resolution.
    """
    q = np.atleast_2d(np.asarray(quality, dtype=np.float64))
    c = _cost2d(cost, *q.shape)
    dq = np.abs(q[:, :, None] - q[:, None, :])
    dc = np.abs(c[:, :, None] - c[:, None, :])
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (dq / dc)[(dc > 0) & (dq > 0)]
    if r.size == 0:
        return np.array([0.0])
    lo, hi = np.quantile(r, 0.001), np.quantile(r, 0.999)
    lo = max(lo, hi * 1e-8)
    return np.concatenate([[0.0], np.geomspace(lo * 0.5, hi * 2.0, n - 2), [np.inf]])


def sweep(quality: np.ndarray, cost: np.ndarray, lambdas: np.ndarray | None = None):
    """Yield (lam, choices (n,)) for each knob value."""
    if lambdas is None:
        lambdas = lambda_grid(quality, cost)
    q = np.atleast_2d(np.asarray(quality, dtype=np.float64))
    c = _cost2d(cost, *q.shape)
    for lam in lambdas:
        if np.isinf(lam):
            yield lam, np.argmin(c, axis=1)
        else:
            yield float(lam), choose_by_lambda(q, c, lam)
