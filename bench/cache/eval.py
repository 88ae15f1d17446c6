"""Semantic-cache evaluation on QQP: cache text_a, ask text_b; a hit on a label-0 pair is a wrong reuse.

    .venv/bin/python bench/cache/eval.py [--encoder minilm-dup|minilm] [--save] [--global-cache]

* Split (by connected groups of texts, so a text never sits on both sides): 40% train (fit the
  acceptance models), 20% calibration (choose thresholds for δ), 40% test (reported).
* Rates are shares of ALL requests of the split: hit rate = served / N, wrong reuse = served label-0 / N.
* Each learned configuration picks its threshold on the calibration split only: the lowest one whose
  wrong-reuse rate there has a one-sided 95% Clopper-Pearson upper bound ≤ δ. ``--bound any-mix`` (the
  default) bounds it among the requests that have no duplicate cached (label 0): since wrong reuse = (share of
  such requests) × that rate, the bound then holds whatever the duplicate share of the traffic;
  ``--bound calibration-mix`` bounds it among all calibration requests (holds on traffic mixed like QQP's).
* For each δ the test split is also reweighted to other duplicate shares (10%, 25%, 50%): the rates a
  threshold gives on traffic mixed unlike the calibration split.
* Second table: the hand-written adversarial pairs of bench/cache/adversarial.jsonl.
* ``--save`` writes the fitted logistic model into src/pointsman/cache/models/ (the shipped default;
  ``--save-mlp`` the mlp too).
* ``--global-cache`` also runs the real SemanticCache: every test text_a in one namespace (usearch
  HNSW beyond 4096 entries), each text_b looked up against all of them.

Embeddings are cached under ~/.cache/pointsman/cache-eval/ (first run: ~10 minutes on 2 cores, ~2 with
MiniLM's int8 products). The MLP row needs scikit-learn (``.venv/bin/pip install scikit-learn``; a bench
tool only, not a dependency of the gateway).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _embed import embed_texts, load_pairs  # noqa: E402

from pointsman.cache.checks import CHECK_NAMES, AcceptanceModel, compare, facts, pair_features  # noqa: E402

MODELS = HERE.parents[1] / "src" / "pointsman" / "cache" / "models"
DELTAS = (0.005, 0.01, 0.02, 0.05)
MIN_SIM = 0.7  # SemanticCache's pre-filter
CONFIDENCE = 0.95


def group_split(a: list[str], b: list[str], seed: int = 0, fractions=(0.4, 0.2)) -> np.ndarray:
    """0 = train, 1 = calibration, 2 = test, by connected components of the pair graph."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for x, y in zip(a, b):
        rx, ry = find(x), find(y)
        if rx != ry:
            parent[rx] = ry
    roots = sorted({find(x) for x in a})
    rng = np.random.default_rng(seed)
    u = dict(zip(roots, rng.random(len(roots))))
    r = np.array([u[find(x)] for x in a])
    return np.where(r < fractions[0], 0, np.where(r < fractions[0] + fractions[1], 1, 2))


def pair_table(a, b, Ea, Eb):
    """Similarities, check flags and pair features for query b against cached a."""
    Fa = [facts(t) for t in a]
    Fb = [facts(t) for t in b]
    sim = (Ea * Eb).sum(1).astype(np.float64)
    results = [compare(fb, fa) for fa, fb in zip(Fa, Fb)]
    X = np.array([pair_features(s, fb, fa, r) for s, fa, fb, r in zip(sim, Fa, Fb, results)])
    hard = np.array([r.flags[:len(CHECK_NAMES)] for r in results]) > 0
    return sim, X, hard


def mlp_inputs(Ea, Eb, X):
    return np.hstack([Ea * Eb, np.abs(Ea - Eb), X[:, 1:]]).astype(np.float32)


