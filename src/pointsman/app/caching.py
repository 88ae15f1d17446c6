"""The cache stage of the request path: may this request use the cache, is there a hit, where will its
answer go. The gateway writes the responses; this module decides and talks to `pointsman.cache`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pointsman.cache import CacheControl, CachePolicy, Hit, MemoryStore, SemanticCache
from pointsman.config.schema import CacheConfig
from pointsman.routing.base import RouteContext

log = logging.getLogger("pointsman.cache")


def make_cache(config: CacheConfig) -> SemanticCache:
    if config.store == "memory":
        store: Any = MemoryStore(max_entries=config.max_entries)
    else:
        from pointsman.cache.redis import RedisStore

        store = RedisStore(config.store, config.prefix, max_entries=config.max_entries)
    policy = CachePolicy(allow_sampled=config.allow_sampled, default_temperature=config.default_temperature,
                         tools_side_effect_free=config.tools_side_effect_free, semantic=config.semantic, ttl_s=config.ttl_s)
    return SemanticCache(store, policy, delta=config.delta)


@dataclass(slots=True)
class CacheTicket:
    """A cacheable request on its way upstream: where its answer will be stored."""

    keys: Any
    ttl_s: float | None
    embedding: Any


class CacheStage:
    def __init__(self, config: CacheConfig) -> None:
        self.config = config
        self.cache = make_cache(config)

    def may_cache(self, raw: dict[str, Any]) -> bool:
        """The cheap pre-check: sampled answers (temperature > 0) are neither served nor stored by default,
        so most requests skip key hashing altogether."""
        temperature = raw.get("temperature")
        if temperature is None:
            temperature = self.config.default_temperature
        return self.config.allow_sampled or (isinstance(temperature, int | float) and temperature <= 0)

    async def lookup(self, headers: dict[bytes, bytes], ctx: RouteContext, tenant: str, route: str,
                     embedder: Any) -> Hit | CacheTicket | None:
        """A hit to answer with; else where to store the answer (None: nowhere). The query embedding is
        computed only for a semantic lookup or store, and through `ctx`, so routing can reuse it."""
        control = CacheControl.from_headers(headers)
        keys = self.cache.keys(ctx.body, tenant=tenant, route=route)
        if not keys.cacheable:
            return None
        semantic = keys.namespace is not None and embedder is not None
        embedding = None
        if not control.bypass:
            hit = await self.cache.lookup(keys.exact_key, None, None, keys.query_text)  # exact: no embedding needed
            if hit is None and semantic:
                embedding = (await ctx.embedding(embedder, keys.query_text))[0]
                hit = await self.cache.lookup(keys.exact_key, keys.namespace, embedding, keys.query_text)
            if hit is not None:
                return hit
        if control.no_store:
            return None
        if embedding is None and semantic:
            embedding = (await ctx.embedding(embedder, keys.query_text))[0]
        return CacheTicket(keys, control.ttl_s, embedding)

    async def store(self, ticket: CacheTicket | None, answer: dict[str, Any] | None, model: str,
                    pieces: list[str] | None = None) -> None:
        if ticket is None:
            return
        keys = ticket.keys
        try:
            await self.cache.store(keys.exact_key, keys.namespace, ticket.embedding, keys.query_text, answer,
                                   model=model, pieces=pieces, ttl_s=ticket.ttl_s)
        except Exception:  # noqa: BLE001 - a cache failure must never fail an answered request
            log.exception("storing an answer in the cache failed")
