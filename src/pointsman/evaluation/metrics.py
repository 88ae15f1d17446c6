"""Routing metrics: RouteLLM's two-model curve metrics and RouterBench's N-model AIQ.

Two models (a strong and a weak one), following RouteLLM (``routellm/evals/evaluate.py``):

* A router gives each prompt a score (higher = more in need of the strong model). Sending the
  top share ``p`` of prompts to the strong model gives a quality ``q(p)``.
* **PGR(p)** = (q(p) - q_weak) / (q_strong - q_weak), the performance gap recovered.
* **APGR** = area under PGR(p) for p in [0, 1]. RouteLLM computes it with a trapezoid over 10
  threshold quantiles; here the curve is evaluated exactly at every k/n (ties in the router's
  score are split in expectation, i.e. linearly interpolated, as random tie-breaking would), so
  APGR is the exact area. Random routing scores 0.5.
* **CPT(x%)**: the smallest strong-call share whose PGR reaches x%.
* **strong share for 95%**: the smallest strong-call share whose quality reaches 95% of the strong
  model's quality (0 if the weak model already does).

N models, following RouterBench (Hu et al., 2024):

* A router swept over its knob gives (mean cost, mean quality) points. Mixing two knob settings at
  random achieves every point on the segment between them, so the router's achievable curve is
  the **non-decreasing upper convex hull** of its points.
* **AIQ** = mean of that hull over cost normalised to [0, 1] between the cheapest and the most
  expensive single model's mean cost. The cheapest single model's point is always added (any
  router can degenerate to it); the hull is flat right of its last point.
* **cost share for a quality target**: the least mean cost on the hull reaching a target quality,
  as a share of a reference model's mean cost (e.g. 95% of gpt-4-1106's score).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "TwoModelCurve",
    "two_model_curve",
    "oracle_two_model_curve",
    "apgr",
    "cpt",
    "share_for_quality",
    "upper_hull",
    "hull_quality_at",
    "aiq",
    "cost_share_for_quality",
    "routed_outcome",
]


@dataclass
class TwoModelCurve:
    """Quality at strong-call shares ``share`` (0..1, ascending), with the end points' qualities."""

    share: np.ndarray
    quality: np.ndarray
    q_weak: float
    q_strong: float

    @property
    def pgr(self) -> np.ndarray:
        return (self.quality - self.q_weak) / (self.q_strong - self.q_weak)

    def quality_at(self, share: float) -> float:
        return float(np.interp(share, self.share, self.quality))

    def apgr(self) -> float:
        return apgr(self)

    def cpt(self, pgr_target: float) -> float:
        return cpt(self, pgr_target)

    def share_for_quality(self, frac_of_strong: float = 0.95) -> float:
        return share_for_quality(self, frac_of_strong)


def two_model_curve(router_score: np.ndarray, weak: np.ndarray, strong: np.ndarray) -> TwoModelCurve:
    """Exact expected quality curve of routing the top-scored prompts to the strong model.

    ``router_score``: (n,) higher means "send to strong first"; ``weak``/``strong``: (n,) the two
    models' scores (e.g. 0/1 correctness) on the same prompts, no NaN.
    """
    s = np.asarray(router_score, dtype=np.float64)
    w = np.asarray(weak, dtype=np.float64)
    st = np.asarray(strong, dtype=np.float64)
    n = len(s)
    if n == 0 or w.shape != (n,) or st.shape != (n,):
        raise ValueError("router_score, weak and strong must be equal-length non-empty vectors")
    if np.isnan(w).any() or np.isnan(st).any() or np.isnan(s).any():
        raise ValueError("NaN in scores: drop incomplete rows first")
    gain = st - w
    order = np.argsort(-s, kind="stable")
    ss, g = s[order], gain[order]
    # Tie groups: within a group every prompt gets the group's mean gain (expected value under
    # random tie-breaking), which makes the cumulative curve linear across the group.
    boundaries = np.flatnonzero(np.diff(ss) != 0) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [n]))
    sums = np.add.reduceat(g, starts)
    g = np.repeat(sums / (ends - starts), ends - starts)
    cum = np.concatenate(([0.0], np.cumsum(g)))
    q_weak = float(w.mean())
    q_strong = float(st.mean())
    quality = q_weak + cum / n
    share = np.arange(n + 1) / n
    return TwoModelCurve(share=share, quality=quality, q_weak=q_weak, q_strong=q_strong)


def oracle_two_model_curve(weak: np.ndarray, strong: np.ndarray) -> TwoModelCurve:
    """The best possible router: strong first where it gains most (RouteLLM's 'optimal')."""
    weak = np.asarray(weak, dtype=np.float64)
    strong = np.asarray(strong, dtype=np.float64)
    return two_model_curve(strong - weak, weak, strong)