def fit_mlp(Z, y, hidden: int = 128, seed: int = 0) -> AcceptanceModel:
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(Z)
    clf = MLPClassifier(hidden_layer_sizes=(hidden,), alpha=1e-2, max_iter=100, early_stopping=True,
                        validation_fraction=0.15, n_iter_no_change=8, random_state=seed)
    clf.fit(sc.transform(Z), y)
    from pointsman.cache.checks import _fold

    w = np.r_[clf.intercepts_[1], clf.coefs_[1][:, 0]]
    # the shipped first layer is float16: use the rounded weights from here on, so the numbers are honest
    W1 = clf.coefs_[0].astype(np.float16)
    hidden, scaler = _fold(W1, clf.intercepts_[0], sc.mean_, sc.scale_)
    model = AcceptanceModel(w, hidden=hidden)
    model.scaler = scaler
    return model


def scores(model: AcceptanceModel, Ea, Eb, X) -> np.ndarray:
    if model.hidden is None:
        return 1.0 / (1.0 + np.exp(-np.clip(X @ model.w, -30, 30)))
    W1, b1 = model.hidden
    H = np.maximum(mlp_inputs(Ea, Eb, X) @ W1 + b1, 0.0)
    z = model.w[0] + H.astype(np.float64) @ model.w[1:]
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


def calibrated_threshold(score, y, eligible, delta, bound: str = "any-mix") -> tuple[float, dict]:
    m = AcceptanceModel(delta=delta, confidence=CONFIDENCE)
    s = np.where(eligible, score, -np.inf)
    # the rate's denominator: the requests without a cached duplicate (any-mix) or all of them
    n = int((y == 0).sum()) if bound == "any-mix" else len(y)
    m.calibrate(s[eligible], y[eligible], delta, CONFIDENCE, n_total=n)
    m.calibration["bound"] = bound
    return m.threshold, m.calibration


MIXES = (0.10, 0.25, 0.50)  # duplicate shares the test split is reweighted to


def mixed_rates(served, y) -> dict:
    """Hit and wrong-reuse rates of ``served`` on the test split reweighted to each duplicate share."""
    tpr, fpr = served[y == 1].mean(), served[y == 0].mean()
    return {str(d): {"hit_rate": float(d * tpr + (1 - d) * fpr), "wrong_rate": float((1 - d) * fpr)} for d in MIXES}


def rates(served, y) -> dict:
    n = len(y)
    hits = int(served.sum())
    wrong = int((served & (y == 0)).sum())
    return {"n": n, "hit_rate": hits / n, "wrong_rate": wrong / n, "precision": (hits - wrong) / hits if hits else None,
            "hits": hits, "wrong": wrong}


