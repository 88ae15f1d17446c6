"""The guards of one gateway, built from ``guards:`` in the config, as stages of the request path.

``before_cache`` run after the request is read: compliance (the pool's constraints), injection, PII; each
may refuse. The injection guard's ``route`` action makes the decision before routing (the route stage keeps it).
``after_route`` runs once a model is chosen: the PII guard decides what the upstream may see. The first stage also wraps the response so that
the guards' findings leave as the ``x-pointsman-guards`` header and the answer passes their body filters.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Callable

from pointsman.core import RouteDecision
from pointsman.errors import GatewayError
from pointsman.guards.config import GuardsConfig

if TYPE_CHECKING:
    from pointsman.app.pipeline import Exchange, Stage
    from pointsman.embed.registry import Embedders
    from pointsman.gateway.pool import Pool

__all__ = ["Guards", "GUARDS_HEADER"]

GUARDS_HEADER = b"x-pointsman-guards"


class Guards:
    def __init__(self, config: GuardsConfig, pool: "Pool", policy_of: Callable[[str], str | None],
                 embedders: "Embedders | None", window: int | None = None) -> None:
        self.config = config
        self.pool = pool

        def policy(requested: str) -> str | None:
            try:
                return policy_of(requested)
            except GatewayError:  # an unknown model: routing answers it with its own 404
                return None

        self.compliance = self.injection = self.pii = None
        from pointsman.guards.compliance import ComplianceGuard

        compliance = config.compliance
        if compliance.require or compliance.teams or compliance.keys or compliance.policies or compliance.header:
            self.compliance = ComplianceGuard(compliance, pool, policy)
        if config.injection.action != "off" or any(o.action not in (None, "off") for o in config.injection.overrides):
            from pointsman.guards.injection import InjectionGuard

            if embedders is None:
                raise ValueError("guards.injection needs the gateway's embedders")
            self.injection = InjectionGuard(config.injection, pool, policy, embedders, window)
        if config.pii.action != "off" or any(o.action not in (None, "off") for o in config.pii.overrides):
            from pointsman.guards.pii import PiiGuard

            self.pii = PiiGuard(config.pii, pool, policy)

    @property
    def before_cache(self) -> list["Stage"]:
        if self.compliance is None and self.injection is None and self.pii is None:
            return []  # nothing configured: the request path is as it was
        stages: list[Stage] = [_named(self._wrap, "guards")]
        if self.compliance is not None:
            stages.append(_named(self.compliance.__call__, "compliance"))
        if self.injection is not None:
            stages += [_named(self.injection.__call__, "injection"), _named(self._route, "injection_route")]
        if self.pii is not None:
            stages.append(_named(self.pii.__call__, "pii"))
        return stages

    @property
    def after_route(self) -> list["Stage"]:
        return [_named(self.pii.upstream, "pii_upstream")] if self.pii is not None else []

    async def _route(self, ex: "Exchange") -> bool:
        """The injection guard's route action: the designated model answers, and no tier runs (the route stage
        keeps a decision already made)."""
        target = ex.guard.route_to
        if target is not None:
            ex.decision = RouteDecision(model=target, tier="guard", reason=f"guards.injection: routed to {target}")
        return False

    async def _wrap(self, ex: "Exchange") -> bool:
        """The response carries the guards' header, and its body goes through their filters (a body of known
        length waits for its start line, whose content-length the filters may change)."""
        send, state = ex.send, ex.guard
        held: list[dict[str, Any]] = []

        async def guarded_send(message: dict[str, Any]) -> None:
            kind = message.get("type")
            if kind == "http.response.start":
                headers = list(message.get("headers", ()))
                if state.notes:
                    headers.append((GUARDS_HEADER, state.header().encode("latin-1", "replace")))
                message = {**message, "headers": headers}
                if state.body_filters and any(k.lower() == b"content-length" for k, _ in headers):
                    held.append(message)
                    return
            elif kind == "http.response.body" and state.body_filters:
                body, more = message.get("body", b""), bool(message.get("more_body", False))
                for apply in state.body_filters:
                    body = apply(body, more)
                message = {**message, "body": body}
                if held:
                    start = held.pop()
                    await send({**start, "headers": [(k, str(len(body)).encode()) if k.lower() == b"content-length"
                                                     else (k, v) for k, v in start["headers"]]})
            await send(message)

        ex.send = guarded_send
        return False


def _named(stage: Callable[["Exchange"], Awaitable[bool]], name: str) -> "Stage":
    """The stage under the name the gateway's own stages have (``_<name>_stage``: traces and logs name it)."""
    async def run(ex: "Exchange") -> bool:
        return await stage(ex)

    run.__name__ = run.__qualname__ = f"_{name}_stage"
    return run
