"""The learned verifier: P(an answer is acceptable) from the prompt, the answer and who answered.

Inputs, per (prompt, answer, model):

* the prompt's embedding and prompt features over the first ``prompt_tokens`` tokens, by the encoder the
  artefact names (``encoder``): MiniLM's first 64 tokens for the shipped verifier (one encoder run per
  checked request, shared through ``item.route.embedding(..., max_tokens=...)`` with anything else that
  embeds the same way), or the static table tier 2 routes with (``pointsman train --verifier --encoder
  static``: it reuses routing's embedding, so a check runs no encoder at all). Measured on held-out folds
  (bench/cascade/RESULTS.md): the static one scores answers as well (Brier, Spearman), but its cascade
  on arena-bench needed more of gpt-4-1106's cost for 95% of its score (65.7% vs 58.5%), so MiniLM stays
  the default;
* the embedding of the answer's *tail* (:func:`answer_tail`, the last ``tail_chars`` characters, where the
  final result sits; bounded so that verifying costs one short encoder run); ``tail_chars = 0`` (the
  default, and the shipped verifier) uses no answer embedding at all, so a check costs no encoder run: on
  GSM8K and arena-bench the tail embedding did not measurably help (bench/cascade/RESULTS.md);
* cheap answer features (:mod:`pointsman.cascade.answer_features`: final number, whole or not, prompt
  quantities used, arithmetic that does not recompute, hedging, refusal, repetition, length, ...);
* the answering model's quality prior (0..1), as a logit, and every block above times that (centred)
  logit, so each feature's weight can depend on how strong the answering model is. The prior is the
  prior the gateway passes (config ``quality``, tier, price) when it names the model, else the model's
  mean score in the training data when the verifier has seen it, else the training mean. So a pool model the verifier never saw is scored like an average model of its prior.

The head is an L2-regularised logistic model on soft labels: the target is the answer's score normalised
to 0..1 (1/0 correctness on GSM8K; ``(score - 1) / 9`` for a 1-10 judge), so the output is the expected
normalised quality, in the units cascade routing compares with ``q - lambda * c``
(:mod:`pointsman.cascade.decide`). It is then calibrated with Platt scaling fitted on out-of-fold scores
(an inner K-fold on the training data), so the score is a probability (GSM8K) or a calibrated expected
score. ``kappa`` (the Beta concentration of verifier scores around the prompt-only expectation, which
cascade routing's ``expected_max`` needs) is fitted on the same out-of-fold scores by moments:
``kappa + 1 = mean(q (1 - q)) / mean((v - q)^2)`` with ``q`` a prompt-only model's out-of-fold prediction.

Inference is numpy only (one dot product); the artefact is one ``.npz`` of arrays plus JSON metadata read
with ``allow_pickle=False``, like the routers' (:mod:`pointsman.predictors.base`)::

    v = LearnedVerifier().fit(P, PF, None, AF, prior, y)   # arrays (see ``fit``); tail_chars=0: no answer embedding
    v.save("verifier.npz")
    v = load_verifier("default", embedder)          # the packaged one, or a path
    verdict = await v.check(answer_context)         # Verdict(score = P(acceptable))
"""

from __future__ import annotations

import os
from importlib import resources
from typing import Any, Sequence

import numpy as np

from pointsman.cascade.answer_features import ANSWER_FEATURE_NAMES, ANSWER_FEATURES_VERSION, answer_features, answer_tail
from pointsman.cascade.base import AnswerContext, Verdict, Verifier
from pointsman.embed.base import Embedder
from pointsman.embed.features import feature_meta, feature_width
from pointsman.predictors.base import read_artefact, write_artefact

from pointsman.embed.encoder import MODEL_ID as MINILM_MODEL_ID
from pointsman.embed.registry import default_window, encoder_kind

__all__ = ["LearnedVerifier", "load_verifier", "VERIFIER_FORMAT", "DEFAULT_VERIFIER", "design_matrix"]

VERIFIER_FORMAT = "pointsman.verifier/1"
DEFAULT_VERIFIER = "default_verifier.npz"
_PRIOR_CENTRE = 0.5  # logit of the prior is centred here (about a 0.62-quality model)


def _logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 0.02, 0.98)
    return np.log(p / (1 - p))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -35, 35)))