def run(args) -> dict:
    t0 = time.time()
    a, b, y = load_pairs()
    n = len(y)
    from pointsman.embed import MiniLMEncoder
    from pointsman.embed.registry import DUP_PATCH

    patch = args.encoder_patch or (DUP_PATCH if args.encoder == "minilm-dup" else None)
    encoder = MiniLMEncoder(intra_op_threads=2, patch=patch)
    print("encoder:", encoder.model_id, flush=True)
    E = embed_texts(a + b, encoder)
    Ea, Eb = E[:n], E[n:]
    split = group_split(a, b)
    tr, ca, te = (split == 0), (split == 1), (split == 2)
    print(f"pairs {n}: train {tr.sum()}, calibration {ca.sum()}, test {te.sum()}; positives {y.mean():.3f}", flush=True)
    sim, X, hard = pair_table(a, b, Ea, Eb)
    any_hard = hard.any(1)
    print(f"features in {time.time() - t0:.0f}s", flush=True)

    adv = [json.loads(line) for line in (HERE / "adversarial.jsonl").read_text().splitlines() if line.strip()]
    aa, ab = [r["text_a"] for r in adv], [r["text_b"] for r in adv]
    ay = np.array([r["label"] for r in adv])
    EA = embed_texts(aa + ab, encoder, progress=False)
    asim, aX, ahard = pair_table(aa, ab, EA[: len(adv)], EA[len(adv):])
    a_any = ahard.any(1)

    models = {"logistic": AcceptanceModel().fit(X[tr], y[tr])}
    print("fitting the mlp ...", flush=True)
    models["mlp"] = fit_mlp(mlp_inputs(Ea[tr], Eb[tr], X[tr]), y[tr])
    S = {k: scores(m, Ea, Eb, X) for k, m in models.items()}
    AS = {k: scores(m, EA[: len(adv)], EA[len(adv):], aX) for k, m in models.items()}

    configs = {  # name: (score on qqp, score on adversarial, hard checks enforced?)
        "cosine (static, calibrated)": (sim, asim, False),
        "checks + cosine": (sim, asim, True),
        "logistic, checks as features only": (S["logistic"], AS["logistic"], False),
        "checks + logistic (shipped default)": (S["logistic"], AS["logistic"], True),
        "mlp, checks as features only": (S["mlp"], AS["mlp"], False),
        "checks + mlp": (S["mlp"], AS["mlp"], True),
    }
    out: dict = {"split": {"train": int(tr.sum()), "calibration": int(ca.sum()), "test": int(te.sum())},
                 "configs": {}, "static_0.92": {}}
    for name, (score, ascore, enforce) in configs.items():
        row = {}
        for delta in DELTAS:
            elig = (sim >= MIN_SIM) & (~any_hard if enforce else True)
            thr, cal = calibrated_threshold(score[ca], y[ca], elig[ca], delta, args.bound)
            served = elig & (score >= thr)
            a_served = (asim >= MIN_SIM) & (~a_any if enforce else True) & (ascore >= thr)
            row[str(delta)] = {"threshold": thr, "calibration": cal, "test": rates(served[te], y[te]),
                               "test_mixes": mixed_rates(served[te], y[te]),
                               "calib": rates(served[ca], y[ca]),
                               "adversarial": {"wrong_hits": int((a_served & (ay == 0)).sum()), "negatives": int((ay == 0).sum()),
                                               "correct_hits": int((a_served & (ay == 1)).sum()), "positives": int((ay == 1).sum()),
                                               "wrong_pairs": [adv[i]["text_b"] for i in np.nonzero(a_served & (ay == 0))[0]]}}
            r = row[str(delta)]["test"]
            mix = " ".join(f"{float(d):.0%}: {v['hit_rate']:.3f}/{v['wrong_rate']:.4f}"
                           for d, v in row[str(delta)]["test_mixes"].items())
            print(f"{name:36s} δ={delta:g} thr={thr:.4f} test hit {r['hit_rate']:.3f} wrong {r['wrong_rate']:.4f} "
                  f"| mixes {mix} "
                  f"| adversarial wrong {row[str(delta)]['adversarial']['wrong_hits']}/{(ay == 0).sum()} "
                  f"correct {row[str(delta)]['adversarial']['correct_hits']}/{(ay == 1).sum()}", flush=True)
        out["configs"][name] = row
    served = sim >= 0.92
    out["static_0.92"] = {"test": rates(served[te], y[te]), "all": rates(served, y),
                          "adversarial_wrong": int((asim >= 0.92)[ay == 0].sum())}
    # the oracle: the most any threshold could serve within δ if it were chosen on the test split itself
    out["oracle_test"] = {}
    for name, (score, _, enforce) in configs.items():
        s = np.where((sim >= MIN_SIM) & (~any_hard if enforce else True), score, -np.inf)[te]
        o = np.argsort(-s)
        w = np.cumsum(1 - y[te][o]) / te.sum()
        out["oracle_test"][name] = {}
        for delta in DELTAS:
            ok = np.nonzero((w <= delta) & np.isfinite(s[o]))[0]
            out["oracle_test"][name][str(delta)] = float((ok.max() + 1) / te.sum()) if ok.size else 0.0
        print(f"oracle {name:36s}", out["oracle_test"][name])
    print("static 0.92:", out["static_0.92"])

    if args.save:
        MODELS.mkdir(parents=True, exist_ok=True)
        for kind, model in models.items():
            if kind == "mlp" and not args.save_mlp:
                continue
            cfg = out["configs"]["checks + mlp" if kind == "mlp" else "checks + logistic (shipped default)"]
            model.calibration = {"fitted_on": "QQP train split (bench/cache/eval.py)", "encoder": encoder.model_id,
                                 "confidence": CONFIDENCE,
                                 "enforced_checks": list(CHECK_NAMES), "min_similarity": MIN_SIM, "bound": args.bound,
                                 "thresholds": {d: cfg[d]["threshold"] for d in cfg},
                                 "test": {d: cfg[d]["test"] for d in cfg},
                                 "test_mixes": {d: cfg[d]["test_mixes"] for d in cfg}}
            model.threshold = cfg["0.02"]["threshold"]
            model.delta = 0.02
            model.save(MODELS / (f"acceptance_{kind}" + ("" if args.encoder == "minilm" else f"_{args.encoder}")))
        print("saved models to", MODELS)

    if args.global_cache:
        out["global_cache"] = asyncio.run(global_cache(a, b, y, Ea, Eb, te, models["logistic"], out))
    out["seconds"] = time.time() - t0
    return out


