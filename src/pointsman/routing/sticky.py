"""Session stickiness: a conversation keeps the model it started with, for a while.

Switching models mid-conversation changes the voice and loses provider-side prompt caches; a policy
with `sticky_s` > 0 remembers each session's model (the `x-pointsman-session` header) that long.

Agents are the case that matters most: a tool-using conversation resends its whole history every turn, and the
provider's prompt cache (read at a tenth to a half of the input price) is most of what it costs. A policy keeps a
tool-using session on its model for `agent_sticky_s` (default an hour; 0 lets it switch). A session is the
`x-pointsman-session` header, or, without one, recognised from the conversation itself: a hash of its opening
(the system prompt and first user message), which every later turn of the same conversation repeats.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Any

import orjson

CONVERSATION_PREFIX = "conv-"  # a session recognised from the conversation, not named by the client


def conversation_session(body: dict[str, Any]) -> str | None:
    """A session id for a tool-using conversation: its opening messages (up to the first user message) hashed.
    None for a request without tools (a one-off prompt repeated is not a conversation)."""
    messages = body.get("messages")
    if not body.get("tools") or not isinstance(messages, list):
        return None
    opening: list[Any] = []
    for message in messages:
        if not isinstance(message, dict):
            return None
        opening.append((message.get("role"), message.get("content")))
        if message.get("role") == "user":
            break
    try:
        digest = hashlib.sha256(orjson.dumps(opening)).hexdigest()
    except TypeError:  # a content orjson cannot write (validation refuses it later)
        return None
    return CONVERSATION_PREFIX + digest[:24]


def is_continuation(messages: list[dict[str, Any]]) -> bool:
    """Whether a conversation has had a model's turn already (an assistant message or a tool result)."""
    return any(m.get("role") in ("assistant", "tool") for m in messages if isinstance(m, dict))


def session_ttl(has_tools: bool, sticky_s: float, agent_sticky_s: float) -> float:
    """How long a session keeps its model under a policy: `sticky_s`, or `agent_sticky_s` for a tool-using one."""
    return max(sticky_s, agent_sticky_s) if has_tools else sticky_s


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

    def remember(self, session: str, model: str, tenant: str = "", ttl_s: float | None = None) -> None:
        key = (tenant, session)
        self._models[key] = (model, time.monotonic() + (self.ttl_s if ttl_s is None else ttl_s))
        self._models.move_to_end(key)
        while len(self._models) > self.max_sessions:
            self._models.popitem(last=False)
