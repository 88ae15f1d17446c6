"""Cascade evaluation: routing only vs cascade only vs cascade routing, on the same held-out folds.

The engine behind ``bench/cascade/eval.py`` and ``pointsman eval --cascade``.

Protocol (the router's: :mod:`pointsman.evaluation.report`): the same K folds (seed 0) for every method;
the router (a quality predictor over prompt embeddings) and the verifier are both trained on the K-1
training folds only, and every metric is computed once on the concatenated held-out predictions.
RouteLLM's contaminated GSM8K prompts are excluded by the reader.

Methods, each swept over its knob, each point scored with the *realised* per-prompt scores and costs
(the cheap attempt's cost is always counted when a cascade made it):

* **routing only**: the router's predicted quality; two models: the share of prompts sent to the strong
  model (RouteLLM's curve); N models: ``argmax q - lambda c`` and the quality floor, as ``report`` does.
* **cascade only**: every prompt goes to the cheap model first; its answer is escalated to the strong
  model when the verifier's score is below a threshold (swept).
* **cascade routing**: per prompt, :func:`pointsman.cascade.decide.plan_many` chooses between answering
  directly with the best model (by the router's ``q - lambda c``) and a cascade cheap -> strong, valuing
  the cascade with the verifier's fitted ``kappa``; in a cascade, :func:`should_escalate` escalates when
  ``q_strong - lambda c_strong > v``. Only lambda is swept.

Points of a method are summarised by the non-decreasing upper convex hull of (mean cost, mean quality)
(mixing two settings at random reaches every point between them; the always-cheap point is added).
Two models: APGR = area under PGR(x) for x = cost as a share of always-strong in [0, 1] (PGR = 0 left
of the always-cheap cost). N models: cost for 95% of the reference model's mean score, as a share of its
cost, and AIQ.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from pointsman.cascade.answer_features import answer_features, answer_tail
from pointsman.cascade.decide import plan_many
from pointsman.cascade.learned import LearnedVerifier
from pointsman.embed.encoder import MODEL_ID as MINILM_MODEL_ID, ROUTING_MAX_TOKENS
from pointsman.evaluation import metrics as M
from pointsman.evaluation.datasets import AnswerTable, embed_prompts
from pointsman.evaluation.report import folds_of, predicted_costs

__all__ = ["AnswerData", "prepare", "cv_verifier", "cv_router", "evaluate_cascade", "tables", "plot",
           "hull_apgr", "verifier_auc"]


@dataclass
class AnswerData:
    """Everything the verifier sees, per answer (one row per (prompt, model) pair with an answer)."""

    at: AnswerTable
    X: np.ndarray  # (n, 384) prompt embeddings
    F: np.ndarray  # (n, F) prompt features
    pi: np.ndarray  # (r,) prompt index of each answer
    mj: np.ndarray  # (r,) model index of each answer
    A: np.ndarray | None  # (r, 384) answer-tail embeddings (None: tail_chars == 0)
    AF: np.ndarray  # (r, A) answer features
    y: np.ndarray  # (r,) normalised score 0..1
    tail_chars: int
    prompt_tokens: int = ROUTING_MAX_TOKENS
    XR: np.ndarray | None = None  # the router's inputs (its own encoder: static by default); None = X, F
    FR: np.ndarray | None = None
    encoder: str = ""  # the model id of X's encoder (the verifier's)

    def cell(self) -> dict[tuple[int, int], int]:
        return {(int(i), int(j)): r for r, (i, j) in enumerate(zip(self.pi, self.mj))}


def prepare(at: AnswerTable, tail_chars: int = 0, progress: bool = False, prompt_tokens: int | None = None,
            router_encoder: str = "static", verifier_encoder: str = "minilm") -> AnswerData:
    """Embed prompts for the verifier (``verifier_encoder``, first ``prompt_tokens`` tokens: by default that
    encoder's routing window, so the gateway embeds once) and for the router (``router_encoder``, as the
    gateway routes), and answer tails (all cached on disk by :func:`embed_prompts`), and compute features."""
    from pointsman.embed.registry import default_window, make_encoder

    prompt_tokens = int(prompt_tokens or default_window(verifier_encoder))
    t = at.table
    verifier_enc = make_encoder(verifier_encoder, max_seq_length=prompt_tokens)
    X, F = embed_prompts(t.prompts, encoder=verifier_enc, progress=progress)
    if router_encoder == verifier_encoder and prompt_tokens == default_window(router_encoder):
        XR, FR = X, F
    else:
        XR, FR = embed_prompts(t.prompts, encoder=make_encoder(router_encoder))
    pi, mj = at.pairs()
    texts = [at.answers[i][j] for i, j in zip(pi, mj)]
    A = embed_prompts([answer_tail(a, tail_chars) for a in texts], encoder=make_encoder(verifier_encoder),
                      progress=progress)[0] if tail_chars else None
    AF = answer_features([t.prompts[i] for i in pi], texts)
    y = np.clip(t.normalised_scores()[pi, mj], 0, 1)
    return AnswerData(at, X, F, pi, mj, A, AF, y, tail_chars, prompt_tokens, XR, FR, verifier_enc.model_id)


def _model_priors(d: AnswerData, train_prompts: np.ndarray) -> np.ndarray:
    """(m,) each model's mean normalised score on the training prompts (the verifier's model prior)."""
    Y = d.at.table.normalised_scores()[train_prompts]
    means = np.nanmean(Y, axis=0)
    return np.where(np.isnan(means), np.nanmean(Y), means)


def cv_verifier(d: AnswerData, folds: list[np.ndarray], make: Callable[[], LearnedVerifier] | None = None,
                log: Callable[[str], None] | None = None) -> tuple[np.ndarray, list[float], float]:
    """Held-out verifier scores for every answer: fold k's answers scored by a verifier trained on the
    answers (of every model) to the other folds' prompts. Returns (scores (r,), kappa per fold, seconds)."""
    make = make or (lambda: LearnedVerifier(tail_chars=d.tail_chars, prompt_tokens=d.prompt_tokens,
                                            encoder=d.encoder or MINILM_MODEL_ID))
    n = len(d.at.table)
    fold_of = np.empty(n, dtype=np.int64)
    for k, f in enumerate(folds):
        fold_of[f] = k
    v = np.full(len(d.y), np.nan)
    kappas = []
    t0 = time.time()
    names = np.array(d.at.table.models)
    for k in range(len(folds)):
        tr_prompts = np.concatenate([folds[j] for j in range(len(folds)) if j != k])
        prior = _model_priors(d, tr_prompts)
        tr = fold_of[d.pi] != k
        te = ~tr
        A = d.A if d.A is not None else None
        ver = make().fit(d.X[d.pi[tr]], d.F[d.pi[tr]], None if A is None else A[tr], d.AF[tr], prior[d.mj[tr]], d.y[tr],
                         models=names[d.mj[tr]], groups=d.pi[tr])
        v[te] = ver.predict(d.X[d.pi[te]], d.F[d.pi[te]], None if A is None else A[te], d.AF[te], prior[d.mj[te]])
        kappas.append(ver.kappa)
        if log:
            log(f"    verifier fold {k}: kappa {ver.kappa:.2f}, inner OOF brier {ver.info['oof_brier']:.4f} "
                f"(prompt only {ver.info['oof_brier_prompt_only']:.4f})")
    return v, kappas, time.time() - t0