async def global_cache(a, b, y, Ea, Eb, te, model, out) -> dict:
    """The real SemanticCache, one namespace holding every test text_a; each test text_b looked up."""
    from pointsman.cache import SemanticCache
    from pointsman.cache.memory import MemoryStore

    res = {}
    idx = np.nonzero(te)[0]
    for delta in DELTAS:
        m = AcceptanceModel(model.w.copy(), out["configs"]["checks + logistic (shipped default)"][str(delta)]["threshold"],
                            delta, hidden=model.hidden)
        cache = SemanticCache(MemoryStore(max_entries=10 ** 6), acceptance=m, min_similarity=MIN_SIM)
        body = {"model": "auto", "temperature": 0, "messages": [{"role": "user", "content": "x"}]}
        keys = cache.keys(body, "tenant")
        ns = keys.namespace
        owner: dict[int, int] = {}
        first: dict[str, int] = {}
        for i in idx:
            if a[i] in first:
                continue
            first[a[i]] = i
            eid = await cache.store(f"exact-{i}", ns, Ea[i], a[i], {"choices": [{"index": 0, "message": {
                "role": "assistant", "content": f"answer {i}"}, "finish_reason": "stop"}]})
            owner[eid] = i
        labels = {}
        for x, z, lab in zip(a, b, y):
            labels[(x, z)] = labels[(z, x)] = int(lab)
        lat = []
        own_ok = own_wrong = other = other_ok = other_wrong = 0
        for i in idx:
            t = time.perf_counter()
            hit = await cache.lookup(f"query-{i}", ns, Eb[i], b[i])
            lat.append(time.perf_counter() - t)
            if hit is None:
                continue
            j = owner[hit.entry_id]
            if a[j] == a[i]:
                own_ok += int(y[i] == 1)
                own_wrong += int(y[i] == 0)
            else:  # another pair's question: labelled only if QQP holds that pair too
                other += 1
                lab = labels.get((a[j], b[i]))
                other_ok += int(lab == 1)
                other_wrong += int(lab == 0)
        n = len(idx)
        lat_ms = np.array(lat) * 1000
        res[str(delta)] = {"entries": len(owner), "requests": n, "hit_rate": (own_ok + own_wrong + other) / n,
                           "own_pair_correct": own_ok / n, "own_pair_wrong": own_wrong / n, "other_entry": other / n,
                           "other_entry_labelled_correct": other_ok / n, "other_entry_labelled_wrong": other_wrong / n,
                           "lookup_ms_p50": float(np.percentile(lat_ms, 50)), "lookup_ms_p99": float(np.percentile(lat_ms, 99)),
                           "rejected": cache.metrics.rejected}
        print(f"global cache δ={delta}: {res[str(delta)]}", flush=True)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--save", action="store_true", help="write the fitted models into src/pointsman/cache/models/")
    p.add_argument("--save-mlp", action="store_true", help="with --save: also write the mlp (~0.4 MB)")
    p.add_argument("--global-cache", action="store_true", help="also run the real SemanticCache over the test split")
    p.add_argument("--encoder", choices=("minilm", "minilm-dup"), default="minilm-dup",
                   help="the cache encoder to embed with (and whose acceptance model --save writes)")
    p.add_argument("--encoder-patch", default=None,
                   help="experiments: MiniLM patched by this .npz instead (bench/cache/finetune.py)")
    p.add_argument("--bound", choices=("any-mix", "calibration-mix"), default="any-mix",
                   help="what δ bounds: wrong reuse among requests without a cached duplicate (any-mix, holds on "
                        "any duplicate share) or among all calibration requests (calibration-mix)")
    p.add_argument("--out", default=None, help="default: results.json (minilm-dup), results_minilm.json (minilm)")
    args = p.parse_args(argv)
    if args.out is None:
        args.out = str(HERE / ("results.json" if args.encoder == "minilm-dup" else f"results_{args.encoder}.json"))
    out = run(args)
    Path(args.out).write_text(json.dumps(out, indent=1, default=float))
    table = Path(args.out).with_suffix(".md")
    table.write_text(markdown(out, args, " ".join(["bench/cache/eval.py", *(argv or sys.argv[1:])])))
    print("wrote", args.out, "and", table)
    return 0


