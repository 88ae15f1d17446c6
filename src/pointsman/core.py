"""The request as every stage sees it (RouteContext) and what routing decided (RouteDecision).

Cache, routing, cascades, dispatch and the app all import these from here, below all of them, so that no
package needs another's to know what a request is (routing -> cascade -> gateway no longer comes back up).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pointsman.text import text_of

if TYPE_CHECKING:  # numpy is not needed to hold a request
    import numpy as np

    from pointsman.embed.base import Embedder

__all__ = ["RouteContext", "RouteDecision", "lazy"]


class lazy:  # noqa: N801 - reads like functools.cached_property, which takes a lock on 3.11
    """Compute an attribute on first access and store it on the instance: later reads are plain."""

    def __init__(self, compute: Any) -> None:
        self.compute = compute
        self.name = compute.__name__

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.compute(instance)
        return value


class RouteContext:
    """The request as routing sees it; each feature is computed at most once, and only if asked for."""

    __slots__ = ("body", "overrides", "session", "cascade_mode", "tenant", "calls", "_embeddings", "allowed", "constraints",
                 "sensitive", "__dict__")

    def __init__(self, body: dict[str, Any], overrides: dict[str, float] | None = None, session: str | None = None,
                 cascade_mode: str | None = None, tenant: str = "") -> None:
        self.body = body
        self.overrides = overrides or {}  # per-request knob settings ("lambda", "floor", "cascade_threshold")
        self.session = session
        self.tenant = tenant  # whose request (key id and team): sessions of two tenants never meet
        self.calls: list[Any] = []  # upstream calls made to decide (the judge's), as ledger Attempts with their cost
        self.cascade_mode = cascade_mode  # x-pointsman-cascade: "off" | "always" | "route", None = the policy's
        self._embeddings: dict[tuple[Any, str, int | None], tuple[np.ndarray, np.ndarray]] = {}
        # compliance (guards/): the models this request's constraints permit (None: all), and those constraints
        # as said in errors and the ledger; Pool.eligible reads them, so every tier, fallback and own call obeys
        self.allowed: frozenset[str] | None = None
        self.constraints: list[str] = []
        self.sensitive = False  # carries personal data or was flagged as an injection: no cache, no shadow answer

    def restrict(self, models: set[str] | frozenset[str], why: str) -> None:
        """Narrow the models this request may reach to ``models`` (constraints only ever narrow)."""
        self.allowed = frozenset(models) if self.allowed is None else self.allowed & frozenset(models)
        self.constraints.append(why)

    def permits(self, model: str) -> bool:
        return self.allowed is None or model in self.allowed

    async def embedding(self, embedder: Embedder, text: str | None = None, max_tokens: int | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
        """(embedding, prompt features) of `text` (default: the routing text) read up to `max_tokens`
        tokens (default: the encoder's full window) by `embedder`'s encoder, computed once per request
        and shared by every stage that needs it. The router reads a prefix (its artefact's window), the semantic cache the
        full window; for a text no longer than the prefix the encoder's LRU makes both one run."""
        text = self.routing_text if text is None else text
        key = (getattr(embedder, "model_id", id(embedder)), text, max_tokens)
        found = self._embeddings.get(key)
        if found is None:
            found = self._embeddings[key] = await (embedder.embed_with_features(text) if max_tokens is None
                                                   else embedder.embed_with_features(text, max_tokens=max_tokens))
        return found

    @lazy
    def messages(self) -> list[dict[str, Any]]:
        return self.body["messages"]

    @lazy
    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return text_of(message.get("content"), " ")
        return ""

    @lazy
    def routing_text(self) -> str:
        """The conversation as routing reads it: the last user message first (the encoder truncates
        the end), then the earlier user turns, newest first."""
        turns = [text_of(m.get("content"), " ") for m in reversed(self.messages) if m.get("role") == "user"]
        return "\n\n".join(t for t in turns if t)[:8000]

    @lazy
    def total_chars(self) -> int:
        return sum(len(text_of(m.get("content"), " ")) for m in self.messages)

    @lazy
    def user_turns(self) -> int:
        return sum(1 for m in self.messages if m.get("role") == "user")

    @lazy
    def has_tools(self) -> bool:
        """Tools the model may call: with tool_choice "none" it may not, so any model can answer."""
        return bool(self.body.get("tools")) and self.body.get("tool_choice") != "none"

    @lazy
    def json_mode(self) -> bool:
        fmt = self.body.get("response_format")
        return isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")

    @lazy
    def has_images(self) -> bool:
        return any(isinstance(m.get("content"), list) and any(
            isinstance(p, dict) and p.get("type") in ("image_url", "input_image") for p in m["content"])
            for m in self.messages)

    @lazy
    def required_capabilities(self) -> frozenset[str]:
        needed = set()
        if self.has_tools:
            needed.add("tools")
        if self.has_images:
            needed.add("vision")
        if self.json_mode:
            needed.add("json")
        return frozenset(needed)

    @lazy
    def estimated_tokens(self) -> int:
        """Prompt plus requested output, at ~4 characters a token: enough to rule out small windows."""
        out = self.body.get("max_completion_tokens") or self.body.get("max_tokens") or 0
        return self.total_chars // 4 + len(self.messages) * 4 + int(out)


@dataclass(slots=True)
class RouteDecision:
    model: str  # the pool model to try first
    tier: str  # which tier decided: "direct", "rules", "default", later "semantic", "llm"
    reason: str
    fallbacks: list[str] = field(default_factory=list)
    scores: dict[str, float] | None = None  # per-model predicted quality, when a tier has them
    confidence: float | None = None  # how sure the deciding tier is (tier 2 defers to tier 3 below a bar)
    cascade: Any = None  # a cascade.runner.CascadePlan when the policy starts a cascade instead
    calls: list[Any] = field(default_factory=list)  # upstream calls made to decide (RouteContext.calls)
