"""The guards' one contract, and what they leave on a request.

A guard is a stage (app/pipeline.py): ``async guard(exchange) -> bool``; it raises a ``GatewayError`` to refuse
(a 400 with a reason code) and otherwise notes what it found on ``exchange.guard`` (a :class:`GuardState`):

* ``notes``: one short line per finding ("injection 0.97 flag", "pii EMAIL_ADDRESS:2 redact", "constraints
  region in {eu}"), which become the ``x-pointsman-guards`` header and part of the ledger row's reason;
* ``scrubbers``: functions that take a request's personal data out of a text, applied to everything the gateway
  writes (error messages, the ledger row and the stored prompt, log lines);
* ``route_to``: a model the request must go to (the injection guard's ``route`` action);
* ``body_filters``: what the answer's bytes go through on the way to the client (PII placeholders mapped back).

Guards change nothing else, and no guard knows of another.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pointsman.app.pipeline import Exchange

__all__ = ["Guard", "GuardState", "BodyFilter", "select"]


class BodyFilter(Protocol):
    def __call__(self, body: bytes, more: bool) -> bytes: ...


@dataclass(slots=True)
class GuardState:
    notes: list[str] = field(default_factory=list)
    scrubbers: list[Callable[[str], str]] = field(default_factory=list)
    route_to: str | None = None
    body_filters: list[BodyFilter] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # what a guard keeps for its own later step

    def scrub(self, text: str | None) -> str | None:
        if text:
            for scrubber in self.scrubbers:
                text = scrubber(text)
        return text

    def header(self) -> str:
        return "; ".join(self.notes)


class Guard(Protocol):
    name: str

    def __call__(self, ex: "Exchange") -> Awaitable[bool]: ...


def select(overrides: list[Any], policy: str | None, team: str | None, key: str | None) -> Any | None:
    """The first override whose selector (policy, team, key; those given) matches the request, or None."""
    for item in overrides:
        if ((item.policy is None or item.policy == policy) and (item.team is None or item.team == team)
                and (item.key is None or item.key == key)):
            return item
    return None


def check_allowed(ctx: Any, requested: str, pool: Any) -> None:
    """After a guard narrowed the pool: a 400 naming the constraints when no model is left, or when the client
    named a model they rule out."""
    from pointsman.errors import GatewayError

    if ctx.allowed is not None and not ctx.allowed:
        raise GatewayError(400, f"no model in the pool meets the constraints of this request: {'; '.join(ctx.constraints)}",
                           code="no_compliant_model")
    if requested in pool and not ctx.permits(requested):
        raise GatewayError(400, f"model {requested} does not meet the constraints of this request: "
                                f"{'; '.join(ctx.constraints)} (qualifying: {', '.join(sorted(ctx.allowed or ()))})",
                           code="no_compliant_model", param="model")