def cv_router(d: AnswerData, folds: list[np.ndarray], make: Callable[[], Any]) -> np.ndarray:
    """Held-out predicted quality (n, m), normalised 0..1, from a router predictor."""
    t = d.at.table
    Q = np.full(t.scores.shape, np.nan)
    for k in range(len(folds)):
        te = folds[k]
        tr = np.concatenate([folds[j] for j in range(len(folds)) if j != k])
        X, F = (d.X, d.F) if d.XR is None or d.FR is None else (d.XR, d.FR)
        p = make().fit(X[tr], F[tr], t.scores[tr], t.models, t.score_range)
        Q[te] = p.predict(X[te], F[te])
    lo, hi = t.score_range
    return np.clip((Q - lo) / (hi - lo), 0, 1)


def verifier_auc(score: np.ndarray, y: np.ndarray) -> float:
    """ROC AUC of ``score`` for ``y >= 0.5`` (ties counted half)."""
    from scipy.stats import rankdata

    pos = y >= 0.5
    npos, nneg = int(pos.sum()), int((~pos).sum())
    if npos == 0 or nneg == 0:
        return float("nan")
    r = rankdata(score)
    return float((r[pos].sum() - npos * (npos + 1) / 2) / (npos * nneg))


# ----------------------------------------------------------------------------- curves

