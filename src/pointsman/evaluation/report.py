"""Cross-validated router evaluation: baselines, candidate predictors, nested selection, report.

The engine behind ``bench/router/eval.py`` (and the CLI's ``eval``):

    from pointsman.evaluation.report import evaluate, tables, plot
    result = evaluate(table, X_emb, features, folds=5)   # dict of metrics per method
    print(tables([result])); plot(result, "curve.png")    # plot needs matplotlib

For every table the same K folds (seed 0) are used by every method; a predictor is trained on K-1
folds and predicts the held-out fold, and the metrics are computed once on the concatenated
held-out predictions. "selected (nested CV)" is the honest headline: inside each outer training
part an inner 3-fold CV picks one candidate (by APGR, or by AIQ for N models), so the outer test
fold never influences the choice. Fixed variants are reported too, for information.
"""

from __future__ import annotations

import time

import numpy as np

from pointsman.evaluation import metrics as M
from pointsman.evaluation.datasets import OutcomeTable
from pointsman.predictors import EnsemblePredictor, KNNPredictor, LinearPredictor, MFPredictor
from pointsman.predictors.decide import choose_by_floor, decision_confidence, lambda_grid, sweep

try:
    from tqdm import tqdm
except ImportError:  # pragma: no cover
    class tqdm:  # type: ignore[no-redef]  # a minimal stand-in when tqdm is not installed
        def __init__(self, it=None, **kw):
            self.it = it

        def __iter__(self):
            return iter(self.it)

        @staticmethod
        def write(s):
            print(s)

__all__ = ["evaluate", "tables", "plot", "candidates", "folds_of", "cv_predict", "predicted_costs"]


# ----------------------------------------------------------------------------- candidates

def candidates(n_train: int) -> dict:
    """The predictor configurations compared (and selected from) by :func:`evaluate`."""
    big = n_train > 5000
    ep = 20 if big else 40
    c = {
        "knn-40": lambda: KNNPredictor(k=40, temperature=1e9, prior=0.0),     # plain kNN-40 (the baseline)
        "knn-100w": lambda: KNNPredictor(k=100, temperature=0.1, prior=2.0),
        "logistic": lambda: LinearPredictor("logistic", epochs=ep, n_members=3),
        "ridge": lambda: LinearPredictor("ridge", alpha=10.0, n_members=3),
        "mlp": lambda: LinearPredictor("mlp", hidden=128, epochs=ep, weight_decay=1e-3, dropout=0.2, n_members=3),
        "mf": lambda: MFPredictor(dim=32, epochs=ep, pair_weight=1.0, n_members=3),
    }
    c["ensemble"] = lambda: EnsemblePredictor([c[k]() for k in ENSEMBLE_OF])
    return c


SELECT_FROM = ("knn-100w", "logistic", "ridge", "mlp", "mf", "ensemble")
ENSEMBLE_OF = ("logistic", "ridge", "mlp", "mf", "knn-100w")


# ----------------------------------------------------------------------------- helpers

def folds_of(n: int, k: int, seed: int = 0) -> list[np.ndarray]:
    return np.array_split(np.random.default_rng(seed).permutation(n), k)


def pair_score(Q: np.ndarray, t: OutcomeTable) -> np.ndarray:
    s, w = t.pair_index()
    return Q[:, s] - Q[:, w]


