"""The online error bound: the acceptance threshold recalibrated from labels of live traffic, per tenant.

A share of a tenant's cacheable requests is *sampled* (a coin per request, whatever its outcome). A sampled
request becomes one label: the acceptance probability ``p`` of the cached candidate that would answer it
(the served one for a hit, the best one that passed the rule checks for a miss; NaN when none did) and
whether that reuse is wrong (the fresh answer differed from the cached one). Because the sample is a
simple random sample of requests, ``k(t)`` = wrong labels with ``p >= t`` over ``n`` labels estimates the
tenant's wrong-reuse rate, as a share of all its requests (the meaning of ``delta`` in the shipped
calibration), at *any* threshold ``t``; a one-sided Clopper-Pearson bound on it picks the threshold:

* ``n >= min_labels``: the lowest threshold whose upper bound is ≤ δ (``proven``; it may be above or below
  the shipped one, never below ``min_threshold``; infinite, i.e. no semantic hits, when none is);
* fewer labels: the shipped threshold (or the gateway-wide one when that is stricter), unless the labels
  already show it exceeds δ (its *lower* bound > δ): then the proven one (``contradicted``).

Client rejects of semantic hits are not sampled; they enter with the sampling share as weight (a reject is
a wrong label the sample would have seen with that probability), so they can only tighten.

Labels are kept in a sliding window per tenant (a bounded number of tenants, least recently labelled
dropped first) and in a gateway-wide window that tenants without enough labels of their own fall back to.
Pure Python + numpy: the bench (bench/cache/shift.py) runs the same code as the gateway.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["OnlineBound", "LabelWindow", "binom_upper", "binom_lower", "max_wrong"]


# -- exact binomial bounds without scipy (scipy is a training extra, not a gateway dependency) ------------
def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-12:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b) (a, b > 0): the Beta(a, b) CDF at x."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def _beta_ppf(q: float, a: float, b: float) -> float:
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if betainc(a, b, mid) < q:
            lo = mid
        else:
            hi = mid
    return hi


def binom_upper(k: float, n: float, confidence: float) -> float:
    """One-sided Clopper-Pearson upper bound on a rate after k events in n trials (k, n may be weighted)."""
    if n <= 0 or k >= n:
        return 1.0
    return _beta_ppf(confidence, k + 1.0, n - k)


def binom_lower(k: float, n: float, confidence: float) -> float:
    """One-sided Clopper-Pearson lower bound."""
    if n <= 0 or k <= 0:
        return 0.0
    return _beta_ppf(1.0 - confidence, k, n - k + 1.0)


def _upper_at_most(k: float, n: float, delta: float, confidence: float) -> bool:
    """binom_upper(k, n) <= delta, without the quantile search: the Beta(k+1, n-k) CDF at delta >= confidence."""
    return n > k and betainc(k + 1.0, n - k, delta) >= confidence


def _lower_above(k: float, n: float, delta: float, confidence: float) -> bool:
    """binom_lower(k, n) > delta, without the quantile search: the Beta(k, n-k+1) CDF at delta < 1 - confidence."""
    return n > 0 and k > 0 and betainc(k, n - k + 1.0, delta) < 1.0 - confidence


def max_wrong(n: float, delta: float, confidence: float) -> float:
    """The most wrong labels among n whose upper bound is still ≤ delta (-1: none, n is too small)."""
    if not _upper_at_most(0.0, n, delta, confidence):
        return -1.0
    lo, hi = 0.0, max(1.0, delta * n)  # the bound is above the point estimate: k/n < delta
    for _ in range(40):
        mid = (lo + hi) / 2
        if _upper_at_most(mid, n, delta, confidence):
            lo = mid
        else:
            hi = mid
    return lo


class LabelWindow:
    """The last ``size`` labels: (p, wrong, weight) in numpy rings grown on demand (a quiet tenant costs little)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._p = np.empty(min(size, 64), dtype=np.float32)
        self._wrong = np.empty_like(self._p)  # the label's weight when wrong, else 0
        self._weight = np.empty_like(self._p)
        self._next = 0
        self._len = 0
        self.seen = 0.0  # every label ever added (weighted), the window's or not

    def __len__(self) -> int:
        return self._len

    def add(self, p: float, wrong: bool, weight: float = 1.0) -> None:
        if self._len == len(self._p) and self._len < self.size:  # grow: keep order, then write at the end
            grow = min(self.size, 2 * len(self._p))
            self._p, self._wrong, self._weight = (np.resize(a, grow) for a in (self._p, self._wrong, self._weight))
            self._next = self._len
        i = self._next
        self._p[i], self._wrong[i], self._weight[i] = p, weight if wrong else 0.0, weight
        self._next = (i + 1) % max(1, min(self.size, len(self._p)))
        self._len = min(self._len + 1, self.size)
        self.seen += weight

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        m = self._len
        return self._p[:m], self._wrong[:m], self._weight[:m]

    def counts(self, threshold: float) -> tuple[float, float]:
        """(weighted wrong labels with p >= threshold, weighted labels): k(t) and n."""
        p, wrong, weight = self.arrays()
        with np.errstate(invalid="ignore"):  # NaN p: no candidate, never a hit
            k = float(wrong[p >= threshold].sum())
        return k, float(weight.sum())