def hull_apgr(cost_share: np.ndarray, quality: np.ndarray, q_weak: float, q_strong: float, x_weak: float) -> float:
    """Area under PGR over cost share x in [0, 1], on the upper hull of the points (PGR 0 left of the
    always-cheap point ``x_weak``; flat right of the last point)."""
    pgr = (np.asarray(quality) - q_weak) / (q_strong - q_weak)
    xs = np.concatenate([[x_weak], np.asarray(cost_share)])
    ys = np.concatenate([[0.0], pgr])
    hc, hq = M.upper_hull(xs, ys)
    grid = np.linspace(0.0, 1.0, 2001)
    vals = np.where(grid < hc[0], 0.0, np.interp(grid, hc, hq))
    trapezoid = getattr(np, "trapezoid", None) or getattr(np, "trapz")  # numpy < 2.0 has only trapz
    return float(trapezoid(vals, grid))


def _cascade_points(v: np.ndarray, y_cheap, y_strong, c_cheap, c_strong) -> np.ndarray:
    """(mean cost, mean quality) of "escalate the k answers with the lowest verifier score", k = 0..n."""
    order = np.argsort(v, kind="stable")
    gain = (y_strong - y_cheap)[order]
    n = len(v)
    q = y_cheap.mean() + np.concatenate([[0.0], np.cumsum(gain)]) / n
    c = c_cheap.mean() + np.concatenate([[0.0], np.cumsum(c_strong[order])]) / n
    return np.column_stack([c, q])


def _cascade_routing_points(Q: np.ndarray, Crel: np.ndarray, v_cheap: np.ndarray, kappa: float, cheap: int,
                            strong: int, Y: np.ndarray, C: np.ndarray, lambdas: np.ndarray,
                            thresholds: np.ndarray | None = None) -> np.ndarray:
    """Realised (mean cost, mean quality) of decide.plan_many + should_escalate over a lambda grid.

    Q (n, m) predicted normalised quality; Crel (n, m) predicted relative cost; v_cheap (n,) the verifier's
    score of the cheap model's answer; Y, C realised normalised scores and costs. With `thresholds`, every
    lambda is also run with each explicit acceptance threshold (the gateway's `cascade.threshold` next to
    `lambda`: lambda decides direct vs cascade, the threshold decides accept vs escalate)."""
    n = len(Q)
    rows = np.arange(n)
    pts = []
    for lam in lambdas:
        cascade = plan_many(Q, Crel, lam, kappa, cheap, strong)
        utility = Q - lam * Crel
        direct = np.argmax(utility - 1e-9 * Crel, axis=1)
        direct_q, direct_c = Y[rows, direct], C[rows, direct]
        rules = [(Q[:, strong] - lam * Crel[:, strong]) > v_cheap]  # should_escalate, vectorised
        rules += [v_cheap < tau for tau in (thresholds if thresholds is not None else ())]
        for escalate in rules:
            quality = np.where(cascade, np.where(escalate, Y[:, strong], Y[:, cheap]), direct_q)
            cost = np.where(cascade, C[:, cheap] + np.where(escalate, C[:, strong], 0.0), direct_c)
            pts.append((cost.mean(), quality.mean()))
    return np.array(pts)


