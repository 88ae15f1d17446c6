"""How capable each pool model is believed to be (0..1), before any router has seen its answers.

Order of evidence: the model's `quality` in config; else its `tier` tag; else a guess from its price
(across providers, price tracks capability roughly log-linearly). The semantic tier uses these priors to
map a router trained on other models onto any pool; training on your own traffic replaces them.
"""

from __future__ import annotations

import math

from pointsman.config.schema import ModelConfig

TIER_PRIORS = {"local": 0.05, "tiny": 0.2, "small": 0.45, "medium": 0.6, "large": 0.75, "frontier": 0.85}


def blended_price(model: ModelConfig) -> float:
    """USD per million tokens for a typical 3:1 input:output mix (:meth:`Prices.blended`)."""
    return model.prices.blended()


def quality_prior(model: ModelConfig) -> float:
    if model.quality is not None:
        return model.quality
    tier = model.tags.get("tier")
    if tier in TIER_PRIORS:
        return TIER_PRIORS[tier]
    price = blended_price(model)
    if price <= 0:
        return 0.3  # free but unknown: assume a modest self-hosted model
    # $0.1/M -> 0.35, $1/M -> 0.5, $10/M -> 0.65, $30/M -> 0.72
    return min(0.9, max(0.1, 0.5 + 0.15 * math.log10(price)))
