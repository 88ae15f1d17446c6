"""Cascade routing: answer directly with one model, or start a cascade, by expected utility.

Utility is quality minus lambda times cost, in the same units the semantic tier uses (quality in
[0, 1], cost relative to the dearest eligible model), so one knob steers routing and cascading alike
(Dekoninck et al., "A Unified Approach to Routing and Cascading for LLMs", 2024).

* After a model has answered and the verifiers scored its answer ``v`` (P(acceptable)), escalating to
  the next model ``j`` is worth it when its answer is expected to be better by more than it costs:
  ``q_j - lambda * c_j > v`` (the cheap call is already paid for). An explicit ``threshold`` replaces
  that rule with the classic cascade: accept when ``v >= threshold``.
* Before any call, a cascade ``w -> s`` is worth ``E[max(V, q_s - lambda c_s)] - lambda c_w`` where ``V``
  is the verifier's score on ``w``'s answer, not yet known. ``V`` is modelled as Beta with mean ``q_w`` and
  concentration ``kappa`` (small kappa: the verifier is sure of itself, its scores sit near 0 and 1 and
  a cascade is informative; large kappa: its scores sit near ``q_w`` and a cascade adds little). A
  trained verifier carries its fitted kappa. The cascade is chosen when this beats every direct model.

All functions take numpy arrays and are vectorised over prompts where that makes sense, so the same
code runs in the gateway (one prompt) and in `pointsman eval` (thousands).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CascadeChoice", "expected_max", "plan", "plan_many", "should_escalate", "DEFAULT_KAPPA"]

DEFAULT_KAPPA = 2.0  # an untrained guess: scores spread like Beta(2q, 2(1-q)); `pointsman train` fits it
_GRID = (np.arange(64) + 0.5) / 64  # midpoints on (0, 1) for the Beta expectation
_TIE = 1e-9  # a cascade must be strictly better: equal value means one call, not two


def expected_max(mean: np.ndarray, kappa: float, t: np.ndarray) -> np.ndarray:
    """E[max(V, t)] for V ~ Beta(mean * kappa, (1 - mean) * kappa), elementwise (numerical, 64 points)."""
    m = np.clip(np.asarray(mean, dtype=np.float64), 1e-3, 1 - 1e-3)[..., None]
    t = np.asarray(t, dtype=np.float64)
    a, b = m * kappa, (1 - m) * kappa
    log_pdf = (a - 1) * np.log(_GRID) + (b - 1) * np.log1p(-_GRID)
    w = np.exp(log_pdf - log_pdf.max(axis=-1, keepdims=True))
    w /= w.sum(axis=-1, keepdims=True)
    # E[max(V, t)] = E[V] + E[(t - V)+]: the mean exactly, the correction numerically (0 when t <= 0)
    return m[..., 0] + (w * np.maximum(t[..., None] - _GRID, 0.0)).sum(axis=-1)


def should_escalate(score: float, next_quality: float, next_cost: float, lam: float,
                    threshold: float | None = None) -> bool:
    """After an answer scored `score`: call the next model? (threshold given: the classic cascade)."""
    if threshold is not None:
        return score < threshold
    return next_quality - lam * next_cost > score


@dataclass(slots=True)
class CascadeChoice:
    direct: int  # the best model to answer directly (index into the arrays given)
    cheap: int  # the cascade's first model
    strong: int  # where the cascade escalates to
    cascade: bool  # True: start the cascade; False: answer with `direct`
    direct_value: float
    cascade_value: float


def plan(quality: np.ndarray, cost: np.ndarray, lam: float, kappa: float = DEFAULT_KAPPA,
         cheap: int | None = None, strong: int | None = None) -> CascadeChoice:
    """For one prompt: route directly, or cascade from `cheap` to `strong`?

    `quality` and `cost` are (m,) over the eligible models. Without `cheap`/`strong` the cascade
    considered is the cheapest model first, then the model with the best direct utility among the
    dearer ones (or the best-quality one, when the cheapest is also the best direct choice).
    """
    q = np.asarray(quality, dtype=np.float64)
    c = np.asarray(cost, dtype=np.float64)
    utility = q - lam * c
    direct = int(np.argmax(utility - 1e-9 * c))
    if cheap is None:
        cheap = int(np.argmin(c))
    if strong is None:
        dearer = np.flatnonzero(c > c[cheap])
        if len(dearer) == 0:
            return CascadeChoice(direct, cheap, cheap, False, float(utility[direct]), float("-inf"))
        strong = int(dearer[np.argmax(utility[dearer])])
    if strong == cheap:
        return CascadeChoice(direct, cheap, strong, False, float(utility[direct]), float("-inf"))
    value = float(expected_max(q[cheap], kappa, utility[strong])) - lam * float(c[cheap])
    return CascadeChoice(direct, cheap, strong, value > utility[direct] + _TIE, float(utility[direct]), value)


def plan_many(quality: np.ndarray, cost: np.ndarray, lam: float, kappa: float, cheap: int, strong: int) -> np.ndarray:
    """Vectorised `plan` for evaluation: (n,) True where the cascade cheap -> strong beats routing directly.

    quality: (n, m); cost: (n, m) or (m,).
    """
    q = np.atleast_2d(np.asarray(quality, dtype=np.float64))
    c = np.broadcast_to(np.asarray(cost, dtype=np.float64), q.shape)
    utility = q - lam * c
    best_direct = utility.max(axis=1)
    value = expected_max(q[:, cheap], kappa, utility[:, strong]) - lam * c[:, cheap]
    return value > best_direct + _TIE