def _threshold_grid(v: np.ndarray, k: int = 24) -> np.ndarray:
    """Acceptance thresholds at the quantiles of the verifier's scores (plus accept-all / escalate-all)."""
    finite = v[np.isfinite(v)]
    qs = np.quantile(finite, np.linspace(0, 1, k)) if len(finite) else np.array([0.5])
    return np.unique(np.concatenate([[-np.inf], qs + 1e-12, [np.inf]]))


def _lambda_grid(Q: np.ndarray, Crel: np.ndarray, k: int = 160) -> np.ndarray:
    dq = np.abs(Q[:, :, None] - Q[:, None, :]).ravel()
    dc = np.abs(Crel[:, :, None] - Crel[:, None, :]).ravel()
    ok = dc > 1e-12
    ratios = dq[ok] / dc[ok]
    qs = np.quantile(ratios, np.linspace(0, 1, k)) if len(ratios) else np.array([0.0])
    return np.unique(np.concatenate([[0.0], qs, [qs.max() * 2 + 1, 1e6]]))


# ----------------------------------------------------------------------------- evaluation

def _fold_kappa(kappas: list[float], folds, n) -> np.ndarray:
    out = np.empty(n)
    for k, f in enumerate(folds):
        out[f] = kappas[k]
    return out


def evaluate_cascade(d: AnswerData, folds_k: int = 5, router: Callable[[], Any] | None = None,
                     verifier: Callable[[], LearnedVerifier] | None = None, cheap: list[str] | None = None,
                     strong: str | None = None, log: Callable[[str], None] = print) -> dict:
    """Routing only / cascade only / cascade routing on held-out folds; see the module docstring.

    ``router`` makes the routing predictor (default: the ridge head, the router eval's robust choice);
    ``cheap`` names the cascade's first model(s) (default: the table's weak model, or the cheapest model
    whose training mean is within 80% of the best); ``strong`` the escalation target (default: the
    table's strong model / the reference).
    """
    from pointsman.predictors import LinearPredictor

    t = d.at.table
    n = len(t)
    folds = folds_of(n, folds_k)
    router = router or (lambda: LinearPredictor("ridge", alpha=10.0, n_members=3))
    strong = strong or t.strong or t.models[int(np.nanargmax(np.nanmean(t.scores, axis=0)))]
    s = t.model_index(strong)
    log(f"  {t.name}: router on {folds_k} folds ...")
    t0 = time.time()
    Q = cv_router(d, folds, router)
    secs_router = time.time() - t0
    log(f"  {t.name}: verifier on {folds_k} folds ...")
    v, kappas, secs_ver = cv_verifier(d, folds, verifier, log)
    cell = d.cell()
    Y = t.normalised_scores()
    C = t.cost
    C_pred = np.zeros_like(C)
    for k in range(len(folds)):
        te = folds[k]
        tr = np.concatenate([folds[j] for j in range(len(folds)) if j != k])
        C_pred[te] = predicted_costs(t, tr, te)
    Crel = C_pred / C_pred.max(axis=1, keepdims=True)
    kappa_row = _fold_kappa(kappas, folds, n)
    weak = t.weak if len(t.models) == 2 and t.strong and t.weak else None  # the cheap one of a two-model table
    two = weak is not None
    if cheap is None:
        cheap = [weak] if weak is not None else _default_cheap(t, strong)
    res: dict[str, Any] = {"name": t.name, "n": n, "models": t.models, "strong": strong, "cheap": cheap,
                           "kappa_per_fold": kappas, "secs": {"router": secs_router, "verifier": secs_ver},
                           "tail_chars": d.tail_chars}
    # verifier quality on the cheap models' held-out answers
    res["verifier"] = {}
    for name in cheap:
        j = t.model_index(name)
        rows = np.array([cell[(i, j)] for i in range(n) if (i, j) in cell])
        yy = d.y[rows]
        res["verifier"][name] = {"auc": verifier_auc(v[rows], yy) if two else None,
                                 "spearman": _spearman(v[rows], yy),
                                 "brier": float(np.mean((v[rows] - yy) ** 2)),
                                 "mean_score": float(v[rows].mean()), "mean_label": float(yy.mean())}
    if weak is not None:
        res.update(_two_model(d, Q, Crel, v, cell, kappa_row, t.model_index(weak), s, Y, C, folds, log))
    else:
        res.update(_n_model(d, Q, C_pred, Crel, v, cell, kappa_row, [t.model_index(c) for c in cheap], s, Y, C, log))
    return res


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def _default_cheap(t, strong: str) -> list[str]:
    """Cheap starts: models costing <= 10% of the strong one, the best two by mean score."""
    mc = np.nanmean(t.cost, axis=0)
    mq = np.nanmean(t.scores, axis=0)
    s = t.model_index(strong)
    cands = [j for j in range(len(t.models)) if mc[j] <= 0.1 * mc[s]]
    cands.sort(key=lambda j: -mq[j])
    return [t.models[j] for j in cands[:2]]


