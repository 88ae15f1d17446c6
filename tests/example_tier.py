"""A routing tier written outside the package, as a user would: one file, registered under its kind."""

from __future__ import annotations

from typing import Any

from pointsman.routing.base import RouteContext, RouteDecision
from pointsman.routing.tiers import TierBuild, register_tier


@register_tier("urgent")
class UrgentTier:
    """Requests whose last message says "urgent" go to a named model."""

    name = "urgent"
    revises = False

    def __init__(self, model: str, word: str = "urgent") -> None:
        self.model, self.word = model, word

    @classmethod
    def from_spec(cls, spec: dict[str, Any], build: TierBuild) -> UrgentTier:
        if spec.get("model") not in build.pool:
            raise ValueError(f"policy {build.policy_name!r}: the urgent tier names {spec.get('model')!r}, not a pool model")
        return cls(spec["model"], spec.get("word", "urgent"))

    async def decide(self, ctx: RouteContext, eligible: list[str], tentative: RouteDecision | None = None
                     ) -> RouteDecision | None:
        if self.model in eligible and self.word in ctx.last_user_text.lower():
            return RouteDecision(model=self.model, tier=self.name, reason=f"the request says {self.word!r}")
        return None
