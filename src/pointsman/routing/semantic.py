"""Tier 2: a trained router predicts each pool model's quality on the prompt; the knob decides.

A router artefact (`pointsman train`) predicts quality for the models it was trained on. Pool models it
has seen are read directly; the others are placed through their quality prior (config/priors.py) with
a one-parameter item-response model fitted per prompt to the trained models' predictions:
logit P(good | model m, prompt x) = logit P(good | anchor) + a(x) * (prior_m - prior_anchor). So a router
trained on GPT-4 vs Mixtral outcomes routes any pool on a fresh install, and training on your own traffic
replaces the guesswork with measurements.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pointsman.config.schema import ModelConfig, SemanticTierConfig
from pointsman.embed.registry import Embedders
from pointsman.routing.base import RouteContext, RouteDecision
from pointsman.config.priors import blended_price, quality_prior
from pointsman.text import text_of

DEFAULT_ROUTER = Path(__file__).with_name("default_router.npz")
MIN_SLOPE = 0.5  # logit units per unit of prior: a weaker prior never predicts better answers (low, so that
# prompts where the trained models differ little keep their order on a pool of other models)
_EPS = 0.02


DEPLOYED = "deployed.npz"  # in learning.routers_dir: what `pointsman promote` put there


def router_file(router: str | Path, routers_dir: str | Path = "pointsman-routers") -> Path:
    """The artefact a policy's `router:` names: "default" is the one shipped in the package, "deployed" the
    last one `pointsman promote` deployed into ``routers_dir`` (the shipped one until a router is promoted)."""
    if str(router) == "deployed":
        deployed = Path(routers_dir) / DEPLOYED
        return deployed if deployed.exists() else DEFAULT_ROUTER
    return DEFAULT_ROUTER if str(router) == "default" else Path(router)


def _warn_if_other_encoder_file(path: Path, recorded: str | None) -> None:
    """A router's inputs are only what it was trained on if the MiniLM file is the one it recorded."""
    if not recorded:
        return
    from pointsman.embed.encoder import file_sha256, find_model_files

    try:
        installed = file_sha256(find_model_files()[0])
    except (FileNotFoundError, ValueError):
        return  # the encoder itself reports that when it loads
    if installed != recorded:
        logging.getLogger("pointsman.routing").warning(
            "router %s was trained on embeddings of another MiniLM file (SHA-256 %s..., installed %s...): its "
            "predictions may be off; retrain it", path, recorded[:16], installed[:16])


def history_share(messages: list[dict[str, Any]]) -> float:
    """The share of a conversation's text sent before its last turn: what the provider's prompt cache holds from
    the turn before (the last turn being the trailing user or tool messages)."""
    sizes = [len(text_of(m.get("content"), " ")) + sum(len(str(c)) for c in m.get("tool_calls") or ()) for m in messages]
    total = sum(sizes)
    last = len(messages)
    while last > 0 and messages[last - 1].get("role") in ("user", "tool"):
        last -= 1
    return sum(sizes[:last]) / total if total and last else 0.0


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