def _v_of(v, cell, n, j) -> np.ndarray:
    out = np.full(n, np.nan)
    for i in range(n):
        r = cell.get((i, j))
        if r is not None:
            out[i] = v[r]
    return out


def _two_model(d, Q, Crel, v, cell, kappa_row, w, s, Y, C, folds, log) -> dict:
    n = len(Q)
    yw, ys, cw, cs = Y[:, w], Y[:, s], C[:, w], C[:, s]
    c_all_strong = cs.mean()
    qw, qs = yw.mean(), ys.mean()
    x_weak = cw.mean() / c_all_strong
    methods = {}

    def record(name, pts, extra=None):
        pts = np.asarray(pts)
        x = pts[:, 0] / c_all_strong
        a = hull_apgr(x, pts[:, 1], qw, qs, x_weak)
        hc, hq = M.upper_hull(np.concatenate([[x_weak], x]), np.concatenate([[qw], pts[:, 1]]))
        methods[name] = {"APGR": a, "cost_for_95": _first_reach(hc, hq, 0.95 * qs),
                         "cost_for_pgr50": _first_reach(hc, hq, qw + 0.5 * (qs - qw)),
                         "cost_for_pgr80": _first_reach(hc, hq, qw + 0.8 * (qs - qw)),
                         "max_quality": float(pts[:, 1].max()), "_points": np.column_stack([x, pts[:, 1]]).tolist()}
        if extra:
            methods[name].update(extra)
        log(f"    {name:<32s} APGR {a:.3f}  cost for PGR 50% {methods[name]['cost_for_pgr50']:.3f}")

    # oracle references
    record("oracle router", _routing_points(ys - yw, yw, ys, cw, cs))
    v_w = _v_of(v, cell, n, w)
    record("oracle verifier cascade", _cascade_points(yw, yw, ys, cw, cs))
    record("random routing", np.array([[cw.mean() + p * (cs.mean() - cw.mean()), qw + p * (qs - qw)]
                                       for p in np.linspace(0, 1, 11)]))
    score = Q[:, s] - Q[:, w]
    curve = M.two_model_curve(score, yw, ys)
    record("routing only", _routing_points(score, yw, ys, cw, cs), {"APGR_routellm": curve.apgr()})
    record("cascade only", _cascade_points(v_w, yw, ys, cw, cs))
    # the validator-only cascade: escalate answers whose arithmetic does not recompute
    from pointsman.cascade.answer_features import ANSWER_FEATURE_NAMES
    wrong_eq = _v_of(d.AF[:, ANSWER_FEATURE_NAMES.index("eq_any_wrong")], cell, n, w)
    record("cascade only, arithmetic validator", _cascade_points(-wrong_eq + 1e-9 * np.arange(n), yw, ys, cw, cs))
    lambdas = _lambda_grid(Q, Crel)
    # plan per fold (each fold's verifier has its own kappa); points are means over all prompts
    per, per_both = [], []
    taus = _threshold_grid(v_w)
    for f in folds:
        p = _cascade_routing_points(Q[f], Crel[f], v_w[f], float(kappa_row[f[0]]), w, s, Y[f], C[f], lambdas)
        per.append(p * len(f))
        p = _cascade_routing_points(Q[f], Crel[f], v_w[f], float(kappa_row[f[0]]), w, s, Y[f], C[f], lambdas, taus)
        per_both.append(p * len(f))
    record("cascade routing", np.sum(per, axis=0) / n)
    record("cascade routing, lambda x threshold", np.sum(per_both, axis=0) / n)
    return {"methods": methods, "q_weak": qw, "q_strong": qs, "x_weak": x_weak}


