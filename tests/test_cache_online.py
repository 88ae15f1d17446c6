"""The online error bound (cache/online.py) on its own: exact binomial bounds, and the threshold it picks from
labels (stays shipped with too few, tightens when contradicted or proven, loosens only when proven, memory bounded)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pointsman.cache.online import LabelWindow, OnlineBound, binom_lower, binom_upper, max_wrong


@pytest.mark.parametrize("k, n", [(0, 10), (3, 100), (0, 149), (12, 1000), (2.5, 300.7), (50, 5000)])
def test_bounds_match_scipys_clopper_pearson(k, n):
    from scipy.stats import beta

    assert binom_upper(k, n, 0.95) == pytest.approx(beta.ppf(0.95, k + 1, n - k), abs=1e-9)
    assert binom_lower(k, n, 0.95) == pytest.approx(beta.ppf(0.05, k, n - k + 1) if k else 0.0, abs=1e-9)


def test_max_wrong_is_the_largest_count_whose_bound_holds():
    assert max_wrong(100, 0.02, 0.95) == -1  # 100 labels cannot prove 2% even with none wrong
    for n in (150, 1000, 5000):
        k = max_wrong(n, 0.02, 0.95)
        assert binom_upper(k, n, 0.95) <= 0.02 + 1e-9 < binom_upper(k + 0.01, n, 0.95)


def test_the_window_keeps_the_newest_labels_in_bounded_memory():
    window = LabelWindow(100)
    for i in range(250):
        window.add(float(i), wrong=i % 2 == 0)
    p, wrong, weight = window.arrays()
    assert len(window) == 100 and sorted(p) == list(range(150, 250)) and wrong.sum() == 50 and weight.sum() == 100
    assert window.seen == 250 and window.counts(200.0) == (25.0, 100.0)


def bound(**kw) -> OnlineBound:
    return OnlineBound(shipped=0.8, **({"min_labels": 500, "window": 2000} | kw))


def test_too_few_labels_keep_the_shipped_threshold():
    b = bound()
    for _ in range(100):
        b.add("t", 0.9, wrong=False)
    assert b.threshold("t") == 0.8 and b.tenants["t"].reason == "too few labels"


def test_labels_that_contradict_the_shipped_threshold_tighten_before_min_labels():
    b = bound()
    rng = np.random.default_rng(0)
    for i in range(300):  # 10% of requests are wrong hits at p in 0.8..0.9: far above δ = 2%
        b.add("t", float(rng.uniform(0.8, 0.9)) if i % 10 == 0 else None, wrong=i % 10 == 0)
    assert b.pool.reason == "contradicted" and b.threshold("t") > 0.8
    assert b.threshold("other") == b.threshold("t")  # a tenant without labels: the gateway-wide one, never looser
    k, n = b.tenants["t"].window.counts(b.threshold("t"))
    assert binom_lower(k, n, 0.95) <= 0.02  # tightened to where the labels no longer show wrong reuse above δ


def test_a_tenant_with_few_labels_follows_the_gateway_wide_threshold_as_it_tightens():
    b = bound()
    b.add("quiet", 0.85, wrong=False)  # labelled once, early: the shipped threshold then
    for i in range(300):
        b.add("busy", 0.85 if i % 10 == 0 else None, wrong=i % 10 == 0)
    assert b.tenants["quiet"].reason == "too few labels" and b.threshold("quiet") == b._fallback > 0.85


def test_one_tenants_contradiction_does_not_loosen_another():
    b = bound()
    for i in range(300):
        b.add("bad", 0.85 if i % 10 == 0 else None, wrong=i % 10 == 0)
        b.add("good", 0.95, wrong=False)
    assert b.threshold("good") >= 0.8 and b.threshold("bad") > 0.85


def test_proven_threshold_serves_what_the_labels_allow_and_no_more():
    b = bound(min_labels=200, min_threshold=0.0)
    rng = np.random.default_rng(1)
    wrong_p = rng.uniform(0.5, 0.95, 60)  # wrong labels spread over p; 1940 harmless labels
    for i in range(2000):
        b.add("t", float(wrong_p[i // 33]) if i % 33 == 0 and i // 33 < 60 else 0.99, wrong=i % 33 == 0 and i // 33 < 60)
    t = b.threshold("t")
    k, n = b.tenants["t"].window.counts(t)
    assert b.tenants["t"].reason == "proven" and binom_upper(k, n, 0.95) <= 0.02
    below = np.nextafter(max(p for p in wrong_p if p < t), -1)  # one wrong label more would break the bound
    k2, _ = b.tenants["t"].window.counts(float(below))
    assert binom_upper(k2, n, 0.95) > 0.02


def test_clean_traffic_with_enough_labels_loosens_but_not_below_min_threshold():
    b = bound(min_labels=200, min_threshold=0.6)
    for _ in range(300):
        b.add("t", 0.65, wrong=False)
    assert b.threshold("t") == 0.6


def test_no_provable_threshold_turns_semantic_hits_off_for_that_tenant_only():
    b = bound(min_labels=100)
    for i in range(120):
        b.add("t", 0.99, wrong=i % 4 == 0)
    assert b.threshold("t") == math.inf and b.snapshot()["tenants"][0]["semantic_hits"] is False


def test_a_client_reject_weighs_the_sampling_share():
    b = bound(share=0.1)
    b.add_feedback("t", 0.85)
    k, n = b.tenants["t"].window.counts(0.8)
    assert (k, n) == pytest.approx((0.1, 0.1)) and b.tenants["t"].feedback == 1


def test_tenants_tracked_are_bounded_and_the_metrics_show_the_busiest():
    b = bound(max_tenants=3)
    for i, name in enumerate("abcde"):
        for _ in range(i + 1):
            b.add(name, None, wrong=False)
    snap = b.snapshot(top=2)
    assert snap["tenants_tracked"] == 3 and [t["tenant"] for t in snap["tenants"]] == ["e", "d"]
    assert snap["gateway"]["labels_seen"] == 15
    est = snap["tenants"][0]["wrong_reuse"]
    assert est["estimate"] == 0 and 0 < est["upper"] < 1 and est["labels"] == 5
