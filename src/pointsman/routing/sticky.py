"""Session stickiness: a conversation keeps the model it started with, for a while.

Switching models mid-conversation changes the voice and loses provider-side prompt caches; a policy
with `sticky_s` > 0 remembers each session's model (the `x-pointsman-session` header) that long.
"""

from __future__ import annotations

import time
from collections import OrderedDict


class SessionMemory:
    """Each session's model, per tenant: a session id is the client's own name, so another tenant sending the
    same id gets a session of its own (and cannot learn that the first exists)."""

    def __init__(self, ttl_s: float, max_sessions: int = 100_000) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._models: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()

    def get(self, session: str, tenant: str = "") -> str | None:
        key = (tenant, session)
        found = self._models.get(key)
        if found is None:
            return None
        model, expires = found
        if expires < time.monotonic():
            del self._models[key]
            return None
        return model

    def remember(self, session: str, model: str, tenant: str = "") -> None:
        key = (tenant, session)
        self._models[key] = (model, time.monotonic() + self.ttl_s)
        self._models.move_to_end(key)
        while len(self._models) > self.max_sessions:
            self._models.popitem(last=False)