def _routing_points(score, yw, ys, cw, cs) -> np.ndarray:
    order = np.argsort(-score, kind="stable")
    n = len(score)
    q = yw.mean() + np.concatenate([[0.0], np.cumsum((ys - yw)[order])]) / n
    c = cw.mean() + np.concatenate([[0.0], np.cumsum((cs - cw)[order])]) / n
    return np.column_stack([c, q])


def _first_reach(hc: np.ndarray, hq: np.ndarray, target: float) -> float:
    if hq.max() < target - 1e-12:
        return float("inf")
    k = int(np.argmax(hq >= target - 1e-12))
    if k == 0:
        return float(hc[0])
    return float(np.interp(target, [hq[k - 1], hq[k]], [hc[k - 1], hc[k]]))


def _n_model(d, Q, C_pred, Crel, v, cell, kappa_row, cheaps, s, Y, C, log) -> dict:
    t = d.at.table
    rows = np.flatnonzero(t.complete_rows())
    Yr, Cr, Qr, Crr = Y[rows], C[rows], Q[rows], Crel[rows]
    single_c, single_q = Cr.mean(axis=0), Yr.mean(axis=0)
    cheapest = int(np.argmin(single_c))
    anchor = (single_c[cheapest], single_q[cheapest])
    lo, hi = t.score_range
    target = (0.95 * (lo + (hi - lo) * single_q[s]) - lo) / (hi - lo)  # 95% of the raw mean score
    methods = {}

    def record(name, pts):
        pts = np.asarray(pts)
        methods[name] = {"AIQ": M.aiq(pts[:, 0], pts[:, 1], single_c.min(), single_c.max(), anchor=anchor),
                         "cost_share_for_95": M.cost_share_for_quality(pts[:, 0], pts[:, 1], target, single_c[s], anchor=anchor),
                         "_points": pts.tolist()}
        cs = methods[name]["cost_share_for_95"]
        log(f"    {name:<40s} AIQ {lo + (hi - lo) * methods[name]['AIQ']:.3f}  cost for 95% {cs:.3f}")

    from pointsman.predictors.decide import choose_by_floor, sweep
    # oracle and routing only (lambda and floor sweeps, as report.n_model_quality)
    record("oracle router", [M.routed_outcome(ch, Yr, Cr) for _, ch in sweep(np.nan_to_num(Yr, nan=-1), Cr)])
    pts = [M.routed_outcome(ch, Yr, Cr) for _, ch in sweep(Qr, Crr)]
    pts += [M.routed_outcome(choose_by_floor(Qr, Crr, f), Yr, Cr) for f in np.linspace(0, 1, 91)]
    record("routing only", pts)
    lambdas = _lambda_grid(Qr, Crr)
    all_cascade, all_cr, all_both = [], [], []
    for j in cheaps:
        vj = _v_of(v, cell, len(t), j)[rows]
        ok = ~np.isnan(vj)
        vj = np.where(ok, vj, -1.0)  # no answer: escalate first
        p = _cascade_points(vj, Yr[:, j], Yr[:, s], Cr[:, j], Cr[:, s])
        record(f"cascade only ({t.models[j]} -> {t.models[s]})", p)
        all_cascade.append(p)
        # oracle verifier for reference
        record(f"oracle verifier cascade ({t.models[j]})", _cascade_points(Yr[:, j], Yr[:, j], Yr[:, s], Cr[:, j], Cr[:, s]))
        p = _cascade_routing_points(Qr, Crr, vj, float(np.median(kappa_row)), j, s, Yr, Cr, lambdas)
        record(f"cascade routing ({t.models[j]} -> {t.models[s]})", p)
        all_cr.append(p)
        p = _cascade_routing_points(Qr, Crr, vj, float(np.median(kappa_row)), j, s, Yr, Cr, lambdas, _threshold_grid(vj))
        record(f"cascade routing, lambda x threshold ({t.models[j]} -> {t.models[s]})", p)
        all_both.append(p)
    if len(cheaps) > 1:
        record("cascade only (any start)", np.vstack(all_cascade))
        record("cascade routing (any start)", np.vstack(all_cr))
        record("cascade routing, lambda x threshold (any start)", np.vstack(all_both))
    return {"methods": methods, "reference": t.models[s], "n_eval": int(len(rows)), "target": float(target),
            "score_range": [float(lo), float(hi)],
            "single_model_quality": dict(zip(t.models, (Yr.mean(axis=0) * (t.score_range[1] - t.score_range[0])
                                                        + t.score_range[0]).tolist())),
            "single_model_cost": dict(zip(t.models, single_c.tolist()))}


