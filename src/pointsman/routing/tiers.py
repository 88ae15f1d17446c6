"""Routing tiers as an extension point: a registry of tier kinds, and a policy's ordered list of them.

A tier follows :class:`pointsman.routing.base.Tier`: ``decide(ctx, eligible, tentative)`` returns a decision
or None (defer to the next tier). Tiers run in the policy's order; once one has decided, later tiers are
skipped unless they revise (``revises = True``: the judge, which may overrule an unsure tier 2). A policy
lists its tiers in config::

    policies:
      auto:
        tiers: [rules, {kind: my_tier, model: big}, sticky, semantic, judge]   # default: the four built-ins

A built-in kind is written by name and takes its settings from the policy's own fields (``rules``,
``sticky_s``, ``semantic``, ``judge``); any other kind is a mapping whose ``kind`` is a registered name
(:func:`register_tier`) or an import path ``package.module:Class``, and whose other keys are the tier's
settings. Adding a tier is one file: a class with ``name``, ``revises``, ``decide`` and a
``from_spec(spec, build)`` constructor, registered under its kind.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pointsman.config.schema import JudgeTierConfig, Policy, SemanticTierConfig
from pointsman.embed.registry import Embedders
from pointsman.routing.base import RouteContext, RouteDecision
from pointsman.routing.sticky import CONVERSATION_PREFIX, SessionMemory, is_continuation, session_ttl

__all__ = ["TierBuild", "register_tier", "build_tiers", "BUILT_IN_ORDER", "StickyTier"]

BUILT_IN_ORDER = ("rules", "sticky", "semantic", "judge")
_KINDS: dict[str, Any] = {}


def register_tier(kind: str) -> Callable[[type], type]:
    """Class decorator: make a tier class available to policies as ``kind``."""
    def add(cls: type) -> type:
        _KINDS[kind] = cls
        return cls
    return add


@dataclass
class TierBuild:
    """What a tier may need when it is built: the policy's name and config, the pool, the dispatcher for
    upstream calls (costed, in the ledger), the embedders."""

    policy_name: str
    policy: Policy
    pool: Any
    dispatcher: Any
    embedders: Embedders | None
    sessions: SessionMemory | None = None
    routers_dir: str = "pointsman-routers"  # learning.routers_dir: where a promoted router is deployed


class StickyTier:
    """A session keeps the model it was given (per tenant): one that sends ``x-pointsman-session`` for the policy's
    ``sticky_s``, a tool-using one (an agent; its session named or recognised from its opening) for
    ``agent_sticky_s`` (routing/sticky.py)."""

    name = "sticky"
    revises = False

    def __init__(self, sessions: SessionMemory, sticky_s: float = 0.0, agent_sticky_s: float = 0.0) -> None:
        self.sessions = sessions
        self.sticky_s = sticky_s
        self.agent_sticky_s = agent_sticky_s

    async def decide(self, ctx: RouteContext, eligible: list[str], tentative: RouteDecision | None = None
                     ) -> RouteDecision | None:
        if not ctx.session or session_ttl(ctx.has_tools, self.sticky_s, self.agent_sticky_s) <= 0:
            return None
        if ctx.session.startswith(CONVERSATION_PREFIX) and not is_continuation(ctx.messages):
            return None  # the same opening again is a new conversation, routed afresh
        model = self.sessions.get(ctx.session, ctx.tenant)
        if model in eligible:
            what = "agent session" if ctx.has_tools else "session"
            return RouteDecision(model=model, tier=self.name, reason=f"{what} {ctx.session[:32]} keeps its model")
        return None


def _built_in(kind: str, build: TierBuild) -> Any:
    from pointsman.routing.judge import JudgeTier
    from pointsman.routing.rules import RuleTier
    from pointsman.routing.semantic import SemanticTier

    policy = build.policy
    if kind == "rules":
        return RuleTier(policy.rules) if policy.rules else None
    if kind == "sticky":
        return (StickyTier(build.sessions, policy.sticky_s, policy.agent_sticky_s) if build.sessions is not None
                else None)
    if kind == "semantic":
        if build.embedders is None:
            raise ValueError(f"policy {build.policy_name!r}: the semantic tier needs the embedding model")
        return SemanticTier(policy.semantic or SemanticTierConfig(), [e.config for e in build.pool.entries.values()],
                            build.embedders, build.routers_dir,
                            cached_rates={e.name: e.price.rates.cache_read for e in build.pool.entries.values()})
    judge: JudgeTierConfig | None = policy.judge
    if judge is None:
        raise ValueError(f"policy {build.policy_name!r}: the judge tier needs `judge: {{model: ...}}`")
    min_confidence = policy.semantic.min_confidence if policy.semantic is not None else 0.0
    return JudgeTier(judge, build.pool, build.dispatcher, min_confidence=min_confidence)


def _custom(spec: dict[str, Any], build: TierBuild) -> Any:
    kind = spec.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"policy {build.policy_name!r}: a tier needs a `kind` (one of {', '.join(known_kinds())}, "
                         "or package.module:Class)")
    cls = _KINDS.get(kind)
    if cls is None and ":" in kind:
        module, _, attr = kind.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"policy {build.policy_name!r}: tier {kind!r} cannot be imported: {exc}") from None
    if cls is None:
        raise ValueError(f"policy {build.policy_name!r}: unknown tier kind {kind!r}; known: {', '.join(known_kinds())}")
    return cls.from_spec({k: v for k, v in spec.items() if k != "kind"}, build)


def known_kinds() -> list[str]:
    return [*BUILT_IN_ORDER, *sorted(_KINDS)]


def build_tiers(build: TierBuild) -> list[Any]:
    """The policy's tiers in order: its `tiers` list, or the built-ins it configures (rules, sticky, semantic,
    judge)."""
    policy = build.policy
    if policy.tiers is None:
        specs: list[Any] = [kind for kind, on in zip(BUILT_IN_ORDER, (bool(policy.rules), policy.sticky_s > 0 or policy.agent_sticky_s > 0,
                                                                      policy.semantic is not None, policy.judge is not None))
                            if on]
    else:
        specs = list(policy.tiers)
    tiers = []
    for spec in specs:
        if isinstance(spec, str) and spec in BUILT_IN_ORDER:
            tier = _built_in(spec, build)
        elif isinstance(spec, dict) and spec.get("kind") in BUILT_IN_ORDER:
            raise ValueError(f"policy {build.policy_name!r}: the built-in tier {spec['kind']!r} takes its settings from the "
                             "policy's own fields; list it by name")
        else:
            tier = _custom(spec if isinstance(spec, dict) else {"kind": spec}, build)
        if tier is not None:
            tiers.append(tier)
    return tiers
