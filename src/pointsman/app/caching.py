"""The cache stage of the request path: may this request use the cache, is there a hit, where will its
answer go. The gateway writes the responses; this module decides and talks to `pointsman.cache`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pointsman.app.verification import CacheVerifier
from pointsman.cache import CacheControl, CacheKeys, CachePolicy, CacheStore, Hit, MemoryStore, SemanticCache
from pointsman.config.schema import CacheConfig
from pointsman.core import RouteContext
from pointsman.embed.base import Embedder

log = logging.getLogger("pointsman.cache")


def _redis_store(url: str, config: CacheConfig) -> CacheStore:
    from pointsman.cache.redis import RedisStore

    return RedisStore(url, config.prefix, max_entries=config.max_entries, max_bytes=config.max_bytes)


# Shared stores by URL scheme: `server.cache.store: <scheme>://...`. A new store is one file with a CacheStore
# (cache/base.py) and a factory registered here under its scheme.
StoreFactory = Callable[[str, CacheConfig], CacheStore]
STORES: dict[str, StoreFactory] = {"redis": _redis_store, "rediss": _redis_store, "unix": _redis_store}


def register_store(scheme: str) -> Callable[[StoreFactory], StoreFactory]:
    """Decorator: ``factory(url, cache_config) -> CacheStore`` serves `server.cache.store: <scheme>://...`."""
    def add(factory: StoreFactory) -> StoreFactory:
        STORES[scheme] = factory
        return factory
    return add


def make_cache(config: CacheConfig, vector_space: str = "") -> SemanticCache:
    """``vector_space``: the cache encoder's model id (see `SemanticCache`)."""
    if config.store == "memory":
        store: CacheStore = MemoryStore(max_entries=config.max_entries, max_bytes=config.max_bytes)
    else:
        scheme = config.store.split("://", 1)[0]
        if scheme not in STORES:
            raise ValueError(f"cache.store: no store for {scheme}:// (known: memory, {', '.join(f'{s}://' for s in STORES)})")
        store = STORES[scheme](config.store, config)
    policy = CachePolicy(allow_sampled=config.allow_sampled, default_temperature=config.default_temperature,
                         tools_side_effect_free=config.tools_side_effect_free, semantic=config.semantic, ttl_s=config.ttl_s)
    cache = SemanticCache(store, policy, delta=config.delta, vector_space=vector_space, encoder=config.encoder)
    # max_bytes is the whole cache's: the entries get what the side maps cannot take at their caps
    local = store if isinstance(store, MemoryStore) else getattr(store, "mirror", None)
    if isinstance(local, MemoryStore):
        local.max_bytes = max(config.max_bytes // 2, config.max_bytes - cache.side_map_bytes())
    fitted_on = cache.acceptance.calibration.get("encoder")
    if config.semantic and vector_space and fitted_on and fitted_on != vector_space:
        # e.g. POINTSMAN_MINILM_DYNAMIC_INT8=0: the similarities differ a little from those it was calibrated on
        log.warning("the cache's acceptance model was fitted on %s, the cache embeds with %s: its wrong-reuse "
                    "bound is not calibrated for this encoder", fitted_on, vector_space)
    return cache


def tenant_of(key_id: str | None, team: str | None) -> str:
    """Who may share answers: the client key's id (a hash) and, within it, the team (x-pointsman-team)."""
    return f"{key_id or ''}|{team or ''}"


@dataclass(slots=True)
class CacheTicket:
    """A cacheable request on its way upstream: where its answer will be stored."""

    keys: CacheKeys
    ttl_s: float | None
    embedding: np.ndarray | None  # None: not computed (yet); see `later`
    request_id: str | None = None
    later: tuple[RouteContext, Embedder] | None = None  # (ctx, embedder): embed after the answer is sent
    near: tuple[int, float] | None = None  # a sampled miss's nearest candidate (entry id, p): labelled from the answer


class CacheStage:
    def __init__(self, config: CacheConfig, vector_space: str = "") -> None:
        self.config = config
        self.cache = make_cache(config, vector_space)
        self._background = self.cache.background  # stores in flight, cancelled when the cache closes
        self.store_errors = 0  # look-ups and stores given up because the store failed or hung (metrics)
        self._warned_at = float("-inf")
        # namespace → entries stored without their embedding (in-process store): (entry id, prompt text)
        self._unembedded: OrderedDict[str, list[tuple[int, str]]] = OrderedDict()
        self._unembedded_count = 0
        self.max_unembedded = 100_000  # beyond, the oldest namespaces' entries stay in the exact layer only
        self.verifier: CacheVerifier | None = None  # verification sampling and the online bound (attach_verifier)

    def attach_verifier(self, dispatcher: Any, ledger: Any, pool: Any, embedder: Embedder | None,
                        redact: Callable[[bytes], bytes] = lambda b: b) -> None:
        """Turn on verification sampling (cache.verify.share > 0): it calls upstream through the gateway's
        dispatcher and writes ledger rows, which exist only once the gateway has made them."""
        if self.config.verify.share > 0 and self.config.semantic:
            self.verifier = CacheVerifier(self.config.verify, self.cache, dispatcher, ledger, pool, embedder,
                                          self._spawn, redact)

    def may_cache(self, raw: dict[str, Any]) -> bool:
        """The cheap pre-check: sampled answers (temperature > 0) are neither served nor stored by default,
        so most requests skip key hashing altogether."""
        temperature = raw.get("temperature")
        if temperature is None:
            temperature = self.config.default_temperature
        return self.config.allow_sampled or (isinstance(temperature, int | float) and temperature <= 0)

    async def lookup(self, headers: dict[bytes, bytes], ctx: RouteContext, tenant: str, route: str,
                     embedder: Embedder | None, request_id: str | None = None) -> Hit | CacheTicket | None:
        """A hit to answer with; else where to store the answer (None: nowhere).

        The exact layer first (no embedding). The query embedding (through `ctx`, so routing reuses it) is
        computed only when the semantic layer could hit, i.e. the request's namespace holds entries. An
        answer stored without its embedding (its namespace was empty) enters the semantic layer when the next
        request of its namespace looks it up: that request embeds it together with its own query (one encoder
        batch), so a namespace that never sees a second request never pays for an embedding."""
        ttl = self.cache.policy.ttl_s
        control = CacheControl.from_headers(headers, float("inf") if ttl is None else ttl)
        keys = self.cache.keys(ctx.body, tenant=tenant, route=route)
        if not keys.cacheable:
            return None
        verifier = self.verifier
        # verification calls read the request: made only to models its compliance constraints permit (guards/)
        judge = self.config.verify.judge
        sampled = (verifier is not None and not control.bypass and (judge is None or ctx.permits(judge))
                   and verifier.sample())
        try:
            async with asyncio.timeout(self.config.store_timeout_s):
                found = await self._lookup(control, keys, ctx, embedder, request_id, sampled)
        except Exception as exc:  # noqa: BLE001 - the store is down or hangs: answer without the cache, say so
            self._store_failed("look-up", exc)
            return None
        if sampled and isinstance(found, Hit) and found.kind == "semantic" and ctx.permits(found.model):
            assert verifier is not None
            if not verifier.on_path(keys.tenant):
                verifier.check_later(ctx.body, keys.tenant, found, request_id)
            else:  # outside the store's time limit: the upstream call may take a while
                fresh = await verifier.check_now(ctx.body, keys.tenant, found, request_id)
                if fresh is not None:  # judged different: the client gets the fresh answer, the cache stores it
                    assert embedder is not None  # a semantic hit had its query embedded (kept by ctx)
                    embedding = (await ctx.embedding(embedder, keys.query_text))[0]
                    if not control.no_store:
                        self._spawn(self.store(CacheTicket(keys, control.ttl_s, embedding, request_id), fresh,
                                               found.model))
                    return verifier.replacement(found, fresh, found.model)
        return found

    async def _lookup(self, control: CacheControl, keys: CacheKeys, ctx: RouteContext, embedder: Embedder | None,
                      request_id: str | None, sampled: bool = False) -> Hit | CacheTicket | None:
        cache = self.cache
        verifier = self.verifier
        # the tenant's own threshold once verification sampling has labelled its traffic (one dict look-up)
        threshold = verifier.threshold(keys.tenant) if verifier is not None else None
        near: list[tuple[int, float, float]] | None = [] if sampled else None
        # the semantic layer's namespace, when this request may use it
        namespace = keys.namespace if embedder is not None and keys.query_text else None
        embedding = None
        if not control.bypass:
            hit = await cache.find_exact(keys.exact_key)  # no embedding needed
            waiting = self._unembedded.get(namespace) if namespace is not None else None
            if hit is None and namespace is not None and embedder is not None and (waiting or cache.may_hit_semantic(namespace)):
                if waiting:
                    embedding = await self._embed_with_waiting(namespace, ctx, embedder, keys.query_text)
                else:
                    embedding = (await ctx.embedding(embedder, keys.query_text))[0]
                hit = await cache.find_semantic(namespace, embedding, keys.query_text, threshold=threshold, near=near)
            cache.count(hit)
            if hit is not None:
                if request_id is not None:
                    cache.note_served(request_id, hit)
                if sampled and hit.kind == "exact" and verifier is not None:
                    verifier.label(keys.tenant, None, False)  # an exact hit is never a wrong reuse
                return hit
        best = max(near, key=lambda c: c[1]) if near else None
        if sampled and best is None and verifier is not None:
            verifier.label(keys.tenant, None, False)  # no candidate passed the checks: no reuse at any threshold
        if control.no_store:
            return None  # (a near candidate's label needs the answer, which is not kept: the sample is dropped)
        later = (ctx, embedder) if namespace is not None and embedder is not None and embedding is None else None
        return CacheTicket(keys, control.ttl_s, embedding, request_id, later,
                           None if best is None else (best[0], best[1]))

    def _store_failed(self, what: str, exc: BaseException) -> None:
        """Count a failed look-up or store; log it at most every ten seconds (an outage is one event, not one per
        request)."""
        self.store_errors += 1
        now = time.monotonic()
        if now - self._warned_at >= 10.0:
            self._warned_at = now
            log.warning("cache %s failed (%s): requests go on without the cache (%d failures so far)", what,
                        "timed out" if isinstance(exc, TimeoutError) else exc, self.store_errors)

    async def _embed_with_waiting(self, namespace: str, ctx: RouteContext, embedder: Embedder, query_text: str
                                  ) -> np.ndarray:
        """The query's embedding, computed with those of (up to 16 of) the namespace's entries still without
        one, which join the semantic layer before the search."""
        waiting = self._unembedded.pop(namespace)
        batch, rest = waiting[:16], waiting[16:]
        if rest:
            self._unembedded[namespace] = rest
        self._unembedded_count -= len(batch)
        found = await asyncio.gather(ctx.embedding(embedder, query_text),
                                     *(embedder.embed_with_features(text) for _, text in batch), return_exceptions=True)
        for (entry_id, text), result in zip(batch, found[1:]):
            if not isinstance(result, BaseException):  # else it stays in the exact layer only
                await self.cache.attach_embedding(entry_id, namespace, result[0], text)
        if isinstance(found[0], BaseException):
            raise found[0]
        return found[0][0]

    async def store(self, ticket: CacheTicket | None, answer: dict[str, Any] | None, model: str,
                    pieces: list[str] | None = None) -> None:
        """Store an answer that has been sent. Without its embedding, it goes into the exact layer now; the
        in-process store adds it to the semantic layer with the next lookup of its namespace (see `lookup`),
        the Redis store as soon as it is embedded (a background task: every replica gets the vector)."""
        if ticket is None:
            return
        if ticket.near is not None and answer is not None and self.verifier is not None:
            self.verifier.label_near(ticket.keys.tenant, *ticket.near, answer, ticket.keys.query_text, ticket.request_id)
        try:
            async with asyncio.timeout(self.config.store_timeout_s):
                eid = await self._store(ticket, answer, model, pieces, deferred=ticket.later is not None)
            if eid is None or ticket.later is None or ticket.keys.namespace is None:  # (later implies a namespace)
                return
            if not isinstance(self.cache.backend, MemoryStore):
                self._spawn(self._attach_later(ticket, eid))
            else:
                ns = ticket.keys.namespace
                self._unembedded.setdefault(ns, []).append((eid, ticket.keys.query_text))
                self._unembedded_count += 1
                while self._unembedded_count > self.max_unembedded:
                    _, dropped = self._unembedded.popitem(last=False)
                    self._unembedded_count -= len(dropped)
        except Exception as exc:  # noqa: BLE001 - a cache failure must never fail an answered request
            self._store_failed("store", exc)

    async def _store(self, ticket: CacheTicket, answer: dict[str, Any] | None, model: str, pieces: list[str] | None,
                     deferred: bool = False) -> int | None:
        keys = ticket.keys
        return await self.cache.store(keys.exact_key, None if deferred else keys.namespace, ticket.embedding,
                                      keys.query_text, answer, model=model, pieces=pieces, ttl_s=ticket.ttl_s,
                                      tenant=keys.tenant, route=keys.route, request_id=ticket.request_id)

    async def _embed(self, ticket: CacheTicket) -> np.ndarray:
        assert ticket.later is not None  # only tickets stored without their embedding are embedded later
        ctx, embedder = ticket.later
        return (await ctx.embedding(embedder, ticket.keys.query_text))[0]

    async def _attach_later(self, ticket: CacheTicket, entry_id: int) -> None:
        assert ticket.keys.namespace is not None  # `store` checked it
        await self.cache.attach_embedding(entry_id, ticket.keys.namespace, await self._embed(ticket),
                                          ticket.keys.query_text)

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("storing an answer in the cache failed", exc_info=task.exception())

    async def drain(self) -> None:
        """Wait for the stores still in flight (tests, shutdown)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