def predicted_costs(t: OutcomeTable, train_idx: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """What a router can know before answering: prompt tokens x input price + the model's mean
    output tokens on the training prompts x output price."""
    out = np.zeros((len(idx), len(t.models)))
    for j, m in enumerate(t.models):
        p = t.prices.get(m)
        if p is None:
            out[:, j] = np.nanmean(t.cost[train_idx, j])
            continue
        outs = t.output_tokens[train_idx, j] if t.output_tokens is not None else np.empty(0)
        known = outs[~np.isnan(outs)]
        # no output tokens known: the prompt's cost alone, as the loader costs such rows (NaN would route on nothing)
        mean_out = float(known.mean()) if known.size else 0.0
        out[:, j] = p.cost(t.input_tokens[idx], mean_out)
    return out


def two_model_quality(t: OutcomeTable, score: np.ndarray) -> dict:
    s, w = t.pair_index()
    c = M.two_model_curve(score, t.scores[:, w], t.scores[:, s])
    # cost-quality points along the same ordering (realised per-prompt costs)
    order = np.argsort(-score, kind="stable")
    dcost = (t.cost[:, s] - t.cost[:, w])[order]
    cum_cost = np.concatenate([[0.0], np.cumsum(dcost)]) / len(score) + t.cost[:, w].mean()
    c_min, c_max = t.cost[:, w].mean(), t.cost[:, s].mean()
    return {
        "APGR": c.apgr(), "CPT50": c.cpt(0.5), "CPT80": c.cpt(0.8), "strong_for_95": c.share_for_quality(0.95),
        "AIQ": M.aiq(cum_cost, c.quality, c_min, c_max),
        "_curve": (c.share, c.quality),
    }


def n_model_quality(t: OutcomeTable, Q: np.ndarray, C_pred: np.ndarray, ref: str, rows: np.ndarray,
                    lambdas=None) -> dict:
    """Sweep the knob on predicted quality/cost; score with realised scores/costs on ``rows``."""
    Y, C = t.scores[rows], t.cost[rows]
    Qr, Cr = Q[rows], C_pred[rows]
    outcomes = []
    lam_grid = lambda_grid(Qr, Cr, 80) if lambdas is None else lambdas
    for lam, ch in sweep(Qr, Cr, lam_grid):
        outcomes.append(M.routed_outcome(ch, Y, C))
    # the other knob: the cheapest model whose predicted score clears a floor
    lo, hi = t.score_range
    for floor in np.linspace(lo, hi, 91):
        outcomes.append(M.routed_outcome(choose_by_floor(Qr, Cr, floor), Y, C))
    pts = np.array(outcomes)
    single_c, single_q = C.mean(axis=0), Y.mean(axis=0)
    cheapest = int(np.argmin(single_c))
    r = t.model_index(ref)
    anchor = (single_c[cheapest], single_q[cheapest])
    return {
        "AIQ": M.aiq(pts[:, 0], pts[:, 1], single_c.min(), single_c.max(), anchor=anchor),
        "cost_share_for_95": M.cost_share_for_quality(pts[:, 0], pts[:, 1], 0.95 * single_q[r], single_c[r], anchor=anchor),
        "_points": pts.tolist(),
    }


# ----------------------------------------------------------------------------- CV

def cv_predict(make, X, F, t: OutcomeTable, folds, train_rows=None) -> np.ndarray:
    n = len(t)
    Q = np.full((n, len(t.models)), np.nan)
    for k in range(len(folds)):
        te = folds[k]
        tr = np.concatenate([folds[j] for j in range(len(folds)) if j != k])
        p = make().fit(X[tr], F[tr], t.scores[tr], t.models, t.score_range)
        Q[te] = p.predict(X[te], F[te])
    return Q


def cv_predict_many(cands, names, X, F, t: OutcomeTable, folds, progress: bool = False
                    ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Held-out predictions of several candidates on the same folds.

    The "ensemble" candidate averages its members' predictions; since every member is fitted
    deterministically on the same data, this equals fitting ``EnsemblePredictor`` (without paying
    for the members twice).
    """
    base = [nm for nm in names if nm != "ensemble"]
    if "ensemble" in names:
        base += [m for m in ENSEMBLE_OF if m not in base]
    out, secs = {}, {}
    it = tqdm(base, desc=f"{t.name} predictors", leave=False) if progress else base
    for nm in it:
        t0 = time.time()
        out[nm] = cv_predict(cands[nm], X, F, t, folds)
        secs[nm] = time.time() - t0
    if "ensemble" in names:
        out["ensemble"] = np.mean([out[m] for m in ENSEMBLE_OF], axis=0)
        secs["ensemble"] = sum(secs[m] for m in ENSEMBLE_OF)
    return {nm: out[nm] for nm in names}, secs


def inner_select(cands, names, X, F, t: OutcomeTable, tr: np.ndarray, criterion) -> str:
    inner = folds_of(len(tr), 3, seed=1)
    sub = t.subset(tr)
    preds, _ = cv_predict_many(cands, names, X[tr], F[tr], sub, inner)
    vals = {nm: criterion(sub, Q, tr) for nm, Q in preds.items()}
    return max(names, key=lambda nm: vals[nm])


def cv_selected(cands, names, X, F, t, folds, criterion, outer_preds: dict, log):
    """Nested CV: per outer fold, pick a candidate by inner 3-fold CV on the training part only;
    the outer fold then gets that candidate's prediction from a fit on the whole training part
    (``outer_preds``, identical to refitting it)."""
    Q = np.full((len(t), len(t.models)), np.nan)
    chosen = []
    for k in tqdm(range(len(folds)), desc=f"{t.name} nested selection", leave=False):
        te = folds[k]
        tr = np.concatenate([folds[j] for j in range(len(folds)) if j != k])
        name = inner_select(cands, names, X, F, t, tr, criterion)
        chosen.append(name)
        Q[te] = outer_preds[name][te]
    log(f"    selected per fold: {chosen}")
    return Q, chosen


def uncertainty_report(t: OutcomeTable, X, F, folds, log, bins: int = 5) -> dict:
    """Is the predictors' uncertainty informative? Held-out decision confidence vs correctness.

    Operating point: strong model for the half of prompts with the highest predicted gain. On the
    prompts where the choice matters (exactly one model is right), a decision is correct when it
    picked that model. Prompts are split into confidence quintiles; a usable uncertainty shows
    accuracy rising with confidence, and the low-confidence bins are where a judge tier helps.
    """
    s, w = t.pair_index()
    out = {}
    for name, make in (("logistic x5", lambda: LinearPredictor("logistic", epochs=20 if len(t) > 5000 else 40, n_members=5)),
                       ("mf x5", lambda: MFPredictor(epochs=20 if len(t) > 5000 else 40, n_members=5))):
        Q = np.zeros_like(t.scores)
        SD = np.zeros_like(t.scores)
        for k in range(len(folds)):
            te = folds[k]
            tr = np.concatenate([folds[j] for j in range(len(folds)) if j != k])
            p = make().fit(X[tr], F[tr], t.scores[tr], t.models, t.score_range)
            Q[te], SD[te] = p.predict_with_uncertainty(X[te], F[te])
        gain_pred = Q[:, s] - Q[:, w]
        tau = float(np.median(gain_pred))
        cost = np.zeros(len(t.models))
        cost[s] = 1.0
        conf = decision_confidence(Q, SD, cost, tau)
        chose_strong = gain_pred > tau
        gain = t.scores[:, s] - t.scores[:, w]
        matters = gain != 0
        correct = np.where(gain > 0, chose_strong, ~chose_strong)
        edges = np.quantile(conf, np.linspace(0, 1, bins + 1))
        rows = []
        for b in range(bins):
            sel = (conf >= edges[b]) & ((conf <= edges[b + 1]) if b == bins - 1 else (conf < edges[b + 1]))
            mm = sel & matters
            rows.append({"confidence": [float(edges[b]), float(edges[b + 1])], "mean_confidence": float(conf[sel].mean()),
                         "n_matters": int(mm.sum()), "accuracy_where_it_matters": float(correct[mm].mean()) if mm.any() else None})
        out[name] = rows
        log(f"    uncertainty ({name}): " + "  ".join(
            f"[{r['mean_confidence']:.2f}] {r['accuracy_where_it_matters']:.2f}" for r in rows))
    return out


# ----------------------------------------------------------------------------- data sets

def run_two_model(t: OutcomeTable, X, F, folds_k: int = 5, quick: bool = False, log=print) -> dict:
    n = len(t)
    folds = folds_of(n, folds_k)
    s, w = t.pair_index()
    res: dict[str, dict] = {}
    rng = np.random.default_rng(0)
    res["random"] = two_model_quality(t, np.zeros(n))
    res["oracle"] = two_model_quality(t, t.scores[:, s] - t.scores[:, w])
    res["prompt length"] = two_model_quality(t, t.input_tokens + 1e-6 * rng.random(n))
    if t.groups is not None:
        g = np.array(t.groups)
        score = np.zeros(n)
        for k in range(len(folds)):
            te = folds[k]
            tr = np.concatenate([folds[j] for j in range(len(folds)) if j != k])
            gain = t.scores[tr, s] - t.scores[tr, w]
            means = {gg: gain[g[tr] == gg].mean() for gg in np.unique(g[tr])}
            score[te] = [means.get(gg, gain.mean()) for gg in g[te]]
        res["per-category mean (uses label)"] = two_model_quality(t, score)
    cands = candidates(int(n * (folds_k - 1) / folds_k))
    names = list(cands) if not quick else ["knn-40", "logistic"]
    preds, secs = cv_predict_many(cands, names, X, F, t, folds, progress=True)
    for name, Q in preds.items():
        res[name] = two_model_quality(t, pair_score(Q, t))
        res[name]["_secs"] = secs[name]
        log(f"  {name:<12s} APGR {res[name]['APGR']:.3f}  CPT50 {res[name]['CPT50']:.3f}  ({secs[name]:.0f}s)")
    if not quick:
        crit = lambda sub, Q, tr: two_model_quality(sub, pair_score(Q, sub))["APGR"]  # noqa: E731
        Q, chosen = cv_selected(cands, SELECT_FROM, X, F, t, folds, crit, preds, log)
        res["selected (nested CV)"] = two_model_quality(t, pair_score(Q, t))
        res["selected (nested CV)"]["chosen"] = chosen
    unc = uncertainty_report(t, X, F, folds, log)
    single = {m: float(np.mean(t.scores[:, j])) for j, m in enumerate(t.models)}
    return {"name": t.name, "uncertainty": unc, "n": n, "models": t.models, "strong": t.strong, "weak": t.weak,
            "single_model_quality": single,
            "single_model_cost": {m: float(np.mean(t.cost[:, j])) for j, m in enumerate(t.models)},
            "methods": res, "notes": t.notes}


def run_n_model(t: OutcomeTable, X, F, folds_k: int = 5, quick: bool = False, log=print, ref: str | None = None) -> dict:
    n = len(t)
    ref = ref or t.strong or t.models[int(np.nanargmax(np.nanmean(t.scores, axis=0)))]
    folds = folds_of(n, folds_k)
    rows = np.flatnonzero(t.complete_rows())   # evaluate where every model has a score
    C_pred = np.zeros_like(t.cost)
    for k in range(len(folds)):
        te = folds[k]
        tr = np.concatenate([folds[j] for j in range(len(folds)) if j != k])
        C_pred[te] = predicted_costs(t, tr, te)
    res: dict[str, dict] = {}
    res["oracle"] = n_model_quality(t, np.nan_to_num(t.scores, nan=-1e9), t.cost, ref, rows)
    # per-model mean quality from the training folds, no per-prompt routing: the best fixed mix
    Qmean = np.zeros_like(t.scores)
    for k in range(len(folds)):
        te = folds[k]
        tr = np.concatenate([folds[j] for j in range(len(folds)) if j != k])
        Qmean[te] = np.nanmean(t.scores[tr], axis=0)
    res["no per-prompt routing (model means)"] = n_model_quality(t, Qmean, C_pred, ref, rows)
    cands = candidates(int(n * (folds_k - 1) / folds_k))
    names = list(cands) if not quick else ["knn-40", "logistic"]
    preds, secs = cv_predict_many(cands, names, X, F, t, folds, progress=True)
    for name, Q in preds.items():
        res[name] = n_model_quality(t, Q, C_pred, ref, rows)
        res[name]["_secs"] = secs[name]
        log(f"  {name:<12s} AIQ {res[name]['AIQ']:.3f}  cost for 95% {res[name]['cost_share_for_95']:.3f}")
    if not quick:
        def crit(sub, Q, tr):
            Cp = predicted_costs(sub, np.arange(len(sub)), np.arange(len(sub)))
            return n_model_quality(sub, Q, Cp, ref, np.flatnonzero(sub.complete_rows()))["AIQ"]
        Q, chosen = cv_selected(cands, SELECT_FROM, X, F, t, folds, crit, preds, log)
        res["selected (nested CV)"] = n_model_quality(t, Q, C_pred, ref, rows)
        res["selected (nested CV)"]["chosen"] = chosen
    Y, C = t.scores[rows], t.cost[rows]
    return {"name": t.name, "n": n, "n_eval": int(len(rows)), "models": t.models, "reference": ref,
            "single_model_quality": dict(zip(t.models, Y.mean(axis=0).tolist())),
            "single_model_cost": dict(zip(t.models, C.mean(axis=0).tolist())),
            "methods": res, "notes": t.notes}


def evaluate(t: OutcomeTable, X: np.ndarray, F: np.ndarray, folds: int = 5, quick: bool = False,
             log=print, reference: str | None = None) -> dict:
    """Cross-validated evaluation of every candidate predictor and the baselines on one table.

    Two-model tables (with ``strong`` and ``weak`` set and exactly two models) get RouteLLM's
    metrics; others get the N-model cost-quality sweep (AIQ, cost share for 95% of ``reference``).
    """
    if len(t.models) == 2 and t.strong and t.weak:
        return run_two_model(t, X, F, folds, quick, log)
    return run_n_model(t, X, F, folds, quick, log, reference)


# ----------------------------------------------------------------------------- output

def plot(result: dict, path) -> None:
    """Cost-quality curve PNG (needs matplotlib, an optional dependency)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    meth = result["methods"]
    show = [k for k in meth if k in ("oracle", "random", "prompt length", "per-category mean (uses label)",
                                       "knn-40", "no per-prompt routing (model means)", "selected (nested CV)",
                                       "ensemble", "mf", "logistic")]
    if "_curve" in next(iter(meth.values())):
        for k in show:
            x, y = meth[k]["_curve"]
            ax.plot(np.asarray(x) * 100, y, label=f"{k} (APGR {meth[k]['APGR']:.3f})",
                    lw=2.2 if k.startswith("selected") else 1.2)
        sq = result["single_model_quality"]
        ax.axhline(sq[result["strong"]], color="k", ls="--", lw=0.8, label=result["strong"])
        ax.axhline(sq[result["weak"]], color="grey", ls="--", lw=0.8, label=result["weak"])
        ax.set_xlabel("strong-model calls (%)")
        ax.set_ylabel("accuracy")
    else:
        for k in show:
            pts = np.asarray(meth[k]["_points"])
            hc, hq = M.upper_hull(pts[:, 0], pts[:, 1])
            ax.plot(hc * 1000, hq, marker=".", label=f"{k} (AIQ {meth[k]['AIQ']:.2f})",
                    lw=2.2 if k.startswith("selected") else 1.2)
        for m, q in result["single_model_quality"].items():
            c = result["single_model_cost"][m]
            ax.scatter([c * 1000], [q], s=14, color="k")
            ax.annotate(m, (c * 1000, q), fontsize=6)
        ref = result["reference"]
        ax.axhline(0.95 * result["single_model_quality"][ref], color="r", ls=":", lw=0.8, label="95% of " + ref)
        ax.set_xscale("log")
        ax.set_xlabel("mean cost per prompt (USD x 1000, log)")
        ax.set_ylabel("mean judge score (1-10)")
    ax.set_title(f"{result['name']}: cost-quality, {result.get('n_eval', result['n'])} prompts, held-out folds")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def tables(results: list[dict]) -> str:
    out = []
    for r in results:
        meth = r["methods"]
        if "APGR" in next(iter(meth.values())):
            out.append(f"### {r['name']} ({r['n']} prompts; {r['strong']} vs {r['weak']})\n")
            out.append("| method | APGR | CPT(50%) | CPT(80%) | strong calls for 95% | AIQ |")
            out.append("|---|---|---|---|---|---|")
            for k, v in meth.items():
                out.append(f"| {k} | {v['APGR']:.3f} | {v['CPT50']:.1%} | {v['CPT80']:.1%} | "
                           f"{v['strong_for_95']:.1%} | {v['AIQ']:.4f} |")
            out.append("")
            out.append("single models: " + ", ".join(f"{m} {q:.3f}" for m, q in r["single_model_quality"].items()))
        else:
            ref = r["reference"]
            out.append(f"### {r['name']} ({r['n']} prompts, {r['n_eval']} with every model scored; {len(r['models'])} models)\n")
            out.append(f"| method | AIQ | cost for 95% of {ref} (share of its cost) |")
            out.append("|---|---|---|")
            for k, v in meth.items():
                cs = v["cost_share_for_95"]
                out.append(f"| {k} | {v['AIQ']:.3f} | {'never' if not np.isfinite(cs) else f'{cs:.1%}'} |")
        if "uncertainty" in r:
            out.append("")
            out.append("uncertainty check (operating point: half the prompts to the strong model; quintiles of decision "
                       "confidence; accuracy on prompts where exactly one model is right):\n")
            out.append("| predictor | " + " | ".join(f"Q{i + 1}" for i in range(5)) + " |")
            out.append("|---|" + "---|" * 5)
            for nm, rows in r["uncertainty"].items():
                out.append(f"| {nm} | " + " | ".join(
                    f"conf {x['mean_confidence']:.2f}: acc {x['accuracy_where_it_matters']:.2f} (n={x['n_matters']})"
                    for x in rows) + " |")
        if any("chosen" in v for v in meth.values()):
            out.append("")
            chosen = next(v["chosen"] for v in meth.values() if "chosen" in v)
            out.append("nested-CV choice per outer fold: " + ", ".join(chosen))
        out.append("")
    return "\n".join(out)


