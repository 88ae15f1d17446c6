"""The request path as a list of stages: what a chat request goes through, in order.

Each stage is ``async stage(exchange) -> bool``: it reads and fills the :class:`Exchange` (the request, its
route context, the decision, the ledger row) and returns True once the request has been answered, after which
no later stage runs. The gateway's stages are authenticate -> read -> cache -> route -> answer
(`Gateway.stages`); a new concern (a guard, a budget check, a metric) is one more stage in that list, and
the one failure policy (errors as OpenAI-shaped answers, every request in the ledger) wraps them all. A stage
that holds something until the request ends (a budget reservation) adds its release to ``Exchange.after``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pointsman.ledger import LedgerRecord
from pointsman.core import RouteContext, RouteDecision
from pointsman.guards.base import GuardState

__all__ = ["Exchange", "Stage"]


@dataclass(slots=True)
class Exchange:
    """One chat request on its way through the stages."""

    scope: dict[str, Any]
    receive: Any
    send: Any
    started: float  # perf_counter() when it arrived
    record: LedgerRecord  # the ledger row, filled as the request goes
    headers: dict[bytes, bytes] = field(default_factory=dict)
    raw: dict[str, Any] | None = None  # the parsed body
    request: Any = None  # the validated request (app/schema.py)
    ctx: RouteContext | None = None
    include_usage: bool = False
    ticket: Any = None  # where the cache stores the answer (app/caching.py: CacheTicket), if anywhere
    decision: RouteDecision | None = None
    answer_parts: list[str] | None = None  # the answer's text, kept when a stage after the answer needs it (shadow)
    # run once the request is recorded, answered or not (limits: settle the reservation to the ledger row's cost)
    after: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # another API's request (app/messages.py, app/responses.py): translated into a chat body by the read stage
    adapter: Any = None
    # what the guards found and what they ask of the later stages (guards/base.py)
    guard: GuardState = field(default_factory=GuardState)


Stage = Callable[[Exchange], Awaitable[bool]]