@dataclass(slots=True)
class TenantBound:
    window: LabelWindow
    threshold: float
    reason: str = "too few labels"
    sampled: int = 0
    labelled: int = 0  # labels added (the window may have dropped old ones)
    disagreed: int = 0  # verified would-be hits and near misses whose answers differed
    feedback: int = 0  # client rejects of semantic hits


@dataclass
class OnlineBound:
    """Per-tenant acceptance thresholds from labelled live traffic (see the module's docstring).

    ``shipped``: the calibrated threshold (the acceptance model's); ``share``: the sampling share (the weight
    of a client reject); ``min_threshold``: never loosen below it."""

    shipped: float
    delta: float = 0.02
    confidence: float = 0.95
    min_labels: int = 500
    window: int = 2000
    pooled_window: int = 20_000
    max_tenants: int = 1000
    min_threshold: float = 0.5
    share: float = 0.05
    tenants: OrderedDict[str, TenantBound] = field(default_factory=OrderedDict)
    _kmax: dict[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.pool = TenantBound(LabelWindow(self.pooled_window), self.shipped)
        self._fallback = self.shipped  # what a tenant without enough labels of its own uses

    # -- the hot path: one dict look-up --------------------------------------------------------------------
    def threshold(self, tenant: str) -> float:
        found = self.tenants.get(tenant)
        if found is None:
            return self._fallback
        # without a proven threshold of its own a tenant follows the gateway-wide fallback as it moves
        return found.threshold if found.reason == "proven" else max(found.threshold, self._fallback)

    # -- labels (off the client's path) ---------------------------------------------------------------------
    def add(self, tenant: str, p: float | None, wrong: bool, weight: float = 1.0) -> float:
        """One label (``p`` None: no candidate passed the checks); returns the tenant's new threshold."""
        value = float("nan") if p is None else float(p)
        self.pool.window.add(value, wrong, weight)
        self.pool.labelled += 1
        self.pool.disagreed += int(wrong)
        self.pool.threshold, self.pool.reason = self._decide(self.pool.window, self.shipped)
        self._fallback = max(self.shipped, self.pool.threshold)
        state = self._tenant(tenant)
        state.window.add(value, wrong, weight)
        state.labelled += 1
        state.disagreed += int(wrong)
        state.threshold, state.reason = self._decide(state.window, self._fallback)
        return state.threshold

    def add_feedback(self, tenant: str, p: float) -> float:
        """A client's reject of a semantic hit served at acceptance probability ``p``."""
        self._tenant(tenant).feedback += 1
        self.pool.feedback += 1
        return self.add(tenant, p, True, weight=self.share)

    def note_sampled(self, tenant: str) -> None:
        state = self.tenants.get(tenant)
        if state is not None:
            state.sampled += 1
        self.pool.sampled += 1

    def _tenant(self, tenant: str) -> TenantBound:
        state = self.tenants.get(tenant)
        if state is None:
            state = self.tenants[tenant] = TenantBound(LabelWindow(self.window), self._fallback)
            while len(self.tenants) > self.max_tenants:
                self.tenants.popitem(last=False)  # its threshold falls back to the gateway-wide one
        else:
            self.tenants.move_to_end(tenant)
        return state

    # -- the decision --------------------------------------------------------------------------------------
    def _decide(self, window: LabelWindow, base: float) -> tuple[float, str]:
        k_base, n = window.counts(base)
        if n >= self.min_labels:
            return max(self.proven(window), self.min_threshold), "proven"
        if _lower_above(k_base, n, self.delta, self.confidence):
            return max(self.proven(window), base), "contradicted"
        return base, "too few labels"

    def proven(self, window: LabelWindow) -> float:
        """The lowest threshold whose wrong-reuse upper bound is ≤ δ (inf: none)."""
        p, wrong, weight = window.arrays()
        n = float(weight.sum())
        kmax = self._max_wrong(n)
        if kmax < 0:
            return math.inf
        bad = wrong > 0
        pw, ww = p[bad].astype(np.float64), wrong[bad].astype(np.float64)
        if ww.sum() <= kmax:
            return -math.inf  # no wrong label would be served beyond what δ allows: any threshold
        order = np.argsort(-pw, kind="stable")
        cum = np.cumsum(ww[order])
        j = int(np.argmax(cum > kmax))  # the first wrong label (highest p first) that cannot be served
        # the next float32 above it (labels are float32: a float64 just above would round back onto the label)
        return float(np.nextafter(np.float32(pw[order][j]), np.float32(np.inf)))

    def _max_wrong(self, n: float) -> float:
        key = int(round(n * 4))  # weighted counts: quarter-label resolution is plenty
        found = self._kmax.get(key)
        if found is None:
            if len(self._kmax) > 4096:
                self._kmax.clear()
            found = self._kmax[key] = max_wrong(key / 4, self.delta, self.confidence)
        return found

    # -- exposure ------------------------------------------------------------------------------------------
    def estimate(self, window: LabelWindow, threshold: float) -> dict[str, Any]:
        """The wrong-reuse rate of unverified hits at ``threshold``: estimate, two-sided interval, one-sided bound."""
        k, n = window.counts(threshold)
        tail = (1 - self.confidence) / 2
        return {"estimate": k / n if n else None, "lower": binom_lower(k, n, 1 - tail) if n else 0.0,
                "upper": binom_upper(k, n, 1 - tail), "bound": binom_upper(k, n, self.confidence),
                "confidence": self.confidence, "wrong_labels": round(k, 6), "labels": round(n, 6)}

    def snapshot(self, top: int = 20) -> dict[str, Any]:
        def describe(state: TenantBound) -> dict[str, Any]:
            t = state.threshold
            return {"threshold": t if math.isfinite(t) else None, "semantic_hits": t != math.inf,
                    "reason": state.reason, "labels_seen": state.labelled, "disagreed": state.disagreed,
                    "feedback_rejects": state.feedback, "wrong_reuse": self.estimate(state.window, t)}

        busiest = sorted(self.tenants.items(), key=lambda kv: -kv[1].labelled)[:top]
        return {"shipped_threshold": self.shipped, "delta": self.delta, "min_labels": self.min_labels,
                "fallback_threshold": self._fallback if math.isfinite(self._fallback) else None,
                "gateway": describe(self.pool), "tenants_tracked": len(self.tenants),
                "tenants": [{"tenant": name, **describe(state)} for name, state in busiest]}