def design_matrix(prompt_emb: np.ndarray, prompt_feat: np.ndarray, answer_emb: np.ndarray | None,
                  answer_feat: np.ndarray, prior: np.ndarray, interactions: bool = False) -> np.ndarray:
    """The verifier's input rows: [prompt emb, answer-tail emb, prompt feats, answer feats, (each of those x
    the centred prior logit, when ``interactions``), prior logit, 1].

    Feature blocks must already be standardised; ``answer_emb`` None means "no answer embedding".
    """
    n = len(prior)
    lp = _logit(prior).reshape(n, 1)
    blocks = [np.asarray(prompt_emb, dtype=np.float64)]
    if answer_emb is not None:
        blocks.append(np.asarray(answer_emb, dtype=np.float64))
    blocks += [np.asarray(prompt_feat, dtype=np.float64), np.asarray(answer_feat, dtype=np.float64)]
    if interactions:
        # model-specific slopes: what a feature says depends on how strong the answering model is
        centred = lp - _PRIOR_CENTRE
        blocks += [b * centred for b in list(blocks)]
    blocks += [lp, np.ones((n, 1))]
    return np.hstack(blocks)


def _fit_logistic(X: np.ndarray, y: np.ndarray, alpha: float, w: np.ndarray | None = None,
                  penalise_last: int = 1) -> np.ndarray:
    """L2 logistic regression on soft labels y in [0, 1] (cross-entropy), by L-BFGS. The last
    ``penalise_last`` columns (the intercept) are not penalised."""
    from scipy.optimize import minimize

    n, d = X.shape
    w = np.ones(n) if w is None else w
    pen = np.ones(d)
    pen[d - penalise_last:] = 0.0
    sw = w.sum()

    def f(theta):
        z = X @ theta
        # log(1 + e^z) - y z, numerically stable
        loss = (w * (np.logaddexp(0.0, z) - y * z)).sum() / sw + 0.5 * alpha * (pen * theta * theta).sum()
        grad = X.T @ (w * (_sigmoid(z) - y)) / sw + alpha * pen * theta
        return loss, grad

    res = minimize(f, np.zeros(d), jac=True, method="L-BFGS-B", options={"maxiter": 500})
    return res.x


