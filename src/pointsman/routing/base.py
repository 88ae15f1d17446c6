"""The routing seam: what a tier sees (RouteContext) and what it says (RouteDecision), both defined in
pointsman.core; the Tier contract itself.

A policy runs its tiers in order; the first tier that decides wins, and the decision becomes the
`x-pointsman-*` headers and the ledger row. A tier that is unsure returns None and the next tier
runs. Later tiers (semantic predictors, an LLM judge) implement the same small `Tier` contract.
"""

from __future__ import annotations

from typing import Protocol

from pointsman.core import RouteContext, RouteDecision, lazy

__all__ = ["RouteContext", "RouteDecision", "Tier", "lazy"]  # the first three live in pointsman.core


class Tier(Protocol):
    """One routing tier (routing/tiers.py registers them). ``revises``: whether it runs after an earlier tier has
    decided (the judge, which may overrule an unsure tier 2); other tiers run only while nothing is decided."""

    name: str
    revises: bool

    async def decide(self, ctx: RouteContext, eligible: list[str], tentative: RouteDecision | None = None
                     ) -> RouteDecision | None:
        """Pick among `eligible` pool models (already filtered for capabilities and context), or None to defer.
        ``tentative``: what earlier tiers decided (None if nothing), for a tier that revises."""
        ...
