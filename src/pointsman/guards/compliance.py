"""Compliance constraints: required model tags as hard limits on the pool, set before any tier decides.

Models carry tags (``tags: {region: eu, dpa: "yes", zero_retention: "yes", hipaa: "yes"}``); the config requires
tags for every request, per team, per key and per routing policy, and a client may narrow further with
``x-pointsman-require: region=eu|ch, dpa=yes``. Each source that applies is a constraint; a model qualifies when
it meets all of them. The qualifying set goes on the route context (``RouteContext.restrict``), which
``Pool.eligible`` reads: every tier, fallback and cascade rung, the shadow answers, the judges and the cache's
verification calls choose only among qualifying models. No qualifying model: a 400 naming the constraint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from pointsman.errors import GatewayError
from pointsman.guards.base import check_allowed
from pointsman.guards.config import ComplianceConfig

if TYPE_CHECKING:
    from pointsman.app.pipeline import Exchange
    from pointsman.gateway.pool import Pool

__all__ = ["ComplianceGuard", "parse_requirement", "describe"]

HEADER = b"x-pointsman-require"


def parse_requirement(raw: str) -> dict[str, list[str]]:
    """``region=eu|ch, dpa=yes`` -> {"region": ["eu", "ch"], "dpa": ["yes"]}; 400 when malformed."""
    out: dict[str, list[str]] = {}
    for part in raw.split(","):
        if not part.strip():
            continue
        tag, sep, values = part.partition("=")
        allowed = [v.strip() for v in values.split("|") if v.strip()]
        if not sep or not tag.strip() or not allowed:
            raise GatewayError(400, "x-pointsman-require must read like `region=eu|ch, dpa=yes` (tag=value, "
                                    "alternatives separated by |)", code="invalid_header")
        out.setdefault(tag.strip(), []).extend(allowed)
    return out


def describe(source: str, required: dict[str, list[str]]) -> str:
    return f"{source}: " + ", ".join(f"{tag} in {{{', '.join(values)}}}" for tag, values in required.items())


class ComplianceGuard:
    name = "compliance"

    def __init__(self, config: ComplianceConfig, pool: "Pool", policy_of: Callable[[str], str | None]) -> None:
        self.config = config
        self.pool = pool
        self.policy_of = policy_of

    def qualifying(self, required: dict[str, list[str]]) -> set[str]:
        return {name for name, entry in self.pool.entries.items()
                if all(entry.config.tags.get(tag) in values for tag, values in required.items())}

    def constraints(self, ex: "Exchange") -> list[tuple[str, dict[str, list[str]]]]:
        found = []
        config, record = self.config, ex.record
        if config.require:
            found.append(("gateway", config.require))
        policy = self.policy_of(ex.request.model)
        if policy is not None and policy in config.policies:
            found.append((f"policy {policy}", config.policies[policy]))
        if record.team is not None and record.team in config.teams:
            found.append((f"team {record.team}", config.teams[record.team]))
        if record.key_id is not None and record.key_id in config.keys:
            found.append((f"key {record.key_id}", config.keys[record.key_id]))
        raw = ex.headers.get(HEADER)
        if raw is not None:
            if not config.header:
                raise GatewayError(400, "x-pointsman-require is not accepted by this gateway (guards.compliance.header)",
                                   code="invalid_header")
            found.append(("request", parse_requirement(raw.decode("latin-1"))))
        return found

    async def __call__(self, ex: "Exchange") -> bool:
        assert ex.ctx is not None
        for source, required in self.constraints(ex):
            why = describe(source, required)
            ex.ctx.restrict(self.qualifying(required), why)
            ex.guard.notes.append(f"constraint {why}")
        check_allowed(ex.ctx, ex.request.model, self.pool)
        return False