def _trapz(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0)


def apgr(curve: TwoModelCurve) -> float:
    """Average performance gap recovered: area under PGR over strong-call share in [0, 1]."""
    return _trapz(curve.pgr, curve.share)


def cpt(curve: TwoModelCurve, pgr_target: float) -> float:
    """Smallest strong-call share (0..1) at which PGR reaches ``pgr_target`` (e.g. 0.5); 1.0 if never."""
    return _first_crossing(curve.share, curve.pgr, pgr_target)


def share_for_quality(curve: TwoModelCurve, frac_of_strong: float = 0.95) -> float:
    """Smallest strong-call share whose quality reaches ``frac_of_strong`` x the strong model's."""
    return _first_crossing(curve.share, curve.quality, frac_of_strong * curve.q_strong)


def _first_crossing(x: np.ndarray, y: np.ndarray, target: float) -> float:
    y = np.asarray(y, dtype=np.float64)
    above = np.flatnonzero(y >= target - 1e-12)
    if len(above) == 0:
        return 1.0
    k = above[0]
    if k == 0:
        return float(x[0])
    x0, x1, y0, y1 = x[k - 1], x[k], y[k - 1], y[k]
    return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0)) if y1 != y0 else float(x1)


# ----------------------------------------------------------------------------- N models

def upper_hull(cost: np.ndarray, quality: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices of the non-decreasing upper convex hull of points, sorted by cost.

    Points left of the cheapest point cannot be reached; past the best-quality point the hull is
    flat (spending more never has to lower quality: take the best point).
    """
    c = np.asarray(cost, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    ok = ~(np.isnan(c) | np.isnan(q))
    c, q = c[ok], q[ok]
    if len(c) == 0:
        raise ValueError("no points")
    order = np.lexsort((-q, c))  # by cost, best quality first on equal cost
    c, q = c[order], q[order]
    hull: list[tuple[float, float]] = []
    for x, y in zip(c, q):
        if hull and x == hull[-1][0]:
            continue  # same cost, lower quality
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            # remove hull[-1] if it lies on or below the segment hull[-2] -> (x, y)
            if (y2 - y1) * (x - x1) <= (y - y1) * (x2 - x1):
                hull.pop()
            else:
                break
        hull.append((x, y))
    hc = np.array([h[0] for h in hull])
    hq = np.array([h[1] for h in hull])
    # non-decreasing: stop at the maximum, flat afterwards
    top = int(np.argmax(hq))
    return hc[: top + 1], hq[: top + 1]


def hull_quality_at(hull_cost: np.ndarray, hull_quality: np.ndarray, cost: np.ndarray | float) -> np.ndarray:
    """Hull quality at ``cost`` (flat right of the last vertex; NaN left of the first)."""
    c = np.asarray(cost, dtype=np.float64)
    out = np.interp(c, hull_cost, hull_quality, left=np.nan, right=hull_quality[-1])
    return out


def aiq(cost: np.ndarray, quality: np.ndarray, c_min: float, c_max: float,
        anchor: tuple[float, float] | None = None, grid: int = 2001) -> float:
    """RouterBench AIQ: mean hull quality over cost normalised to [0, 1] on [c_min, c_max].

    ``anchor`` (cost, quality) is a point always reachable (the cheapest single model); it is
    added to the router's points. Costs below the hull's first vertex count as that vertex's
    quality only if the anchor is missing (then the router is credited as if it could spend less).
    """
    c = np.asarray(cost, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    if anchor is not None:
        c = np.append(c, anchor[0])
        q = np.append(q, anchor[1])
    hc, hq = upper_hull(c, q)
    xs = np.linspace(c_min, c_max, grid)
    ys = np.interp(xs, hc, hq, left=hq[0], right=hq[-1])
    return _trapz(ys, (xs - c_min) / (c_max - c_min))


def cost_share_for_quality(cost: np.ndarray, quality: np.ndarray, target: float, ref_cost: float,
                           anchor: tuple[float, float] | None = None) -> float:
    """Least mean cost on the hull reaching ``target`` quality, divided by ``ref_cost``; inf if never."""
    c = np.asarray(cost, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    if anchor is not None:
        c = np.append(c, anchor[0])
        q = np.append(q, anchor[1])
    hc, hq = upper_hull(c, q)
    if hq[-1] < target - 1e-12:
        return float("inf")
    return _first_crossing(hc, hq, target) / ref_cost


def routed_outcome(choice: np.ndarray, scores: np.ndarray, cost: np.ndarray) -> tuple[float, float]:
    """Mean (cost, quality) of picking model ``choice[i]`` for prompt ``i``."""
    idx = np.arange(len(choice))
    return float(np.mean(cost[idx, choice])), float(np.mean(scores[idx, choice]))
