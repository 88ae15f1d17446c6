"""Policies: what `model="auto"` or `model="router/<name>"` means, and the plan it yields.

A policy runs its tiers in order: rules (tier 1), then session stickiness, then the semantic tier
(tier 2) and, for the prompts tier 2 is unsure of, the LLM judge (tier 3); else its default. The
capability and context-window filter runs first, so no tier can pick a model unable to answer. A
concrete pool model asked for by name is passed through untouched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pointsman.cascade.runner import Cascade, needs_embedder
from pointsman.config.schema import Config, Policy
from pointsman.embed.base import Embedder
from pointsman.embed.registry import Embedders
from pointsman.errors import GatewayError
from pointsman.gateway.dispatch import Dispatcher
from pointsman.gateway.pool import Pool
from pointsman.routing.base import RouteContext, RouteDecision, Tier
from pointsman.routing.rules import RuleTier
from pointsman.routing.semantic import SemanticTier
from pointsman.routing.sticky import SessionMemory, session_ttl
from pointsman.routing.tiers import TierBuild, build_tiers

POLICY_PREFIX = "router/"
MAX_POLICY_DEPTH = 4
log = logging.getLogger("pointsman.routing")


@dataclass(slots=True)
class CompiledPolicy:
    name: str
    tiers: list[Tier]  # in order (routing/tiers.py)
    sessions: SessionMemory | None
    default: str | None
    fallbacks: list[str] | None
    cascade: Cascade | None = None
    sticky_s: float = 0.0  # how long a session keeps its model; a tool-using one agent_sticky_s (routing/sticky.py)
    agent_sticky_s: float = 0.0

    @property
    def rules(self) -> RuleTier | None:
        return next((t for t in self.tiers if isinstance(t, RuleTier)), None)

    @property
    def semantic(self) -> SemanticTier | None:
        return next((t for t in self.tiers if isinstance(t, SemanticTier)), None)


def needs_embeddings(config: Config) -> bool:
    return any(policy.semantic is not None or "semantic" in (policy.tiers or ())
               or (policy.cascade is not None and needs_embedder(policy.cascade)) for policy in config.policies.values())


class PolicyRouter:
    def __init__(self, config: Config, pool: Pool, embedders: Embedders | None = None) -> None:
        self.pool = pool
        self.embedders = embedders  # None when no stage embeds
        self.routers_dir = config.learning.routers_dir
        self.dispatcher = Dispatcher(pool, config.server)  # the judge's calls: retries, breaker, attempts, cost
        self.default_policy = config.server.default_policy
        policies = dict(config.policies)
        policies.setdefault(self.default_policy, Policy())
        self.policies = {name: self._compile(name, policy) for name, policy in policies.items()}
        self._validate_delegations()

    def _compile(self, name: str, policy: Policy) -> CompiledPolicy:
        targets = [r.route for r in policy.rules] + [policy.default] + (policy.fallbacks or [])
        for target in targets:
            if target is not None and not target.startswith(POLICY_PREFIX) and target not in self.pool:
                raise ValueError(f"policy {name!r} names {target!r}, which is not a pool model")
        longest = max(policy.sticky_s, policy.agent_sticky_s)
        sessions = SessionMemory(longest) if longest > 0 else None
        return CompiledPolicy(
            name=name,
            tiers=build_tiers(TierBuild(name, policy, self.pool, self.dispatcher, self.embedders, sessions,
                                        self.routers_dir)),
            sessions=sessions,
            default=policy.default,
            fallbacks=policy.fallbacks,
            cascade=Cascade(policy.cascade, self.pool, self.embedders,
                            policy.semantic.lambda_ if policy.semantic else None,
                            agreement_embedder=self._agreement_embedder(policy)) if policy.cascade else None,
            sticky_s=policy.sticky_s,
            agent_sticky_s=policy.agent_sticky_s,
        )

    def _agreement_embedder(self, policy: Policy) -> Embedder | None:
        """The agreement check compares two free-text samples by MiniLM cosine (its threshold is MiniLM's)
        when the policy embeds anyway (a semantic tier or the learned verifier); else by final answers only."""
        cascade = policy.cascade
        if self.embedders is None or cascade is None or "agreement" not in cascade.verifiers:
            return None
        if needs_embedder(cascade) or policy.semantic is not None:
            return self.embedders.get("minilm")
        return None

    def _validate_delegations(self) -> None:
        for policy in self.policies.values():
            for rule in policy.rules.rules if policy.rules else []:
                if rule.route.startswith(POLICY_PREFIX) and rule.route[len(POLICY_PREFIX):] not in self.policies:
                    raise ValueError(f"policy {policy.name!r}: rule {rule.name} routes to unknown policy {rule.route!r}")

    def reload(self) -> list[str]:
        """Re-read every trained router artefact from disk (after `pointsman train` replaced one)."""
        reloaded = []
        for policy in self.policies.values():
            if policy.semantic is not None:
                policy.semantic.reload()
                reloaded.append(policy.name)
        return reloaded

    def _semantic_tiers(self) -> list[SemanticTier]:
        return [p.semantic for p in self.policies.values() if p.semantic is not None]

    def routes_deployed(self) -> bool:
        """Whether any policy routes with `router: deployed` (the router `pointsman promote` deploys)."""
        return any(str(t.config.router) == "deployed" for t in self._semantic_tiers())

    def deployed_stamp(self) -> tuple[int, int] | None:
        """The deployed router file's (mtime, size), None while there is none: a change means a promotion."""
        from pointsman.routing.semantic import DEPLOYED

        try:
            stat = (Path(self.routers_dir) / DEPLOYED).stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def default_predictor(self) -> Any:
        """The trained router of the default policy (else of the first policy that has one), or None."""
        first = self.policies.get(self.default_policy)
        tiers = ([first.semantic] if first is not None and first.semantic is not None else []) + self._semantic_tiers()
        return tiers[0].predictor if tiers else None

    def static_window(self) -> int | None:
        """The window the default policy's semantic tier reads the routing text with: the injection guard asks for
        the same, so that the request's static embedding is computed once (None: no semantic tier)."""
        policy = self.policies.get(self.default_policy)
        tier = policy.semantic if policy is not None else None
        return getattr(tier, "window", None) if tier is not None else None

    def model_ids(self) -> list[str]:
        """What /v1/models lists: the pool's models, then "auto" and every policy."""
        return [*self.pool.by_price, "auto", *(POLICY_PREFIX + name for name in self.policies)]

    def resolve(self, requested: str) -> str | None:
        """The policy a requested model names, None for a pool model; 404 for anything else."""
        if requested in self.pool:
            return None
        if requested == "auto":
            return self.default_policy
        if requested.startswith(POLICY_PREFIX) and requested[len(POLICY_PREFIX):] in self.policies:
            return requested[len(POLICY_PREFIX):]
        raise GatewayError(404, f"The model `{requested}` does not exist in this gateway's pool; "
                           f"GET /v1/models lists the models and routing policies.", code="model_not_found", param="model")

    async def route(self, requested: str, ctx: RouteContext) -> RouteDecision:
        policy_name = self.resolve(requested)
        if policy_name is None:
            decision = RouteDecision(model=requested, tier="direct", reason="model named by the client")
            named = self.pool[requested].config.fallbacks
            if named:
                allowed = set(self.pool.eligible(ctx))
                decision.fallbacks = [m for m in named if m in allowed]
            return decision
        eligible = self.pool.eligible(ctx)
        if not eligible:
            raise GatewayError(400, self.pool.why_none_eligible(ctx), code="no_eligible_model")
        decision = await self._run_policy(self.policies[policy_name], ctx, eligible, depth=0)
        decision.calls = ctx.calls
        return decision

    async def _run_policy(self, policy: CompiledPolicy, ctx: RouteContext, eligible: list[str], depth: int) -> RouteDecision:
        decision: RouteDecision | None = None
        for tier in policy.tiers:
            if decision is not None and not tier.revises:
                continue  # decided: only a tier that revises (the judge) still runs
            try:
                decision = await tier.decide(ctx, eligible, decision) or decision
            except GatewayError:
                raise
            except Exception:  # the request can still be served: fail open to the next tier, say so in the log
                log.exception("policy %s: the %s tier failed; the request goes on to the next tier", policy.name, tier.name)
            if decision is not None and decision.model.startswith(POLICY_PREFIX):  # a rule hands over to a policy
                if depth >= MAX_POLICY_DEPTH:
                    raise GatewayError(500, f"policy {policy.name!r}: routing loops through more than {MAX_POLICY_DEPTH} "
                                       "policies", code="policy_loop")
                inner = self.policies[decision.model[len(POLICY_PREFIX):]]
                nested = await self._run_policy(inner, ctx, eligible, depth + 1)
                nested.reason = f"{decision.reason} -> {POLICY_PREFIX}{inner.name}: {nested.reason}"
                return nested
        if decision is None:
            if policy.default in eligible:
                decision = RouteDecision(model=policy.default, tier="default", reason=f"policy {policy.name} default")
            else:
                decision = RouteDecision(model=eligible[0], tier="default", reason="cheapest eligible model")
        if policy.sessions is not None and ctx.session:
            ttl = session_ttl(ctx.has_tools, policy.sticky_s, policy.agent_sticky_s)
            if ttl > 0:
                policy.sessions.remember(ctx.session, decision.model, ctx.tenant, ttl)
        candidates = policy.fallbacks if policy.fallbacks is not None else eligible
        decision.fallbacks = [m for m in candidates if m != decision.model and m in eligible]
        if policy.cascade is not None:
            decision.cascade = policy.cascade.plan(ctx, decision, eligible)
        return decision
