"""Session stickiness: a conversation keeps the model it started with, for a while.

Switching models mid-conversation changes the voice and loses provider-side prompt caches; a policy
with `sticky_s` > 0 remembers each session's model (the `x-pointsman-session` header) that long.
"""

from __future__ import annotations

import time
from collections import OrderedDict


class SessionMemory:
    def __init__(self, ttl_s: float, max_sessions: int = 100_000) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._models: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def get(self, session: str) -> str | None:
        found = self._models.get(session)
        if found is None:
            return None
        model, expires = found
        if expires < time.monotonic():
            del self._models[session]
            return None
        return model

    def remember(self, session: str, model: str) -> None:
        self._models[session] = (model, time.monotonic() + self.ttl_s)
        self._models.move_to_end(session)
        while len(self._models) > self.max_sessions:
            self._models.popitem(last=False)