# ----------------------------------------------------------------------------- output

def tables(results: list[dict]) -> str:
    out = []
    for r in results:
        meth = r["methods"]
        out.append(f"### {r['name']} ({r['n']} prompts; cascade {', '.join(r['cheap'])} -> {r['strong']}; "
                   f"answer tail {r['tail_chars']} chars)\n")
        if "APGR" in next(iter(meth.values())):
            out.append("| method | APGR | cost for PGR 50% | cost for PGR 80% | cost for 95% of strong | best accuracy |")
            out.append("|---|---|---|---|---|---|")
            for k, v in meth.items():
                f = lambda x: "never" if not np.isfinite(x) else f"{x:.1%}"  # noqa: E731
                out.append(f"| {k} | {v['APGR']:.3f} | {f(v['cost_for_pgr50'])} | {f(v['cost_for_pgr80'])} | "
                           f"{f(v['cost_for_95'])} | {v['max_quality']:.3f} |")
            out.append("")
            out.append("cost = mean realised cost as a share of always-strong (the cheap attempt counted); "
                       f"always-cheap costs {r['x_weak']:.1%}. Accuracy: cheap {r['q_weak']:.3f}, strong {r['q_strong']:.3f}.")
        else:
            ref = r["reference"]
            lo, hi = r.get("score_range", (0.0, 1.0))
            out.append(f"| method | AIQ (score units) | cost for 95% of {ref} (share of its cost) |")
            out.append("|---|---|---|")
            for k, v in meth.items():
                cs = v["cost_share_for_95"]
                out.append(f"| {k} | {lo + (hi - lo) * v['AIQ']:.3f} | {'never' if not np.isfinite(cs) else f'{cs:.1%}'} |")
            out.append("")
            out.append(f"evaluated on {r['n_eval']} prompts with every model scored; target score {lo + (hi - lo) * r['target']:.2f} (95% of {ref}'s mean).")
        out.append("")
        parts = []
        for m, x in r["verifier"].items():
            auc = f"AUC {x['auc']:.3f}, " if x["auc"] is not None else ""
            parts.append(f"{m}: {auc}Spearman {x['spearman']:.3f}, Brier {x['brier']:.4f} (mean score "
                         f"{x['mean_score']:.3f} vs mean label {x['mean_label']:.3f})")
        out.append("verifier on held-out cheap answers: " + "; ".join(parts))
        out.append(f"kappa per fold: {', '.join(f'{k:.2f}' for k in r['kappa_per_fold'])}")
        out.append("")
    return "\n".join(out)