def markdown(out: dict, args, command: str) -> str:
    """The test-split table of every configuration and δ, with the reweighted mixes (the file beside the JSON)."""
    pct = lambda x: f"{100 * x:.1f}%"  # noqa: E731
    lines = [f"# QQP held-out test split: `{args.encoder}`, δ bounded {args.bound}", "",
             f"Written by `.venv/bin/python {command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
             f"Split (by groups of questions): {out['split']}. Rates are shares of all test requests; the mix "
             "columns reweight the test split to that share of duplicates (hit rate / wrong reuse). Thresholds "
             "chosen on the calibration split only; the oracle is the most any threshold chosen on the test split "
             "itself could serve within δ (not a result).", "",
             "| configuration | δ | threshold | hit rate | wrong reuse | precision | 50% duplicates | 25% | 10% "
             "| adversarial wrong hits | paraphrases served | oracle hit rate |", "|---" * 12 + "|"]
    for name, row in out["configs"].items():
        for delta, r in row.items():
            t, m, a = r["test"], r["test_mixes"], r["adversarial"]
            mixes = " | ".join(f"{pct(m[d]['hit_rate'])} / {100 * m[d]['wrong_rate']:.2f}%" for d in ("0.5", "0.25", "0.1"))
            lines.append(f"| {name} | {float(delta):g} | {r['threshold']:.4f} | {pct(t['hit_rate'])} | "
                         f"{100 * t['wrong_rate']:.2f}% | {pct(t['precision'] or 0)} | {mixes} | "
                         f"{a['wrong_hits']}/{a['negatives']} | {a['correct_hits']}/{a['positives']} | "
                         f"{pct(out['oracle_test'][name][delta])} |")
    static = out["static_0.92"]["test"]
    lines += ["", f"Static cosine 0.92 (no calibration): {pct(static['hit_rate'])} hits, "
              f"{100 * static['wrong_rate']:.2f}% wrong, adversarial {out['static_0.92']['adversarial_wrong']}/72."]
    for delta, g in out.get("global_cache", {}).items():
        lines.append(f"Real cache, every test question in one namespace, δ {float(delta):g}: {pct(g['hit_rate'])} hits "
                     f"(own pair correct {pct(g['own_pair_correct'])}, own pair wrong {100 * g['own_pair_wrong']:.2f}%, "
                     f"another entry {pct(g['other_entry'])}), look-up p50 {g['lookup_ms_p50']:.2f} ms.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