def _fit_platt(z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Platt scaling: y ~ sigmoid(a z + b), fitted by cross-entropy (soft labels allowed)."""
    X = np.column_stack([z, np.ones_like(z)])
    theta = _fit_logistic(X, y, alpha=1e-6, penalise_last=2)
    return float(theta[0]), float(theta[1])


class LearnedVerifier(Verifier):
    """Embeddings + answer features + model prior -> calibrated P(acceptable). See the module docstring."""

    name = "learned"

    def __init__(self, embedder: Embedder | None = None, *, tail_chars: int = 0, alpha: float = 3e-3, inner_folds: int = 5,
                 interactions: bool = True, prompt_tokens: int | None = None, encoder: str = MINILM_MODEL_ID,
                 priors: dict[str, float] | None = None) -> None:
        self.embedder = embedder
        self.tail_chars = int(tail_chars)
        self.alpha = float(alpha)
        self.interactions = bool(interactions)
        self.encoder = encoder  # the embedding's model id (embed.registry.encoder_kind maps it to an encoder)
        if prompt_tokens is None:  # the router's window for that encoder, so the embedding is shared
            prompt_tokens = default_window(encoder_kind(encoder))
        self.prompt_tokens = int(prompt_tokens)
        self.embed_dim = 0  # set by fit / load
        self.inner_folds = int(inner_folds)
        self.priors = dict(priors or {})  # pool model -> quality prior (from the gateway's config)
        self.coef: np.ndarray | None = None
        self.platt = (1.0, 0.0)
        self.kappa = 2.0
        self.model_means: dict[str, float] = {}
        self.default_prior = 0.5
        # the standardisation of the prompt and answer features (set by fit / load)
        self.pf_mean: np.ndarray | None = None
        self.pf_std: np.ndarray | None = None
        self.af_mean: np.ndarray | None = None
        self.af_std: np.ndarray | None = None
        self.info: dict[str, Any] = {}

    # ------------------------------------------------------------------ fitting
    def _scales(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """pf_mean, pf_std, af_mean, af_std."""
        if self.pf_mean is None or self.pf_std is None or self.af_mean is None or self.af_std is None:
            raise ValueError("this verifier is not fitted")
        return self.pf_mean, self.pf_std, self.af_mean, self.af_std

    def _standardise(self, PF: np.ndarray, AF: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pf_mean, pf_std, af_mean, af_std = self._scales()
        PF = np.asarray(PF, dtype=np.float64)[:, :len(pf_mean)]  # a verifier of older features reads its prefix
        pf = np.clip((PF - pf_mean) / pf_std, -6, 6)
        af = np.clip((np.asarray(AF, dtype=np.float64) - af_mean) / af_std, -6, 6)
        return pf, af

    def fit(self, prompt_emb: np.ndarray, prompt_feat: np.ndarray, answer_emb: np.ndarray | None,
            answer_feat: np.ndarray, prior: np.ndarray, y: np.ndarray, *, models: Sequence[str] | np.ndarray | None = None,
            groups: np.ndarray | None = None, seed: int = 0) -> "LearnedVerifier":
        """Fit on n answers.

        prompt_emb (n, d) and prompt_feat (n, F): of each answer's prompt; answer_emb (n, d): of
        ``answer_tail(answer, tail_chars)`` (None when ``tail_chars == 0``); answer_feat (n, A):
        ``answer_features``; prior (n,): the answering model's quality prior 0..1; y (n,): the answer's
        normalised score 0..1. ``models`` (n,) names the answering models (their means become the priors
        of known models at inference); ``groups`` (n,) keeps answers to one prompt in one inner fold.
        """
        y = np.clip(np.asarray(y, dtype=np.float64), 0.0, 1.0)
        prior = np.asarray(prior, dtype=np.float64)
        n = len(y)
        if self.tail_chars and answer_emb is None:
            raise ValueError("this verifier embeds the answer's tail (tail_chars > 0): pass answer_emb")
        if not self.tail_chars:
            answer_emb = None
        PF = np.asarray(prompt_feat, dtype=np.float64)
        AF = np.asarray(answer_feat, dtype=np.float64)
        self.embed_dim = int(np.asarray(prompt_emb).shape[1])
        self.pf_mean, self.pf_std = PF.mean(0), np.maximum(PF.std(0), 1e-6)
        self.af_mean, self.af_std = AF.mean(0), np.maximum(AF.std(0), 1e-6)
        pf, af = self._standardise(PF, AF)
        X = design_matrix(prompt_emb, pf, answer_emb, af, prior, self.interactions)
        # prompt-only design (no answer): the expectation before the answer exists, for kappa
        X0 = design_matrix(prompt_emb, pf, None, np.zeros((n, 0)), prior, self.interactions)
        groups = np.arange(n) if groups is None else np.asarray(groups)
        uniq = np.unique(groups)
        perm = np.random.default_rng(seed).permutation(len(uniq))
        fold_of_group = {g: k % self.inner_folds for k, g in zip(perm, uniq[perm])}
        fold = np.array([fold_of_group[g] for g in groups])
        oof = np.zeros(n)
        oof0 = np.zeros(n)
        for k in range(self.inner_folds):
            tr, te = fold != k, fold == k
            if not te.any() or not tr.any():
                continue
            oof[te] = X[te] @ _fit_logistic(X[tr], y[tr], self.alpha)
            oof0[te] = X0[te] @ _fit_logistic(X0[tr], y[tr], self.alpha)
        self.platt = _fit_platt(oof, y)
        a0, b0 = _fit_platt(oof0, y)
        v = _sigmoid(self.platt[0] * oof + self.platt[1])
        q = _sigmoid(a0 * oof0 + b0)
        spread = float(np.mean((v - q) ** 2))
        self.kappa = float(np.clip(np.mean(q * (1 - q)) / max(spread, 1e-6) - 1.0, 0.2, 200.0))
        self.coef = _fit_logistic(X, y, self.alpha)
        if models is not None:
            names = np.asarray(models)
            self.model_means = {str(m): float(y[names == m].mean()) for m in np.unique(names)}
        self.default_prior = float(y.mean())
        self.info.update({"n_answers": int(n), "oof_brier": float(np.mean((v - y) ** 2)),
                          "oof_brier_prompt_only": float(np.mean((q - y) ** 2))})
        return self

    # ------------------------------------------------------------------ inference
    def prior_of(self, model: str) -> float:
        """The answering model's quality prior: the gateway's, else its training mean, else the average."""
        if model in self.priors:
            return float(self.priors[model])
        if model in self.model_means:
            return self.model_means[model]
        return self.default_prior

    def decision_function(self, prompt_emb, prompt_feat, answer_emb, answer_feat, prior) -> np.ndarray:
        if self.coef is None:
            raise ValueError("this verifier is not fitted")
        pf, af = self._standardise(np.atleast_2d(prompt_feat), np.atleast_2d(answer_feat))
        ae = np.atleast_2d(answer_emb) if self.tail_chars else None
        X = design_matrix(np.atleast_2d(prompt_emb), pf, ae, af, np.atleast_1d(prior), self.interactions)
        return X @ self.coef

    def predict(self, prompt_emb, prompt_feat, answer_emb, answer_feat, prior) -> np.ndarray:
        """(n,) calibrated P(acceptable) (the expected normalised score)."""
        z = self.decision_function(prompt_emb, prompt_feat, answer_emb, answer_feat, prior)
        return _sigmoid(self.platt[0] * z + self.platt[1])

    async def check(self, item: AnswerContext) -> Verdict | None:
        text = item.text
        if not text.strip():
            return None  # nothing to judge (the finish validator flags empty answers)
        if self.embedder is None:
            raise RuntimeError("LearnedVerifier.check needs an embedder (load_verifier(path, embedder))")
        prompt_emb, prompt_feat = await item.route.embedding(self.embedder, max_tokens=self.prompt_tokens)
        answer_emb = await self.embedder.embed(answer_tail(text, self.tail_chars)) if self.tail_chars else None
        feats = answer_features([item.route.last_user_text], [text])
        prior = self.prior_of(item.model)
        score = float(self.predict(prompt_emb, prompt_feat, answer_emb, feats, prior)[0])
        return Verdict(self.name, score, detail=f"prior {prior:.2f}")

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> None:
        if self.coef is None:
            raise ValueError("fit the verifier before saving it")
        pf_mean, pf_std, af_mean, af_std = self._scales()
        meta = {
            "format": VERIFIER_FORMAT, "kind": "logistic",
            "params": {"tail_chars": self.tail_chars, "alpha": self.alpha, "inner_folds": self.inner_folds,
                       "interactions": self.interactions, "prompt_tokens": self.prompt_tokens, "encoder": self.encoder},
            "platt": list(self.platt), "kappa": self.kappa, "model_means": self.model_means,
            "default_prior": self.default_prior,
            **dict(zip(("feature_names", "features_version"), feature_meta(len(pf_mean)))),
            "answer_feature_names": list(ANSWER_FEATURE_NAMES), "answer_features_version": ANSWER_FEATURES_VERSION,
            "embed_dim": self.embed_dim, "info": self.info,
        }
        arrays = {"coef": self.coef.astype(np.float32), "pf_mean": pf_mean.astype(np.float32),
                  "pf_std": pf_std.astype(np.float32), "af_mean": af_mean.astype(np.float32),
                  "af_std": af_std.astype(np.float32)}
        write_artefact(path, arrays, meta, compress=True)

    @classmethod
    def load(cls, path: str | os.PathLike, embedder: Embedder | None = None, priors: dict[str, float] | None = None
             ) -> "LearnedVerifier":
        arrays, meta = read_artefact(path, VERIFIER_FORMAT)
        try:
            feature_width(meta["feature_names"], int(meta["features_version"]))
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        if (tuple(meta["answer_feature_names"]) != ANSWER_FEATURE_NAMES
                or meta["answer_features_version"] != ANSWER_FEATURES_VERSION):
            raise ValueError(f"{path}: trained with a different answer-feature set; retrain it")
        params = dict(meta["params"])
        params.setdefault("encoder", MINILM_MODEL_ID)  # verifiers from before the encoder was recorded
        obj = cls(embedder, priors=priors, **params)
        obj.embed_dim = int(meta.get("embed_dim", 384))
        obj.coef = arrays["coef"].astype(np.float64)
        obj.pf_mean, obj.pf_std = arrays["pf_mean"].astype(np.float64), arrays["pf_std"].astype(np.float64)
        obj.af_mean, obj.af_std = arrays["af_mean"].astype(np.float64), arrays["af_std"].astype(np.float64)
        obj.platt = (float(meta["platt"][0]), float(meta["platt"][1]))
        obj.kappa = float(meta["kappa"])
        obj.model_means = {k: float(v) for k, v in meta["model_means"].items()}
        obj.default_prior = float(meta["default_prior"])
        obj.info = meta.get("info", {})
        expected = X_dim(obj.tail_chars, obj.interactions, obj.embed_dim, len(obj.pf_mean))
        if obj.coef.shape != (expected,):
            raise ValueError(f"{path}: coefficient vector has shape {obj.coef.shape}, expected ({expected},)")
        return obj


def X_dim(tail_chars: int, interactions: bool, embed_dim: int = 384, prompt_features: int | None = None) -> int:  # noqa: N802
    """The design matrix's width."""
    from pointsman.embed.features import FEATURE_NAMES

    width = len(FEATURE_NAMES) if prompt_features is None else prompt_features
    base = embed_dim + (embed_dim if tail_chars else 0) + width + len(ANSWER_FEATURE_NAMES)
    return base * (2 if interactions else 1) + 2


def load_verifier(path: str | os.PathLike = "default", embedder: Embedder | None = None,
                  priors: dict[str, float] | None = None) -> LearnedVerifier:
    """A trained verifier: ``"default"`` (shipped in the package) or a path to a ``.npz`` artefact.

    ``embedder`` is the gateway's (``EmbedBatcher``: ``embed_with_features`` / ``embed``); ``priors`` maps
    pool model names to their quality prior (0..1), used for models the verifier was not trained on.
    """
    if str(path) == "default":
        ref = resources.files("pointsman.cascade").joinpath(DEFAULT_VERIFIER)
        with resources.as_file(ref) as p:
            return LearnedVerifier.load(p, embedder, priors)
    return LearnedVerifier.load(path, embedder, priors)