def plot(result: dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    meth = result["methods"]
    two = "APGR" in next(iter(meth.values()))
    for k, v in meth.items():
        pts = np.asarray(v["_points"])
        if two:
            xs = np.concatenate([[result["x_weak"]], pts[:, 0]])
            ys = np.concatenate([[result["q_weak"]], pts[:, 1]])
        else:
            lo, hi = result.get("score_range", (0.0, 1.0))
            xs, ys = pts[:, 0] / result["single_model_cost"][result["reference"]], lo + (hi - lo) * pts[:, 1]
        hc, hq = M.upper_hull(xs, ys)
        bold = k.startswith("cascade routing") or k in ("routing only", "cascade only") or k.startswith("cascade only (")
        label = f"{k} ({'APGR %.3f' % v['APGR'] if two else 'cost for 95%% %s' % ('never' if not np.isfinite(v['cost_share_for_95']) else '%.1f%%' % (100 * v['cost_share_for_95']))})"
        ax.plot(hc * 100, hq, label=label, lw=2.2 if bold else 1.0, ls="-" if bold else "--")
    if two:
        ax.axhline(result["q_strong"], color="k", ls=":", lw=0.8)
        ax.set_ylabel("accuracy")
        ax.set_xlim(0, 101)
    else:
        lo, hi = result.get("score_range", (0.0, 1.0))
        ax.axhline(lo + (hi - lo) * result["target"], color="r", ls=":", lw=0.8, label="95% of " + result["reference"])
        ax.set_xscale("log")
        ax.set_ylabel("mean score")
    ax.set_xlabel(f"cost, % of always {result['strong']} (cheap attempt counted)")
    ax.set_title(f"{result['name']}: routing vs cascade vs cascade routing, held-out folds")
    ax.legend(fontsize=6.5)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- training (pointsman train --verifier)

def train_verifier(tables: list[AnswerTable], tail_chars: int = 0, alpha: float = 3e-3, interactions: bool = True,
                   prompt_tokens: int | None = None, progress: bool = False, log: Callable[[str], None] | None = None,
                   encoder: str = "minilm") -> LearnedVerifier:
    """Fit one verifier on the answers of every table (each model's prior = its mean normalised score in
    its own table; several tables are stacked, answers to one prompt kept in one inner fold)."""
    parts = []
    offset = 0
    for at in tables:
        d = prepare(at, tail_chars, progress=progress, prompt_tokens=prompt_tokens, verifier_encoder=encoder)
        prior = _model_priors(d, np.arange(len(at.table)))
        names = np.array(at.table.models)
        parts.append((d, prior[d.mj], names[d.mj], d.pi + offset))
        offset += len(at.table)
        if log:
            log(f"{at.table.name}: {len(d.y)} answers of {len(at.table.models)} models to {len(at.table)} prompts")
    cat = lambda f: np.concatenate([f(p) for p in parts])  # noqa: E731
    ver = LearnedVerifier(tail_chars=tail_chars, alpha=alpha, interactions=interactions,
                          prompt_tokens=parts[0][0].prompt_tokens, encoder=parts[0][0].encoder)
    ver.fit(cat(lambda p: p[0].X[p[0].pi]), cat(lambda p: p[0].F[p[0].pi]),
            cat(lambda p: p[0].A) if tail_chars else None, cat(lambda p: p[0].AF), cat(lambda p: p[1]),
            cat(lambda p: p[0].y), models=cat(lambda p: p[2]), groups=cat(lambda p: p[3]))
    ver.info.update({"trained_on": "+".join(at.table.name for at in tables), "prompts": int(offset)})
    return ver
