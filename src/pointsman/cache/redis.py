"""The shared store for several gateway replicas, on the Redis they already run (no modules needed).

Layout under ``prefix`` (one prefix per deployment):

* ``{prefix}:e:{id}`` — a hash per entry: ``meta`` (JSON), ``vec`` (float32 bytes), ``answer``,
  ``pieces`` (JSON); expires with the entry's TTL (PEXPIRE).
* ``{prefix}:lru`` — sorted set id → last use, for the global size bound (least recently used first).
* ``{prefix}:rq:{request id}`` — which entry answered a request (``id|kind|similarity``), kept
  ``served_ttl_s`` for feedback that names the request; written with the periodic touch flush.
* ``{prefix}:log`` — a stream of changes: ``add`` (id + meta + vector, not the answer), ``del``, ``upd``
  (feedback demotions), ``clear`` (a namespace or everything); trimmed to about ``stream_maxlen``.

Each replica keeps a :class:`~pointsman.cache.memory.MemoryStore` mirror (vectors, metadata, and the
answers it has already served) and follows the stream with ``XREAD BLOCK`` in a background task, so a
search never leaves the process; only the first hit on an entry written by another replica fetches its
answer (one HMGET). A replica's own writes reach its mirror at once.

**Propagation delay.** ``XREAD BLOCK`` returns as soon as an event is appended, so while connected a
replica applies another's write within one Redis round trip plus its event-loop latency: stated bound
:attr:`RedisStore.PROPAGATION_BOUND_S` (0.25 s; measured around 1-3 ms on loopback, see
tests/test_cache_redis.py). If the connection fails, the replica retries with backoff up to
``max_backoff_s`` and, on reconnecting, rebuilds its mirror from the hashes (a full resync), so it can
also miss nothing that was trimmed from the stream meanwhile.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
from typing import Any

import numpy as np
import orjson

from pointsman.cache.base import CacheEntry, CacheStore, Candidate, chunking, entry_bytes
from pointsman.cache.memory import MemoryStore

__all__ = ["RedisStore"]

log = logging.getLogger("pointsman.cache")

_META_FIELDS = ("id", "namespace", "exact_key", "prompt_text", "model", "streamed", "created", "ttl", "hits",
                "min_similarity", "rejects", "size", "tenant", "route")


_INCR_HITS_IF_EXISTS = ("if redis.call('exists', KEYS[1]) == 1 then return redis.call('hincrby', KEYS[1], 'hits', 1) "
                        "end return 0")


# Give an entry stored exact-only its vector, unless it was deleted meanwhile (HSET would recreate it).
_ATTACH_IF_EXISTS = """
if redis.call('exists', KEYS[1]) == 0 then return 0 end
redis.call('hset', KEYS[1], 'meta', ARGV[1], 'vec', ARGV[2])
redis.call('xadd', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'op', 'add', 'id', ARGV[4], 'meta', ARGV[1], 'vec', ARGV[2])
return 1
"""


def _entry_from(meta: dict[str, Any], vec: bytes | None) -> CacheEntry:
    vector = np.frombuffer(vec, dtype=np.float32) if vec else None  # read only: the index keeps its own int8 copy
    return CacheEntry(id=int(meta["id"]), namespace=meta.get("namespace"), exact_key=meta["exact_key"],
                      prompt_text=meta.get("prompt_text", ""), vector=vector, answer=None,
                      model=meta.get("model", ""), streamed=bool(meta.get("streamed")), pieces=None,
                      created=float(meta["created"]), ttl=meta.get("ttl"), hits=int(meta.get("hits", 0)),
                      min_similarity=float(meta.get("min_similarity", 0.0)), rejects=int(meta.get("rejects", 0)),
                      size=int(meta.get("size", 0)), tenant=meta.get("tenant") or "", route=meta.get("route") or "")


class RedisStore(CacheStore):
    PROPAGATION_BOUND_S = 0.25

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", prefix: str = "pointsman:cache", *,
                 client: Any = None, dim: int = 384, max_entries: int = 100_000, max_bytes: int = 256 << 20,
                 ann_threshold: int = 4096, block_ms: int = 1000, stream_maxlen: int = 100_000,
                 touch_flush_s: float = 1.0, max_backoff_s: float = 2.0, served_ttl_s: float = 3600.0,
                 connections: int = 32, client_name: str = "pointsman-cache") -> None:
        if client is None:
            import redis.asyncio as aioredis

            # bounded waits: a Redis that hangs fails a command in seconds instead of holding it for ever (the
            # socket timeout outlasts the stream reader's blocking read); a bounded pool: a burst of requests
            # queues for a few connections instead of opening one each (the stream reader holds one)
            pool = aioredis.BlockingConnectionPool.from_url(
                url, max_connections=max(2, connections), timeout=block_ms / 1000 + 2.0, socket_connect_timeout=1.0,
                socket_timeout=block_ms / 1000 + 2.0, client_name=client_name)
            client = aioredis.Redis(connection_pool=pool, decode_responses=False)
            self._own_client = True
        else:
            self._own_client = False
        self.r = client
        self.prefix = prefix
        self.k_log = f"{prefix}:log".encode()
        self.k_lru = f"{prefix}:lru".encode()
        self.max_entries = max_entries
        self.block_ms = block_ms
        self.stream_maxlen = stream_maxlen
        self.touch_flush_s = touch_flush_s
        self.max_backoff_s = max_backoff_s
        # the local bound is the global one: the mirror never drops what Redis still holds, unless
        # max_bytes (answers fetched locally) says so
        self.mirror = MemoryStore(dim=dim, max_entries=max_entries, max_bytes=max_bytes, ann_threshold=ann_threshold)
        self.last_id: bytes = b"0-0"
        self.applied = 0  # events applied from the stream (observability, tests)
        self.resyncs = 0
        self._pending_touch: dict[int, float] = {}
        self._pending_served: dict[str, bytes] = {}
        self.served_ttl_s = served_ttl_s
        self._own: set[int] = set()  # ids this replica wrote whose add event it has not read back yet
        self._tasks: list[asyncio.Task] = []
        self._closed = False

    def _k_entry(self, eid: int) -> bytes:
        return f"{self.prefix}:e:{eid}".encode()

    def __len__(self) -> int:
        return len(self.mirror)

    @property
    def evictions(self) -> int:
        return self.mirror.evictions

    @property
    def bytes(self) -> int:  # noqa: A003 - sizes come with each entry's metadata: every entry counts
        return self.mirror.bytes

    def has_namespace(self, namespace: str) -> bool:
        return self.mirror.has_namespace(namespace)

    # -- lifecycle ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._tasks:
            return
        self._closed = False
        try:
            await self._resync()
        except Exception as exc:  # noqa: BLE001 - Redis is down: start empty; the follower resyncs once it is back
            log.warning("cache store unreachable at start (%s): serving without it until it is back", exc)
        self._tasks = [asyncio.create_task(self._follow(), name="pointsman-cache-follow"),
                       asyncio.create_task(self._flush_touches(), name="pointsman-cache-touch")]

    async def close(self) -> None:
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        self._tasks = []
        if self._pending_touch or self._pending_served:
            try:
                await self._flush_once()
            except Exception:  # noqa: BLE001 - best effort at shutdown
                pass
        if self._own_client:
            await self.r.aclose(close_connection_pool=True)

    async def _each_entry_batch(self, handle: Any, size: int = 500) -> None:
        """Call `handle(keys)` on every entry hash key in Redis, `size` keys at a time (SCAN, not KEYS)."""
        batch: list[bytes] = []
        async for key in self.r.scan_iter(match=f"{self.prefix}:e:*".encode(), count=1000):
            batch.append(key)
            if len(batch) >= size:
                await handle(batch)
                batch = []
        if batch:
            await handle(batch)

    async def _resync(self) -> None:
        """Rebuild the mirror from Redis: remember the stream's end first, then read every entry hash."""
        last = await self.r.xrevrange(self.k_log, count=1)
        self.last_id = last[0][0] if last else b"0-0"
        self._own.clear()
        seen: set[int] = set()

        async def load(keys: list[bytes]) -> None:
            pipe = self.r.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(key, "meta", "vec")
            for meta, vec in await pipe.execute():
                if meta is None:
                    continue
                entry = _entry_from(orjson.loads(meta), vec)
                seen.add(entry.id)
                if entry.id not in self.mirror.entries:
                    self.mirror.put(entry)

        await self._each_entry_batch(load)
        for eid in [e for e in self.mirror.entries if e not in seen]:
            self.mirror.remove(eid)
        self.resyncs += 1

    async def _follow(self) -> None:
        backoff = 0.05
        while not self._closed:
            try:
                resp = await self.r.xread({self.k_log: self.last_id}, count=512, block=self.block_ms)
                backoff = 0.05
                for _stream, messages in resp or ():
                    for mid, fields in messages:
                        self._apply(fields)
                        self.last_id = mid
                        self.applied += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep following; resync after an outage
                log.warning("cache stream read failed (%s); retrying in %.2fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(self.max_backoff_s, backoff * 2)
                try:
                    await self._resync()
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001
                    pass

    def _apply(self, f: dict[builtins.bytes, builtins.bytes]) -> None:  # `bytes` in this class is its method
        op = f.get(b"op")
        if op == b"add":
            eid = int(f[b"id"])
            if eid in self._own:  # our own add: applied when written (and maybe deleted since)
                self._own.discard(eid)
            elif eid not in self.mirror.entries:
                self.mirror.put(_entry_from(orjson.loads(f[b"meta"]), f.get(b"vec")))
            elif f.get(b"vec") and self.mirror.entries[eid].namespace is None:  # an exact-only entry got its vector
                meta = orjson.loads(f[b"meta"])
                self.mirror.attach(eid, meta["namespace"], np.frombuffer(f[b"vec"], dtype=np.float32))
        elif op == b"del":
            self.mirror.remove(int(f[b"id"]))
        elif op == b"upd":
            known = self.mirror.entries.get(int(f[b"id"]))
            if known is not None:
                known.min_similarity = float(f[b"min_similarity"])
                known.rejects = int(f[b"rejects"])
        elif op == b"clear":
            ns = f.get(b"ns") or b""
            for eid in self.mirror.ids_of(ns.decode() if ns else None):
                self.mirror.remove(eid)

    async def _flush_touches(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.touch_flush_s)
            if self._pending_touch or self._pending_served:
                try:
                    await self._flush_once()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    log.warning("cache touch flush failed: %s", exc)

    async def _flush_once(self) -> None:
        pending, self._pending_touch = self._pending_touch, {}
        served, self._pending_served = self._pending_served, {}
        pipe = self.r.pipeline(transaction=False)
        if pending:
            pipe.zadd(self.k_lru, {str(eid).encode(): ts for eid, ts in pending.items()}, xx=True)
        for eid in pending:  # only while the entry exists: a plain HINCRBY would recreate a deleted one's hash
            pipe.eval(_INCR_HITS_IF_EXISTS, 1, self._k_entry(eid))
        ttl_ms = max(1, int(self.served_ttl_s * 1000))
        for request_id, value in served.items():
            pipe.set(self._k_served(request_id), value, px=ttl_ms)
        await pipe.execute()

    def _k_served(self, request_id: str) -> builtins.bytes:
        return f"{self.prefix}:rq:{request_id}".encode()

    def note_served(self, request_id: str, entry_id: int, kind: str, similarity: float) -> None:
        self._pending_served[request_id] = f"{entry_id}|{kind}|{similarity:.6f}".encode()

    async def find_served(self, request_id: str) -> tuple[int, str, float] | None:
        value = self._pending_served.get(request_id) or await self.r.get(self._k_served(request_id))
        if not value:
            return None
        eid, kind, sim = value.decode().split("|")
        return int(eid), kind, float(sim)

    # -- hot path: the mirror ----------------------------------------------------------------------------
    def find_exact(self, exact_key: str, now: float | None = None) -> CacheEntry | None:
        return self.mirror.find_exact(exact_key, now)

    def search(self, namespace: str, vector: np.ndarray, k: int = 4, now: float | None = None) -> list[Candidate]:
        return self.mirror.search(namespace, vector, k, now)

    def touch(self, entry: CacheEntry, now: float) -> None:
        self.mirror.touch(entry, now)
        self._pending_touch[entry.id] = now

    async def get(self, entry_id: int) -> CacheEntry | None:
        entry = self.mirror.entries.get(entry_id)
        if entry is not None and entry.answer is not None:
            return entry
        answer, pieces, meta, vec = await self.r.hmget(self._k_entry(entry_id), "answer", "pieces", "meta", "vec")
        if answer is None:  # gone from Redis (expired or deleted): drop it here too
            self.mirror.remove(entry_id)
            return None
        if entry is None:
            entry = _entry_from(orjson.loads(meta), vec)
        entry.answer = answer
        entry.pieces = chunking(orjson.loads(pieces)) if pieces else None  # older entries hold the strings
        return entry

    # -- writes ------------------------------------------------------------------------------------------
    async def add(self, entry: CacheEntry) -> int:
        entry.pieces = chunking(entry.pieces)
        if not entry.size:
            entry.size = entry_bytes(entry, self.mirror.dim)
        replaced = self.mirror.by_exact.get(entry.exact_key)
        meta = orjson.dumps(entry.meta())
        vec = np.asarray(entry.vector, dtype=np.float32).tobytes() if entry.vector is not None else b""
        key = self._k_entry(entry.id)
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(key, mapping={"meta": meta, "vec": vec, "answer": entry.answer or b"",
                                "pieces": orjson.dumps(entry.pieces.tolist()) if entry.pieces is not None else b""})
        if entry.ttl is not None:
            pipe.pexpire(key, max(1, int(entry.ttl * 1000)))
        pipe.zadd(self.k_lru, {str(entry.id).encode(): entry.created})
        pipe.xadd(self.k_log, {"op": "add", "id": str(entry.id), "meta": meta, "vec": vec},
                  maxlen=self.stream_maxlen, approximate=True)
        pipe.zcard(self.k_lru)
        self._own.add(entry.id)
        self.mirror.put(entry)  # before the round trip: this replica reads its own write at once
        try:
            results = await pipe.execute()
        except BaseException:
            self._own.discard(entry.id)
            self.mirror.remove(entry.id)
            raise
        if replaced is not None and replaced != entry.id:
            await self._delete_global([replaced])
        over = int(results[-1]) - self.max_entries
        if over > 0:
            popped = await self.r.zpopmin(self.k_lru, over)
            await self._delete_global([int(m) for m, _ in popped])
        return entry.id

    async def attach(self, eid: int, namespace: str, vector: np.ndarray) -> bool:
        """Give an entry stored exact-only its place in the semantic layer, here and on every replica."""
        if not self.mirror.attach(eid, namespace, vector):
            return False
        entry = self.mirror.entries[eid]
        meta = orjson.dumps(entry.meta())
        done = await self.r.eval(_ATTACH_IF_EXISTS, 2, self._k_entry(eid), self.k_log, meta,
                                 np.asarray(vector, dtype=np.float32).tobytes(), str(self.stream_maxlen), str(eid))
        if not done:  # deleted in Redis meanwhile
            self.mirror.remove(eid)
        return bool(done)

    async def _delete_global(self, ids: list[int]) -> None:
        if not ids:
            return
        pipe = self.r.pipeline(transaction=True)
        for eid in ids:
            pipe.delete(self._k_entry(eid))
            pipe.zrem(self.k_lru, str(eid).encode())
            pipe.xadd(self.k_log, {"op": "del", "id": str(eid)}, maxlen=self.stream_maxlen, approximate=True)
        await pipe.execute()
        for eid in ids:
            self.mirror.remove(eid)

    async def delete(self, entry_id: int) -> bool:
        existed = entry_id in self.mirror.entries or bool(await self.r.exists(self._k_entry(entry_id)))
        await self._delete_global([entry_id])
        return existed

    async def update(self, entry: CacheEntry) -> None:
        key = self._k_entry(entry.id)
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(key, "meta", orjson.dumps(entry.meta()))
        pipe.xadd(self.k_log, {"op": "upd", "id": str(entry.id), "min_similarity": repr(entry.min_similarity),
                               "rejects": str(entry.rejects)}, maxlen=self.stream_maxlen, approximate=True)
        await pipe.execute()

    async def delete_where(self, predicate: Any) -> int:
        """Reads every entry's metadata from Redis (not only this replica's mirror, which may lag), deletes the
        matches everywhere; the other replicas drop them from their mirrors through the stream."""
        ids = set(self.mirror.ids_where(predicate))

        async def scan(keys: list[bytes]) -> None:
            pipe = self.r.pipeline(transaction=False)
            for key in keys:
                pipe.hget(key, "meta")
            for meta in await pipe.execute():
                if meta is not None:
                    entry = _entry_from(orjson.loads(meta), None)
                    if predicate(entry):
                        ids.add(entry.id)

        await self._each_entry_batch(scan)
        ordered = sorted(ids)
        for i in range(0, len(ordered), 500):
            await self._delete_global(ordered[i:i + 500])
        return len(ordered)

    async def evict(self, now: float | None = None) -> int:
        """Expired entries leave Redis by themselves (PEXPIRE); drop them from the mirror and the LRU set."""
        gone = self.mirror.expire(now if now is not None else time.time())
        if gone:
            await self.r.zrem(self.k_lru, *[str(e).encode() for e in gone])
        return len(gone)

    async def clear(self, namespace: str | None = None) -> int:
        if namespace is not None:
            ids = self.mirror.ids_of(namespace)
            pipe = self.r.pipeline(transaction=True)
            for eid in ids:
                pipe.delete(self._k_entry(eid))
                pipe.zrem(self.k_lru, str(eid).encode())
            pipe.xadd(self.k_log, {"op": "clear", "ns": namespace}, maxlen=self.stream_maxlen, approximate=True)
            await pipe.execute()
            for eid in ids:
                self.mirror.remove(eid)
            return len(ids)
        n = 0
        keys = []
        async for key in self.r.scan_iter(match=f"{self.prefix}:e:*".encode(), count=1000):
            keys.append(key)
            if len(keys) >= 500:
                n += await self.r.delete(*keys)
                keys = []
        if keys:
            n += await self.r.delete(*keys)
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(self.k_lru)
        pipe.xadd(self.k_log, {"op": "clear", "ns": ""}, maxlen=self.stream_maxlen, approximate=True)
        await pipe.execute()
        n = max(n, len(self.mirror))
        for eid in list(self.mirror.entries):
            self.mirror.remove(eid)
        return n

    async def destroy(self) -> None:
        """Delete every key under the prefix (tests, teardown)."""
        keys = [k async for k in self.r.scan_iter(match=f"{self.prefix}:*".encode(), count=1000)]
        if keys:
            await self.r.delete(*keys)
