"""The online error bound under a shift of mix: calibrated on one QQP mix, served on another.

    .venv/bin/python bench/cache/shift.py [--share 0.1] [--requests 40000] [--seeds 20]

* The acceptance model and threshold are the shipped ones (fitted on QQP's training split, calibrated on its
  calibration split: bench/cache/eval.py, same split). Nothing here is fitted.
* Served traffic: eval.py's held-out test split (shared data, ../shared/data/qqp), resampled to 25% and 50%
  duplicates (and left at its own mix as a control). A request is one pair: text_a is cached, text_b asks;
  its candidate is text_a (as in eval.py's tables); it is a hit when it passes the rule checks and the
  acceptance probability reaches the tenant's threshold, a wrong reuse when it is a hit on a label-0 pair.
  Rates are shares of all requests, as in eval.py and as δ is meant.
* Verification sampling: each request is sampled with probability ``--share``; a sampled request with a
  candidate gives a label (wrong = label 0), as the gateway's check would if its answer comparison were
  exact (here the QQP label stands in for it); a sampled hit costs one upstream call. The threshold is
  `pointsman.cache.online.OnlineBound`'s, the class the gateway runs, with the gateway's defaults.
* Streams of ``--requests`` requests drawn with replacement from the resampled split, ``--seeds`` of them;
  reported per block of requests: wrong reuse and hit rate (mean over seeds, and the share of seeds whose
  block is above δ), labels seen at the block's end, the threshold.

Writes SHIFT.md, shift.json and shift.png beside this file (``--out NAME``: NAME.md, NAME.json, NAME.png).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _embed import embed_texts, load_pairs  # noqa: E402
from eval import MIN_SIM, group_split, pair_table  # noqa: E402

from pointsman.cache import default_acceptance_model  # noqa: E402
from pointsman.cache.online import OnlineBound  # noqa: E402

DELTA = 0.02
MIXES = (0.25, 0.5, None)  # duplicate shares served; None: the test split as it is


def resample(y: np.ndarray, dup: float | None, rng: np.random.Generator) -> np.ndarray:
    """Indices of a subset with ``dup`` positives, as large as the split allows (no row twice)."""
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    if dup is None:
        return np.arange(len(y))
    n_pos = min(len(pos), int(len(neg) * dup / (1 - dup)))
    n_neg = min(len(neg), int(n_pos * (1 - dup) / dup))
    return np.r_[rng.choice(pos, n_pos, replace=False), rng.choice(neg, n_neg, replace=False)]


def stream(p: np.ndarray, y: np.ndarray, share: float, n_requests: int, block: int, seed: int,
           **bound_args: float) -> dict[str, np.ndarray]:
    """One tenant's traffic through the online bound; per-block hit and wrong counts, labels, threshold, and the
    wrong-reuse rate its threshold has on the whole mix (the live rate without the block's own sampling noise)."""
    rng = np.random.default_rng(seed)
    draw = rng.integers(0, len(y), n_requests)
    sampled = rng.random(n_requests) < share
    model = default_acceptance_model(DELTA, encoder="minilm-dup")
    bound = OnlineBound(model.threshold, delta=DELTA, share=share, **bound_args)  # type: ignore[arg-type]
    blocks = n_requests // block
    out = {k: np.zeros(blocks) for k in ("hits", "wrong", "labels", "threshold", "verify_calls", "rate_at_threshold")}
    for i in range(blocks * block):
        j = draw[i]
        t = bound.threshold("tenant")
        pj = p[j]
        hit = bool(pj >= t)  # NaN (no candidate) compares False
        b = i // block
        out["hits"][b] += hit
        out["wrong"][b] += hit and y[j] == 0
        if sampled[i]:
            out["verify_calls"][b] += hit
            bound.add("tenant", None if math.isnan(pj) else float(pj), bool(y[j] == 0 and not math.isnan(pj)))
        if (i + 1) % block == 0:
            out["labels"][b] = bound.tenants["tenant"].labelled if "tenant" in bound.tenants else 0
            out["threshold"][b] = bound.threshold("tenant")
            out["rate_at_threshold"][b] = static_rates(p, y, out["threshold"][b])[1]
    return out


def static_rates(p: np.ndarray, y: np.ndarray, t: float) -> tuple[float, float]:
    hit = p >= t
    return float(hit.mean()), float((hit & (y == 0)).mean())


def oracle(p: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The most a single threshold chosen on the served mix itself could serve within δ (point estimate)."""
    ok = ~np.isnan(p)
    order = np.argsort(-p[ok])
    wrong = np.cumsum(y[ok][order] == 0) / len(y)
    feasible = np.flatnonzero(wrong <= DELTA)
    if not feasible.size:
        return 0.0, 0.0
    i = int(feasible.max())
    return (i + 1) / len(y), float(wrong[i])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--share", type=float, default=0.1)
    ap.add_argument("--requests", type=int, default=40_000)
    ap.add_argument("--block", type=int, default=2000)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--min-labels", type=int, default=500)
    ap.add_argument("--window", type=int, default=2000)
    ap.add_argument("--out", default="shift", help="file stem of the .md (upper-cased), .json and .png written")
    args = ap.parse_args(argv)
    started = time.time()
    from pointsman.embed import MiniLMEncoder
    from pointsman.embed.registry import DUP_PATCH

    a, b, y_all = load_pairs()
    n = len(y_all)
    encoder = MiniLMEncoder(intra_op_threads=2, patch=DUP_PATCH)
    E = embed_texts(a + b, encoder, progress=False)
    split = group_split(a, b)
    te = np.flatnonzero(split == 2)
    model = default_acceptance_model(DELTA, encoder="minilm-dup")
    sim, X, hard = pair_table([a[i] for i in te], [b[i] for i in te], E[:n][te], E[n:][te])
    prob = 1.0 / (1.0 + np.exp(-np.clip(X @ model.w, -30, 30)))
    eligible = (~hard.any(1)) & (sim >= MIN_SIM)
    p_test = np.where(eligible, prob, np.nan)
    y_test = y_all[te]
    rng = np.random.default_rng(0)
    results: dict = {"share": args.share, "requests": args.requests, "block": args.block, "seeds": args.seeds,
                     "delta": DELTA, "shipped_threshold": model.threshold, "min_labels": args.min_labels,
                     "window": args.window, "out": args.out,
                     "encoder": encoder.model_id, "mixes": {}}
    for dup in MIXES:
        idx = resample(y_test, dup, rng)
        p, y = p_test[idx], y_test[idx]
        name = f"{dup:.0%} duplicates" if dup is not None else f"test split as is ({y.mean():.1%} duplicates)"
        runs = [stream(p, y, args.share, args.requests, args.block, seed, min_labels=args.min_labels, window=args.window)
                for seed in range(args.seeds)]
        hits = np.array([r["hits"] for r in runs]) / args.block
        wrong = np.array([r["wrong"] for r in runs]) / args.block
        labels = np.array([r["labels"] for r in runs])
        thr = np.array([r["threshold"] for r in runs])
        calls = np.array([r["verify_calls"] for r in runs]) / args.block
        at_t = np.array([r["rate_at_threshold"] for r in runs])
        static = static_rates(p, y, model.threshold)
        results["mixes"][name] = {
            "pairs": len(y), "duplicates": float(y.mean()), "static": {"hit_rate": static[0], "wrong_rate": static[1]},
            "oracle": dict(zip(("hit_rate", "wrong_rate"), oracle(p, y))),
            "blocks": [{"requests_end": (k + 1) * args.block, "labels": float(labels[:, k].mean()),
                        "wrong_rate": float(wrong[:, k].mean()), "wrong_rate_p90": float(np.quantile(wrong[:, k], 0.9)),
                        "above_delta": float((wrong[:, k] > DELTA).mean()), "hit_rate": float(hits[:, k].mean()),
                        "threshold_median": float(np.median(thr[:, k])), "verify_calls": float(calls[:, k].mean()),
                        "rate_at_threshold": float(at_t[:, k].mean()),
                        "rate_at_threshold_above_delta": float((at_t[:, k] > DELTA).mean())}
                       for k in range(hits.shape[1])]}
        print(name, "static", static, flush=True)
    results["seconds"] = round(time.time() - started, 1)
    (HERE / f"{args.out}.json").write_text(json.dumps(results, indent=1))
    plot(results)
    write_md(results, args)
    return 0


def plot(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, mix in results["mixes"].items():
        blocks = mix["blocks"]
        labels = [b["labels"] for b in blocks]
        line, = left.plot(labels, [100 * b["wrong_rate"] for b in blocks], marker="o", ms=3, label=name)
        left.axhline(100 * mix["static"]["wrong_rate"], color=line.get_color(), ls=":", lw=1)
        right.plot(labels, [100 * b["hit_rate"] for b in blocks], marker="o", ms=3, color=line.get_color(), label=name)
        right.axhline(100 * mix["static"]["hit_rate"], color=line.get_color(), ls=":", lw=1)
    left.axhline(100 * results["delta"], color="k", lw=1, label="δ")
    left.axvline(results["min_labels"], color="grey", ls="--", lw=1)
    right.axvline(results["min_labels"], color="grey", ls="--", lw=1)
    left.set(xlabel="labels seen (tenant)", ylabel="live wrong reuse, % of requests", title="wrong reuse (dotted: shipped threshold)")
    right.set(xlabel="labels seen (tenant)", ylabel="hit rate, % of requests", title="hit rate at the bound")
    left.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / f"{results['out']}.png", dpi=110)


def write_md(results: dict, args: argparse.Namespace) -> None:
    import pointsman

    lines = [
        "# Semantic cache: the online error bound under a shift of mix",
        "",
        f"Run: `.venv/bin/python bench/cache/shift.py --share {args.share} --requests {args.requests} --seeds "
        f"{args.seeds} --min-labels {args.min_labels} --window {args.window} --out {args.out}` "
        f"({time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"Python {platform.python_version()}, pointsman {pointsman.__version__}, {results['seconds']} s; "
        f"written by shift.py with {args.out}.json and {args.out}.png).",
        "",
        f"Shipped acceptance model and threshold ({results['shipped_threshold']:.4f} for δ = {results['delta']}), "
        f"encoder `{results['encoder']}`; one tenant's stream of {args.requests} requests drawn from eval.py's "
        f"held-out split resampled to each mix; {args.share:.0%} of requests sampled for verification; the "
        f"gateway's `OnlineBound` with min_labels = {args.min_labels}, window = {args.window}, confidence 0.95, "
        "min_threshold = 0.5. The verification's answer comparison is taken as exact (the QQP label); a real "
        "comparison's errors are not modelled. Rates: shares of all requests, mean over "
        f"{args.seeds} streams. 'wrong reuse': in the block's own requests ('above δ': the share of streams whose "
        "block exceeded δ, which includes the block's sampling noise: about ±0.3 points at 1.5%); 'rate at "
        "threshold': the wrong reuse the threshold at the block's end has on the whole resampled mix, the tenant's "
        "live rate ('above δ': the share of streams where it exceeds δ, what the 95% bound should keep near 5%).",
        "",
    ]
    for name, mix in results["mixes"].items():
        st, orc = mix["static"], mix["oracle"]
        lines += [f"## {name} ({mix['pairs']} pairs)", "",
                  f"Shipped threshold, no online bound: hit rate {st['hit_rate']:.1%}, wrong reuse "
                  f"{st['wrong_rate']:.2%}. Best single threshold chosen on this mix itself (oracle, point "
                  f"estimate): hit rate {orc['hit_rate']:.1%} at {orc['wrong_rate']:.2%}.", "",
                  "| requests | labels seen | wrong reuse | p90 | above δ | rate at threshold | above δ | hit rate | "
                  "threshold (median) | verify calls |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for blk in mix["blocks"]:
            thr = blk["threshold_median"]
            lines.append(f"| {blk['requests_end']} | {blk['labels']:.0f} | {blk['wrong_rate']:.2%} | "
                         f"{blk['wrong_rate_p90']:.2%} | {blk['above_delta']:.0%} | {blk['rate_at_threshold']:.2%} | "
                         f"{blk['rate_at_threshold_above_delta']:.0%} | {blk['hit_rate']:.1%} | "
                         f"{'off' if not math.isfinite(thr) else f'{thr:.3f}'} | {blk['verify_calls']:.2%} |")
        lines.append("")
    lines += [f"![wrong reuse and hit rate against labels seen]({args.out}.png)", ""]
    (HERE / f"{args.out.upper()}.md").write_text("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
