"""Policies: what `model="auto"` or `model="router/<name>"` means, and the plan it yields.

A policy runs its tiers (today: rules; the learned tiers plug in here), falls back to its default,
and orders the fallbacks. A concrete pool model asked for by name is passed through untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

from pointsman.config.schema import Config, Policy
from pointsman.errors import GatewayError
from pointsman.gateway.pool import Pool
from pointsman.routing.base import RouteContext, RouteDecision, Tier
from pointsman.routing.rules import RuleTier

POLICY_PREFIX = "router/"
MAX_POLICY_DEPTH = 4


@dataclass(slots=True)
class CompiledPolicy:
    name: str
    tiers: list[Tier]
    default: str | None
    fallbacks: list[str] | None


class PolicyRouter:
    def __init__(self, config: Config, pool: Pool) -> None:
        self.pool = pool
        self.default_policy = config.server.default_policy
        policies = dict(config.policies)
        policies.setdefault(self.default_policy, Policy())
        self.policies = {name: self._compile(name, policy) for name, policy in policies.items()}
        if self.default_policy not in self.policies:
            raise ValueError(f"server.default_policy {self.default_policy!r} is not a policy")

    def _compile(self, name: str, policy: Policy) -> CompiledPolicy:
        for target in [r.route for r in policy.rules] + [policy.default] + (policy.fallbacks or []):
            if target is None:
                continue
            if target.startswith(POLICY_PREFIX):
                continue  # checked once all policies exist, in `validate`
            if target not in self.pool:
                raise ValueError(f"policy {name!r} names {target!r}, which is not a pool model")
        tiers: list[Tier] = [RuleTier(policy.rules)] if policy.rules else []
        return CompiledPolicy(name, tiers, policy.default, policy.fallbacks)

    def validate(self) -> None:
        for policy in self.policies.values():
            for tier in policy.tiers:
                for rule in getattr(tier, "rules", []):
                    if rule.route.startswith(POLICY_PREFIX) and rule.route[len(POLICY_PREFIX):] not in self.policies:
                        raise ValueError(f"policy {policy.name!r}: rule {rule.name} routes to unknown policy {rule.route!r}")

    def model_ids(self) -> list[str]:
        """What /v1/models lists: the pool's models, then "auto" and every policy."""
        return [*self.pool.by_price, "auto", *(POLICY_PREFIX + name for name in self.policies)]

    def route(self, requested: str, ctx: RouteContext) -> RouteDecision:
        if requested in self.pool:
            return RouteDecision(model=requested, tier="direct", reason="model named by the client")
        if requested == "auto":
            policy_name = self.default_policy
        elif requested.startswith(POLICY_PREFIX) and requested[len(POLICY_PREFIX):] in self.policies:
            policy_name = requested[len(POLICY_PREFIX):]
        else:
            raise GatewayError(404, f"The model `{requested}` does not exist in this gateway's pool; "
                               f"GET /v1/models lists the models and routing policies.", code="model_not_found",
                               param="model")
        eligible = self.pool.eligible(ctx)
        if not eligible:
            raise GatewayError(400, self.pool.why_none_eligible(ctx), code="no_eligible_model")
        return self._run_policy(self.policies[policy_name], ctx, eligible, depth=0)

    def _run_policy(self, policy: CompiledPolicy, ctx: RouteContext, eligible: list[str], depth: int) -> RouteDecision:
        decision: RouteDecision | None = None
        for tier in policy.tiers:
            decision = tier.decide(ctx, eligible)
            if decision is not None:
                break
        if decision is not None and decision.model.startswith(POLICY_PREFIX):
            if depth >= MAX_POLICY_DEPTH:
                raise GatewayError(500, f"policy {policy.name!r}: routing loops through more than {MAX_POLICY_DEPTH} policies",
                                   code="policy_loop")
            inner = self.policies[decision.model[len(POLICY_PREFIX):]]
            nested = self._run_policy(inner, ctx, eligible, depth + 1)
            nested.reason = f"{decision.reason} -> {POLICY_PREFIX}{inner.name}: {nested.reason}"
            return nested
        if decision is None:
            if policy.default in eligible:
                decision = RouteDecision(model=policy.default, tier="default", reason=f"policy {policy.name} default")
            else:
                decision = RouteDecision(model=eligible[0], tier="default", reason="cheapest eligible model")
        candidates = policy.fallbacks if policy.fallbacks is not None else eligible
        decision.fallbacks = [m for m in candidates if m != decision.model and m in eligible]
        return decision