class PoolQualityMap:
    """Turns a predictor's (m_trained,) normalised predictions into (n_pool,) qualities."""

    def __init__(self, trained: list[str], anchor_priors: dict[str, float], pool: list[ModelConfig]) -> None:
        self.pool_names = [m.name for m in pool]
        self.direct = np.array([trained.index(m.name) if m.name in trained else -1 for m in pool])
        self.anchor_priors = np.array([anchor_priors.get(name, np.nan) for name in trained])
        self.pool_priors = np.array([quality_prior(m) for m in pool])
        self.usable_anchors = ~np.isnan(self.anchor_priors)
        # the anchors' priors are fixed: centre them once (the per-prompt slope is a least-squares fit on them)
        priors = self.anchor_priors[self.usable_anchors]
        self._centre_prior = float(priors.mean()) if len(priors) else 0.0
        self._centred_priors = priors - self._centre_prior
        spread = float(self._centred_priors @ self._centred_priors)
        self._fit_slope = len(priors) >= 2 and spread > 0
        self._prior_spread = spread

    def map(self, quality: np.ndarray, sd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """quality, sd: (m_trained,) in [0, 1] -> (n_pool,) quality and sd."""
        out = np.empty(len(self.pool_names))
        out_sd = np.empty(len(self.pool_names))
        seen = self.direct >= 0
        out[seen] = quality[self.direct[seen]]
        out_sd[seen] = sd[self.direct[seen]]
        if (~seen).any():
            logits = _logit(quality[self.usable_anchors])
            centre_logit = float(logits.mean())
            # least-squares slope of logit on prior (np.polyfit's, without its per-call overhead)
            slope = max(MIN_SLOPE, float(self._centred_priors @ (logits - centre_logit)) / self._prior_spread) \
                if self._fit_slope else MIN_SLOPE
            # anchor the line at the trained models' centre, then read each unseen model off it
            out[~seen] = _sigmoid(centre_logit + slope * (self.pool_priors[~seen] - self._centre_prior))
            out_sd[~seen] = float(sd[self.usable_anchors].max()) if self.usable_anchors.any() else 0.5
        return out, out_sd


@dataclass(slots=True)
class Knob:
    lambda_: float
    floor: float | None

    def describe(self) -> str:
        return f"floor={self.floor:g}" if self.floor is not None else f"lambda={self.lambda_:g}"


def pool_quality_map(predictor: Any, pool: list[ModelConfig], path: str | Path = "router") -> PoolQualityMap:
    """How a router's predictions for the models it was trained on carry over to ``pool``'s models (anchors)."""
    by_name = {m.name: m for m in pool}
    anchors = dict(predictor.info.get("anchor_quality") or {})
    for name in predictor.model_names:  # a trained pool model's prior anchors it too
        if name in by_name and name not in anchors:
            anchors[name] = quality_prior(by_name[name])
    quality_map = PoolQualityMap(list(predictor.model_names), anchors, pool)
    if not quality_map.usable_anchors.any() and (quality_map.direct < 0).any():
        raise ValueError(f"router {path}: its models {predictor.model_names} are not in the pool and it carries "
                         "no anchor_quality to place other models; retrain with pool model names")
    return quality_map


class SemanticTier:
    """Tier 2 of one policy. The predictor file may be swapped on disk: `reload()` picks it up."""

    name = "semantic"
    revises = False

    def __init__(self, config: SemanticTierConfig, pool: list[ModelConfig], embedders: Embedders,
                 routers_dir: str | Path = "pointsman-routers", cached_rates: dict[str, float] | None = None) -> None:
        self.config = config
        self.pool = {m.name: m for m in pool}
        self.cached_rates = cached_rates or {}  # USD per million cached input tokens, per model (accounting/prices.py)
        self.embedders = embedders  # the artefact names its encoder
        self.routers_dir = routers_dir
        self.path = router_file(config.router, routers_dir)
        self._lock = threading.Lock()
        self.reload()

    def reload(self) -> None:
        from pointsman.predictors import load_predictor  # numpy-only inference; loaded once per artefact

        self.path = router_file(self.config.router, self.routers_dir)  # "deployed" may have appeared or gone
        if not self.path.exists():
            raise ValueError(f"router artefact {self.path} does not exist (train one with `pointsman train`)")
        predictor = load_predictor(self.path)
        quality_map = pool_quality_map(predictor, list(self.pool.values()), self.path)
        # the encoder window the router was trained with (artefacts from before windows were recorded: 256)
        window = int(predictor.info.get("max_seq_length") or 256)
        # An artefact that switches encoder gets its embedder now; a new one loads on first use.
        embedder = self.embedders.for_artefact(predictor.info)
        _warn_if_other_encoder_file(self.path, predictor.info.get("encoder_file_sha256"))
        with self._lock:
            self.predictor, self.quality_map, self.window, self.embedder = predictor, quality_map, window, embedder
            self.version = str(predictor.info.get("version") or self.path.stat().st_mtime_ns)

    def knob(self, ctx: RouteContext) -> Knob:
        overrides = ctx.overrides
        floor = overrides.get("floor", self.config.floor)
        lambda_ = overrides.get("lambda", self.config.lambda_)
        return Knob(lambda_, None if "lambda" in overrides and "floor" not in overrides else floor)

    async def predict(self, ctx: RouteContext) -> tuple[np.ndarray, np.ndarray]:
        """Predicted quality and its sd for every pool model, in pool order (quality in [0, 1])."""
        predictor, quality_map, window, embedder = self.predictor, self.quality_map, self.window, self.embedder
        embedding, features = await ctx.embedding(embedder, max_tokens=window)
        quality, sd = predictor.predict_with_uncertainty(embedding[None, :], features[None, :])
        low, high = predictor.score_range
        scale = (high - low) or 1.0
        return quality_map.map((quality[0] - low) / scale, sd[0] / scale)

    async def decide(self, ctx: RouteContext, eligible: list[str], tentative: RouteDecision | None = None
                     ) -> RouteDecision | None:
        quality, sd = await self.predict(ctx)
        names = self.quality_map.pool_names
        index = [names.index(m) for m in eligible]
        q, s = quality[index], sd[index]
        prices, agent_share = self._prices(ctx, eligible)
        cost = prices / prices.max() if prices.max() > 0 else prices
        knob = self.knob(ctx)
        if knob.floor is not None:
            passing = np.flatnonzero(q >= knob.floor)
            choice = int(passing[np.argmin(cost[passing])]) if len(passing) else int(np.argmax(q))
        else:
            choice = int(np.argmax(q - knob.lambda_ * cost - 1e-9 * cost))
        confidence = self._confidence(q, s, cost, knob, choice)
        scores = {m: round(float(v), 4) for m, v in zip(eligible, q)}
        agent = f" agent prices ({agent_share:.0%} cached input)" if agent_share is not None else ""
        decision = RouteDecision(model=eligible[choice], tier=self.name, scores=scores, confidence=confidence,
                                 reason=f"{knob.describe()}{agent} predicted {q[choice]:.2f} confidence {confidence:.2f}")
        return decision

    def _prices(self, ctx: RouteContext, eligible: list[str]) -> tuple[np.ndarray, float | None]:
        """Each model's price per million tokens (3:1 input:output) as the knob weighs it, and the cached share
        applied (None: list prices). An agent (a tool-using request) resends its history every turn, which the
        provider's prompt cache serves at the cached-input rate: its input is priced at that rate for the share
        `agent_cached_share` (or the history's own share of a continuing conversation, when larger), so that a
        model whose cache is cheap is seen as the agent will pay for it."""
        if not ctx.has_tools or not self.cached_rates:
            return np.array([blended_price(self.pool[m]) for m in eligible]), None
        share = max(self.config.agent_cached_share, history_share(ctx.messages))
        prices = []
        for m in eligible:
            rates = self.pool[m].prices
            cached = self.cached_rates.get(m, rates.input)
            prices.append(0.75 * ((1 - share) * rates.input + share * cached) + 0.25 * rates.output)
        return np.array(prices), share

    @staticmethod
    def _confidence(q: np.ndarray, s: np.ndarray, cost: np.ndarray, knob: Knob, choice: int) -> float:
        """P(the choice really is the best by the knob's utility), normal approximation over predictions."""
        if len(q) == 1:
            return 1.0
        from math import erf, sqrt

        utility = q - (0.0 if knob.floor is not None else knob.lambda_) * cost
        others = np.delete(np.arange(len(q)), choice)
        runner = others[np.argmax(utility[others])]
        margin = abs(utility[choice] - utility[runner]) if knob.floor is None else abs(q[choice] - knob.floor)
        spread = sqrt(float(s[choice]) ** 2 + float(s[runner]) ** 2) + 1e-9
        return 0.5 * (1 + erf(margin / spread / sqrt(2)))

