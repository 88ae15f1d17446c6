"""The semantic cache: an exact layer and a semantic layer over one store, guarded against false hits.

The gateway's use, per chat request (``embedding`` = the MiniLM embedding of ``keys.query_text``, the
last user message alone, which the gateway computes once and shares with routing)::

    keys = cache.keys(body, tenant=key_id_or_team, route=body["model"])
    control = CacheControl.from_headers(headers)           # x-pointsman-cache / -ttl
    if keys.cacheable and not control.bypass:
        hit = await cache.lookup(keys.exact_key, keys.namespace, embedding, keys.query_text)
        if hit: send hit.body(request_id) or hit.sse(include_usage, request_id); headers |= hit.headers()
    ... answer from upstream ...
    if keys.cacheable and not control.no_store:
        await cache.store(keys.exact_key, keys.namespace, embedding, keys.query_text, answer_dict,
                          model=chosen, ttl_s=control.ttl_s)                # or pieces=recorder.pieces
    cache.note_served(request_id, hit)                      # so that feedback may name the request
    await cache.feedback(entry_id, accepted=False, tenant=t)  # a client's thumbs-down on a cached answer
    await cache.feedback(request_id=rid, accepted=False, tenant=t)   # ... naming the request instead
    await cache.invalidate(tenant_key=..., team=..., model=...)      # or entry_id=, namespace=, all=True

``lookup`` does no I/O with the in-process store (and, with the Redis store, only a GET for an answer not
yet mirrored). Nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import logging
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from pointsman.cache.answers import (StreamRecorder, completion_body, is_refusal, replay_as_sse,
                                     uncacheable_reason)
from pointsman.cache.base import (CacheEntry, CacheKeys, CachePolicy, CacheStore, Candidate, chunking, new_entry_id,
                                  request_keys)
from pointsman.cache.checks import CHECK_NAMES, AcceptanceModel, TextFacts, compare, facts, pair_features
from pointsman.cache.memory import MemoryStore

__all__ = ["SemanticCache", "Hit", "CacheMetrics", "CacheControl", "CachePolicy", "CacheKeys", "CacheEntry",
           "CacheStore", "Candidate", "MemoryStore", "AcceptanceModel", "StreamRecorder", "replay_as_sse",
           "uncacheable_reason", "is_refusal", "request_keys", "default_acceptance_model"]


def default_acceptance_model(delta: float = 0.02, kind: str = "logistic", encoder: str = "minilm") -> AcceptanceModel:
    """The shipped acceptance model (fitted on QQP's training split and calibrated on its calibration split
    by bench/cache/eval.py), with its threshold for ``delta`` (0.005, 0.01, 0.02 or 0.05; others: the nearest stricter).

    ``kind``: "logistic" (pair features only: the default) or "mlp" (a learned metric on the embeddings +
    pair features; not shipped: ``bench/cache/eval.py --save --save-mlp`` writes it). ``encoder``: the
    encoder kind whose similarities it was fitted on (``minilm`` or ``minilm-dup``; each has its own file).
    """
    base = Path(__file__).with_name("models") / (f"acceptance_{kind}" + ("" if encoder == "minilm" else f"_{encoder}"))
    if not base.with_suffix(".json").is_file():
        return AcceptanceModel(delta=delta)
    model = AcceptanceModel.load(base)
    thresholds = {float(k): v for k, v in model.calibration.get("thresholds", {}).items()}
    if thresholds:
        usable = [d for d in thresholds if d <= delta] or [min(thresholds)]
        model.delta = max(usable)
        model.threshold = float(thresholds[model.delta])
    return model


@dataclass(slots=True)
class Hit:
    kind: str  # "exact" or "semantic"
    entry_id: int
    similarity: float  # 1.0 for exact hits
    p_correct: float | None  # the acceptance model's probability (semantic hits)
    checks: tuple[str, ...]  # the checks the candidate passed
    answer: bytes  # the cached chat.completion (JSON)
    pieces: array | None  # original stream chunking, if it was streamed (`base.chunking`)
    model: str  # the pool model that made the answer
    age_s: float

    def body(self, request_id: str | None = None, created: int | None = None) -> bytes:
        """The chat.completion to send for a non-streamed request."""
        return completion_body(self.answer, request_id, created)

    def sse(self, include_usage: bool = False, request_id: str | None = None, created: int | None = None) -> list[bytes]:
        """The SSE events to send for a streamed request (ends with ``data: [DONE]``)."""
        return replay_as_sse(self.answer, include_usage, request_id, created, self.pieces)

    def headers(self) -> dict[str, str]:
        h = {"x-pointsman-cache": f"hit-{self.kind}", "x-pointsman-cache-entry": f"{self.entry_id:x}",
             "x-pointsman-cache-similarity": f"{self.similarity:.4f}",
             "x-pointsman-cache-age-s": f"{self.age_s:.0f}"}
        if self.kind == "semantic":
            h["x-pointsman-cache-checks"] = ",".join(self.checks) or "none"
            if self.p_correct is not None:
                h["x-pointsman-cache-p"] = f"{self.p_correct:.4f}"
        return h


log = logging.getLogger("pointsman.cache")

CACHE_MODES = frozenset({"bypass", "off", "refresh", "no-store"})


@dataclass(slots=True)
class CacheControl:
    """Per-request controls from headers: ``x-pointsman-cache: bypass | no-store | refresh`` (refresh =
    skip the lookup but store the new answer) and ``x-pointsman-cache-ttl: <seconds>``."""

    bypass: bool = False  # skip the lookup
    no_store: bool = False  # do not store the answer
    ttl_s: float | None = None

    @classmethod
    def from_headers(cls, headers: dict[bytes, bytes], max_ttl_s: float = float("inf")) -> "CacheControl":
        """The controls a request asks for; a 400 for a value that means nothing (never silently ignored). A TTL
        is capped at ``max_ttl_s`` (the cache's own TTL): a request may shorten how long its answer is kept, not
        keep it forever."""
        from pointsman.errors import GatewayError

        ctl = cls()
        mode = headers.get(b"x-pointsman-cache")
        if mode is not None:
            words = {w.strip() for w in mode.decode("latin-1").lower().split(",")}
            unknown = sorted(words - CACHE_MODES)
            if unknown:
                raise GatewayError(400, f"x-pointsman-cache: unknown value {', '.join(unknown)!r}; use "
                                        f"{', '.join(sorted(CACHE_MODES))}", code="invalid_header")
            if "bypass" in words or "off" in words:
                ctl.bypass = ctl.no_store = True
            if "refresh" in words:
                ctl.bypass = True
            if "no-store" in words:
                ctl.no_store = True
        ttl = headers.get(b"x-pointsman-cache-ttl")
        if ttl is not None:
            try:
                seconds = float(ttl)
            except ValueError:
                seconds = float("nan")
            if not 0 <= seconds < float("inf"):  # NaN, negative and infinite (1e309) alike
                raise GatewayError(400, "x-pointsman-cache-ttl must be a number of seconds >= 0", code="invalid_header")
            ctl.ttl_s = min(seconds, max_ttl_s)
            if ctl.ttl_s == 0:
                ctl.no_store = True
        return ctl


@dataclass
class CacheMetrics:
    lookups: int = 0
    hits_exact: int = 0
    hits_semantic: int = 0
    misses: int = 0
    rejected: dict[str, int] = field(default_factory=lambda: dict.fromkeys((*CHECK_NAMES, "model", "demoted"), 0))
    stored: int = 0
    not_stored: dict[str, int] = field(default_factory=dict)
    bytes_served: int = 0
    bytes_stored: int = 0
    feedback_accepted: int = 0
    feedback_rejected: int = 0
    feedback_deleted: int = 0  # rejections that removed the entry (the rest demoted it)
    invalidated: int = 0

    def snapshot(self) -> dict[str, Any]:
        return {"lookups": self.lookups, "hits_exact": self.hits_exact, "hits_semantic": self.hits_semantic,
                "misses": self.misses, "rejected": dict(self.rejected), "stored": self.stored,
                "not_stored": dict(self.not_stored), "bytes_served": self.bytes_served,
                "bytes_stored": self.bytes_stored, "feedback_accepted": self.feedback_accepted,
                "feedback_rejected": self.feedback_rejected, "feedback_deleted": self.feedback_deleted,
                "invalidated": self.invalidated}


class SemanticCache:
    """The facade the gateway calls. ``store`` defaults to an in-process :class:`MemoryStore`.

    Args:
        policy: what may be stored/served (temperature, tool calls, TTL); see :class:`CachePolicy`.
        acceptance: the learned acceptance model (default: the shipped one for ``delta``).
        k: candidates examined per semantic lookup (best first; the first that passes wins).
        min_similarity: candidates below this cosine are not even examined (a cheap pre-filter).
        enforce: the rule checks that reject (all five by default).
        max_rejects: rejections after which an entry is deleted (before that it is demoted).
        learn_from_accepts: let accepted feedback loosen the model (off: feedback only tightens it, so the
            calibrated bound stays conservative).
        vector_space: the id of the encoder the embeddings come from, mixed into every namespace.
        encoder: that encoder's kind, which picks the shipped acceptance model (when none is given).
    """

    def __init__(self, store: CacheStore | None = None, policy: CachePolicy | None = None,
                 acceptance: AcceptanceModel | None = None, *, delta: float = 0.02, k: int = 3,
                 min_similarity: float = 0.7, enforce: tuple[str, ...] = CHECK_NAMES, max_rejects: int = 2,
                 learn_from_accepts: bool = False, feedback_margin: float = 0.005, vector_space: str = "",
                 encoder: str = "minilm") -> None:
        self.backend = store if store is not None else MemoryStore()
        self.policy = policy or CachePolicy()
        self.acceptance = acceptance or default_acceptance_model(delta, encoder=encoder)
        self.k = k
        self.min_similarity = min_similarity
        self.enforce = frozenset(enforce)
        self.max_rejects = max_rejects
        self.learn_from_accepts = learn_from_accepts
        self.feedback_margin = feedback_margin
        self.vector_space = vector_space
        self.metrics = CacheMetrics()
        # candidates below this cosine cannot be accepted whatever their texts: skipped before any text work
        self.floor = max(min_similarity, self.acceptance.similarity_floor())
        self._floors: dict[float, float] = {}
        # told of every client reject of a semantic hit: (tenant, acceptance probability it was served at)
        self.on_reject: Callable[[str, float], object] | None = None
        self._recent: OrderedDict[int, tuple[str, float, np.ndarray | None]] = OrderedDict()  # entry → last hit
        self.max_recent = 10_000
        # request id → (entry id, kind, similarity, acceptance state): what answered it, for feedback
        self._served: OrderedDict[str, tuple[int, str, float, np.ndarray | None]] = OrderedDict()
        self.max_served = 50_000
        # entry id → the facts of its prompt, for the entries that were candidates lately: an entry's facts cost
        # ~4 KB, ~40 us to extract again, so only the ones look-ups meet are kept (ids are never reused)
        self._facts: OrderedDict[int, TextFacts] = OrderedDict()
        self.max_facts = 4096
        self.background: set[asyncio.Task] = set()  # a caller's stores still in flight: cancelled by close()

    # -- keys --------------------------------------------------------------------------------------------
    def keys(self, body: dict[str, Any], tenant: str | None, route: str | None = None) -> CacheKeys:
        return request_keys(body, tenant, route, self.policy, self.vector_space)

    # -- lookup ------------------------------------------------------------------------------------------
    async def lookup(self, exact_key: str, namespace: str | None, embedding: np.ndarray | None,
                     query_text: str, now: float | None = None) -> Hit | None:
        """Exact, then semantic (when ``namespace`` and ``embedding`` are given); counted as one lookup."""
        now = time.time() if now is None else now
        hit = await self.find_exact(exact_key, now)
        if hit is None and namespace is not None and embedding is not None:
            hit = await self.find_semantic(namespace, embedding, query_text, now)
        self.count(hit)
        return hit

    def count(self, hit: Hit | None) -> None:
        """Count one request's lookup (``find_exact`` and ``find_semantic`` do not count lookups or misses)."""
        self.metrics.lookups += 1
        if hit is None:
            self.metrics.misses += 1

    def may_hit_semantic(self, namespace: str | None) -> bool:
        """Whether a semantic lookup in ``namespace`` could hit at all: an empty namespace needs no embedding."""
        return namespace is not None and self.policy.semantic and self.backend.has_namespace(namespace)

    async def find_exact(self, exact_key: str, now: float | None = None) -> Hit | None:
        now = time.time() if now is None else now
        entry = self.backend.find_exact(exact_key, now)
        if entry is None:
            return None
        return await self._hit(entry, "exact", 1.0, None, CHECK_NAMES, now, None)

    async def find_semantic(self, namespace: str, embedding: np.ndarray, query_text: str,
                            now: float | None = None, *, threshold: float | None = None,
                            near: list[tuple[int, float, float]] | None = None) -> Hit | None:
        """The first candidate (most similar first) that passes the checks with an acceptance probability of at
        least ``threshold`` (default: the acceptance model's; a tenant's own from the online bound). ``near``:
        collect (entry id, p, similarity) of the candidates that passed the checks but not the threshold, down to
        ``min_similarity`` (a sampled request's near misses, labelled later from its fresh answer)."""
        if not self.policy.semantic or not query_text:
            return None
        now = time.time() if now is None else now
        m = self.metrics
        thr = self.acceptance.threshold if threshold is None else threshold
        floor = self.min_similarity if near is not None else self.floor if threshold is None else self.floor_for(thr)
        candidates = self.backend.search(namespace, embedding, self.k, now)
        q = None
        for cand in candidates:
            sim = cand.similarity
            if sim < floor:
                break
            e = cand.entry
            if sim < e.min_similarity:
                m.rejected["demoted"] += 1
                continue
            if q is None:
                q = facts(query_text)
            ef = self.entry_facts(e)
            result = compare(q, ef, self.enforce)
            if not result.passed:
                for name in result.failed:
                    m.rejected[name] += 1
                continue
            state = self.acceptance.state(pair_features(sim, q, ef, result), embedding,
                                          cand.vector if cand.vector is not None else e.vector)
            p = self.acceptance.prob_state(state)
            if p < thr:
                m.rejected["model"] += 1
                if near is not None:
                    near.append((e.id, p, sim))
                continue
            passed = tuple(n for n, f in zip(CHECK_NAMES, result.flags) if not f)
            hit = await self._hit(e, "semantic", sim, p, passed, now, state)
            if hit is not None:
                return hit
        return None

    # bytes per item of the side maps at their caps (bench/cache/memory.py): a served or recent item holding an
    # acceptance state (a semantic hit), an entry's facts
    SERVED_ITEM_BYTES, RECENT_ITEM_BYTES, FACTS_ITEM_BYTES = 520, 420, 4000

    def side_map_bytes(self) -> int:
        """At most what the side maps (served requests, recent hits, candidates' facts) hold at their caps."""
        return (self.max_served * self.SERVED_ITEM_BYTES + self.max_recent * self.RECENT_ITEM_BYTES
                + self.max_facts * self.FACTS_ITEM_BYTES)

    def entry_facts(self, entry: CacheEntry) -> TextFacts:
        """The facts of an entry's prompt, from the bounded map of recent candidates (or extracted now)."""
        found = self._facts.get(entry.id)
        if found is None:
            found = self._facts[entry.id] = facts(entry.prompt_text)
            if len(self._facts) > self.max_facts:
                self._facts.popitem(last=False)
        else:
            self._facts.move_to_end(entry.id)
        return found

    def floor_for(self, threshold: float) -> float:
        """The similarity floor (see ``floor``) for another threshold: tenants' thresholds from the online bound."""
        found = self._floors.get(threshold)
        if found is None:
            if len(self._floors) > 256:
                self._floors.clear()
            model = copy.copy(self.acceptance)
            model.threshold = threshold
            found = self._floors[threshold] = max(self.min_similarity, model.similarity_floor())
        return found

    async def _hit(self, entry: CacheEntry, kind: str, sim: float, p: float | None, checks: tuple[str, ...],
                   now: float, x: np.ndarray | None) -> Hit | None:
        answer = entry.answer
        if answer is None:  # a replica's mirror holds metadata only: fetch the answer
            full = await self.backend.get(entry.id)
            if full is None or full.answer is None:
                return None
            answer = full.answer
            entry.pieces = full.pieces
        self.backend.touch(entry, now)
        if kind == "exact":
            self.metrics.hits_exact += 1
        else:
            self.metrics.hits_semantic += 1
        self.metrics.bytes_served += len(answer)
        self._recent[entry.id] = (kind, sim, x)
        if len(self._recent) > self.max_recent:
            self._recent.popitem(last=False)
        return Hit(kind, entry.id, sim, p, checks, answer, entry.pieces, entry.model, max(0.0, now - entry.created))

    # -- store -------------------------------------------------------------------------------------------
    async def store(self, exact_key: str, namespace: str | None, embedding: np.ndarray | None, query_text: str,
                    answer: dict[str, Any] | None, *, model: str = "", pieces: list[str] | None = None,
                    ttl_s: float | None = None, status: int = 200, cacheable: bool = True,
                    now: float | None = None, tenant: str = "", route: str = "",
                    request_id: str | None = None) -> int | None:
        """Store an upstream answer if the rules allow; returns the entry id, or None (see metrics.not_stored).

        ``answer`` is the chat.completion (for a stream: ``StreamRecorder.answer()``, with ``pieces`` =
        ``recorder.pieces`` to keep the chunking; a None answer = the stream did not finish). ``tenant`` and
        ``route`` scope feedback and invalidation; ``request_id`` lets feedback name the request that made it.
        """
        reason = None if cacheable else "request not cacheable"
        if reason is None:
            reason = "incomplete stream" if answer is None else uncacheable_reason(
                answer, self.policy.tools_side_effect_free, status)
        body = b""
        if reason is None:
            # an exact-size copy: orjson's bytes keep the ~4 KB its writer reserved, 7x a short answer
            body = bytes(memoryview(orjson.dumps(answer)))
            if len(body) > self.policy.max_answer_bytes:
                reason = "answer too large"
        if reason is not None:
            self.metrics.not_stored[reason] = self.metrics.not_stored.get(reason, 0) + 1
            return None
        ttl = self.policy.ttl_s if ttl_s is None else ttl_s
        vec = None
        if namespace is not None and embedding is not None:
            vec = np.asarray(embedding, dtype=np.float32).reshape(-1)
        entry = CacheEntry(id=new_entry_id(), namespace=namespace if vec is not None else None, exact_key=exact_key,
                           prompt_text=query_text, vector=vec, answer=body, model=model,
                           streamed=pieces is not None, pieces=chunking(pieces),
                           created=time.time() if now is None else now, ttl=ttl, tenant=tenant, route=route)
        await self.backend.add(entry)
        self.metrics.stored += 1
        self.metrics.bytes_stored += len(body)
        if request_id is not None:
            self._remember(request_id, entry.id, "stored", 1.0, None)
        return entry.id

    async def attach_embedding(self, entry_id: int, namespace: str, embedding: np.ndarray, query_text: str) -> bool:
        """Give an entry stored exact-only (its embedding was not computed before the answer went out) its
        place in the semantic layer; False if it is gone meanwhile (or the store cannot)."""
        attach = getattr(self.backend, "attach", None)
        if attach is None:
            return False
        done = attach(entry_id, namespace, embedding)
        return bool(await done if inspect.isawaitable(done) else done)

    def note_served(self, request_id: str, hit: Hit) -> None:
        """Remember that ``hit`` answered ``request_id`` (feedback may then name the request)."""
        self._remember(request_id, hit.entry_id, hit.kind, hit.similarity, self._recent.get(hit.entry_id, (0, 0, None))[2])

    def _remember(self, request_id: str, entry_id: int, kind: str, sim: float, x: np.ndarray | None) -> None:
        self._served[request_id] = (entry_id, kind, sim, x)
        if len(self._served) > self.max_served:
            self._served.popitem(last=False)
        self.backend.note_served(request_id, entry_id, kind, sim)

    # -- feedback and invalidation -----------------------------------------------------------------------
    async def feedback(self, entry_id: int | None = None, accepted: bool = False, *, request_id: str | None = None,
                       tenant: str | None = None) -> tuple[int, str] | None:
        """A client's verdict on an answer it was served: name the entry, or the request it answered.

        Rejected after an exact hit, or on the fresh answer a request stored (or unknown): the answer itself
        is bad, the entry is deleted. Rejected after a semantic hit: the entry is demoted (it now needs a
        closer match than the rejected one), deleted after ``max_rejects``, and the acceptance model learns
        the pair as a wrong reuse. ``tenant``: when given, an entry of another tenant is treated as unknown.

        Returns (entry id, action) with action ``deleted``, ``demoted`` or ``accepted``; None when the entry
        (or the request) is unknown, gone, or another tenant's.
        """
        if request_id is not None:
            served = self._served.get(request_id)
            if served is None:
                found = await self.backend.find_served(request_id)  # answered by another replica
                served = None if found is None else (*found, None)
            if served is None:
                return None
            entry_id, kind, sim, x = served
        elif entry_id is not None:
            kind, sim, x = self._recent.get(entry_id, ("exact", 1.0, None))
        else:
            raise ValueError("feedback: give entry_id or request_id")
        entry = await self.backend.get(entry_id)
        if entry is None or (tenant is not None and entry.tenant != tenant):
            return None
        if accepted:
            self.metrics.feedback_accepted += 1
            if x is not None and self.learn_from_accepts:
                self.acceptance.update(x, True)
            return entry_id, "accepted"
        self.metrics.feedback_rejected += 1
        if request_id is not None:
            self._served.pop(request_id, None)  # one verdict per answer
        if kind != "semantic":
            await self.backend.delete(entry_id)
            self.metrics.feedback_deleted += 1
            return entry_id, "deleted"
        if x is not None:
            if self.on_reject is not None:  # before the update below moves the probability
                self.on_reject(entry.tenant, self.acceptance.prob_state(x))
            self.acceptance.update(x, False)
        entry.rejects += 1
        entry.min_similarity = max(entry.min_similarity, min(1.0, sim + self.feedback_margin))
        self._recent.pop(entry_id, None)
        if entry.rejects >= self.max_rejects:
            await self.backend.delete(entry_id)
            self.metrics.feedback_deleted += 1
            return entry_id, "deleted"
        await self.backend.update(entry)
        return entry_id, "demoted"

    async def invalidate(self, namespace: str | None = None, entry_id: int | None = None,
                         all: bool = False, *, tenant_key: str | None = None,  # noqa: A002 - reads well
                         team: str | None = None, model: str | None = None) -> int:
        """Delete one entry, one namespace, everything (``all=True``), or every entry matching all of the
        filters given: ``tenant_key`` (the client key's id, as in the ledger; "" for an open gateway),
        ``team`` (x-pointsman-team; "" for none), ``model`` (the pool model that answered, or the model or
        policy the request named). Returns how many were deleted."""
        if entry_id is not None:
            n = int(await self.backend.delete(entry_id))
        elif namespace is not None:
            n = await self.backend.clear(namespace)
        elif tenant_key is not None or team is not None or model is not None:
            def matches(e: CacheEntry) -> bool:
                key, _, entry_team = e.tenant.partition("|")
                return ((tenant_key is None or key == tenant_key) and (team is None or entry_team == team)
                        and (model is None or model in (e.model, e.route)))

            n = await self.backend.delete_where(matches)
        elif all:
            n = await self.backend.clear(None)
        else:
            raise ValueError("invalidate: give namespace, entry_id, a filter (tenant_key, team, model) or all=True")
        self.metrics.invalidated += n
        return n

    async def evict(self) -> int:
        """Sweep expired entries (the lead may call this from a periodic task)."""
        return await self.backend.evict()

    async def start(self, sweep_every_s: float | None = None) -> None:
        """Open the store and sweep expired entries every ``sweep_every_s`` (default: a tenth of the TTL, at most a
        minute), so that memory held by answers nobody can be served any more is given back."""
        await self.backend.start()
        ttl = self.policy.ttl_s
        every = sweep_every_s if sweep_every_s is not None else (min(60.0, ttl / 10) if ttl else None)
        if every:
            sweeper = asyncio.get_running_loop().create_task(self._sweep(every))
            self.background.add(sweeper)
            sweeper.add_done_callback(self.background.discard)

    async def _sweep(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.evict()
            except Exception:  # a store that is down now may be up at the next sweep
                log.warning("cache: sweeping expired entries failed", exc_info=True)

    async def close(self) -> None:
        for task in list(self.background):
            task.cancel()
        if self.background:
            await asyncio.gather(*self.background, return_exceptions=True)
        await self.backend.close()

    def stats(self) -> dict[str, Any]:
        out = self.metrics.snapshot()
        out["hits"] = self.metrics.hits_exact + self.metrics.hits_semantic
        out["entries"] = len(self.backend)
        out["bytes"] = int(getattr(self.backend, "bytes", 0))
        out["evictions"] = getattr(self.backend, "evictions", None)
        return out
