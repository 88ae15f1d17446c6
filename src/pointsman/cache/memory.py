"""The in-process store: the embedded default, and each replica's mirror of the shared store.

One index per namespace (a namespace is tenant + model/policy + system prompt + tools + parameters +
earlier turns, so most are small): exact dot products while a namespace holds at most ``ann_threshold``
vectors, a usearch HNSW graph beyond (int8 in the graph, candidates re-scored from the index's own rows).
Vectors live in the index only, as int8 with one scale per vector (388 bytes instead of 1,536; the cosine
moves by about 1e-3 at most, bench/cache/MEMORY.md), not on the entries. Bounds: ``max_entries`` and
``max_bytes`` (each entry's estimated footprint, `base.entry_bytes`), least recently used first; per-entry
TTL, checked on every read and swept by :meth:`evict`. No I/O anywhere.
"""

from __future__ import annotations

import concurrent.futures
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from pointsman.cache.base import CacheEntry, CacheStore, Candidate, chunking, entry_bytes

if TYPE_CHECKING:  # usearch is imported when the index grows past ann_threshold (see _graph)
    from usearch.index import Index

__all__ = ["MemoryStore", "VectorIndex", "quantize"]


def quantize(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 rows and one float32 scale per row (row ~= int8 * scale): the largest component maps to 127."""
    v = np.asarray(vectors, dtype=np.float32)
    v2 = v.reshape(1, -1) if v.ndim == 1 else v
    top = np.abs(v2).max(axis=1)
    scale = np.where(top > 0, top / 127.0, 1.0).astype(np.float32)
    q = np.rint(v2 / scale[:, None]).astype(np.int8)
    return (q[0], scale[:1]) if v.ndim == 1 else (q, scale)


# One thread builds HNSW graphs for every index of the process, one at a time (a core at most): usearch releases
# the GIL while it adds, so the event loop goes on searching the old graph (or exactly) meanwhile.
_BUILDER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="pointsman-ann")


def _graph(dim: int, connectivity: int, expansion: int) -> Index:
    try:  # onnxruntime imported after usearch (its numkong extension) segfaults: usearch 2.26.6, numkong
        import onnxruntime  # noqa: F401  7.8.6, onnxruntime 1.32.0. Loaded first, both work.
    except ImportError:
        pass
    from usearch.index import Index

    # cosine over the int8 rows as stored: a row's own scale does not change its direction
    return Index(ndim=dim, metric="cos", dtype="i8", connectivity=connectivity, expansion_add=64,
                 expansion_search=expansion)


class VectorIndex:
    """Cosine search over L2-normalised vectors keyed by int ids: exact below a size, HNSW above.

    Rows are int8 with a scale each (see `quantize`); the query stays float32, so a similarity is exact up to
    the stored vector's rounding. The graph is built, and rebuilt once a quarter of it is tombstones, in a
    background thread from a copy of the rows; the changes made meanwhile are replayed onto it before it
    replaces the old one."""

    CHUNK = 512  # rows converted to float32 at a time by the exact search: stays in cache, no big temporary

    def __init__(self, dim: int, ann_threshold: int = 4096, ann_expansion: int = 64, ann_connectivity: int = 16):
        self.dim = dim
        self.ann_threshold = ann_threshold
        self.ann_expansion = ann_expansion
        self.ann_connectivity = ann_connectivity
        self.mat = np.zeros((8, dim), dtype=np.int8)
        self.scale = np.zeros(8, dtype=np.float32)
        self.ids = np.zeros(8, dtype=np.int64)
        self.pos: dict[int, int] = {}
        self.n = 0
        self.ann: Index | None = None  # once the index is large
        self._ann_removed = 0
        self._build: concurrent.futures.Future[Index] | None = None  # a graph being built
        # the changes since that build copied the rows: (key, row, or None: removed); one list per build
        self._changes: list[tuple[int, np.ndarray | None]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.n

    def __contains__(self, key: int) -> bool:
        return key in self.pos

    def _grow(self) -> None:
        cap = len(self.ids) + max(8, len(self.ids) // 2)  # x1.5: less slack than doubling at the cap
        for name in ("mat", "scale", "ids"):
            old = getattr(self, name)
            new = np.zeros((cap, *old.shape[1:]), dtype=old.dtype)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)

    def _shrink(self) -> None:
        """Give back the rows of an index that lost most of its entries (evictions, invalidation)."""
        cap = max(8, self.n + self.n // 2)
        for name in ("mat", "scale", "ids"):
            setattr(self, name, getattr(self, name)[:cap].copy())

    def add(self, key: int, vec: np.ndarray) -> None:
        if key in self.pos:
            self.remove(key)
        self._poll()
        if self.n == len(self.ids):
            self._grow()
        q, scale = quantize(np.asarray(vec, dtype=np.float32).reshape(-1))
        self.mat[self.n] = q
        self.scale[self.n] = scale[0]
        self.ids[self.n] = key
        self.pos[key] = self.n
        self.n += 1
        if self.ann is not None:
            self.ann.add(key, q)
        if self._build is not None:
            with self._lock:
                self._changes.append((key, q))
        elif self.ann is None and self.n > self.ann_threshold:
            self._start_build()

    def remove(self, key: int) -> bool:
        i = self.pos.pop(key, None)
        if i is None:
            return False
        self._poll()
        last = self.n - 1
        if i != last:  # swap the last row into the hole
            self.mat[i] = self.mat[last]
            self.scale[i] = self.scale[last]
            moved = int(self.ids[last])
            self.ids[i] = moved
            self.pos[moved] = i
        self.n = last
        if len(self.ids) > 64 and self.n < len(self.ids) // 4:
            self._shrink()
        if self._build is not None:
            with self._lock:
                self._changes.append((key, None))
        if self.ann is not None or self._build is not None:
            if self.ann is not None:
                self.ann.remove(key)
                self._ann_removed += 1
            if self.n <= self.ann_threshold // 2:
                self.ann, self._build = None, None  # small again: exact search (a build under way is dropped)
                self._changes = []
            elif self.ann is not None and self._build is None and self._ann_removed > self.n // 4:
                self._start_build()  # many tombstones degrade the graph: rebuild
        return True

    def vector(self, key: int) -> np.ndarray | None:
        """The stored vector (float32, as rounded), or None."""
        i = self.pos.get(key)
        return None if i is None else self.mat[i].astype(np.float32) * self.scale[i]

    def _start_build(self) -> None:
        ids, rows = self.ids[: self.n].copy(), self.mat[: self.n].copy()
        self._changes = []
        self._build = _BUILDER.submit(self._build_graph, ids, rows, self._changes)

    def _build_graph(self, ids: np.ndarray, rows: np.ndarray, changes: list[tuple[int, np.ndarray | None]]) -> Index:
        """(In the builder thread.) The graph of a copy of the rows, then the changes made since, until few are left."""
        ann = _graph(self.dim, self.ann_connectivity, self.ann_expansion)
        ann.add(ids, rows, threads=1)
        for _ in range(8):  # a bounded number of rounds: changes may come in faster than they are replayed
            with self._lock:
                if len(changes) < 64:
                    break
                batch = changes[:]
                changes.clear()
            self._replay(ann, batch)
        return ann  # the rest is replayed on the caller's thread, a few at a time (see _poll)

    @staticmethod
    def _replay(ann: Index, changes: list[tuple[int, np.ndarray | None]]) -> None:
        for key, row in changes:
            if ann.contains(key):
                ann.remove(key)
            if row is not None:
                ann.add(key, row)

    REPLAY_PER_CALL = 4  # changes replayed onto a built graph per call on the caller's thread (~0.3 ms each)

    def _poll(self, drain: bool = False) -> None:
        """Swap in a graph whose build has finished, once the changes made since are replayed onto it (a few per
        call: each call adds at most one, so this converges without a long pause)."""
        build = self._build
        if build is None or not build.done():
            return
        try:
            ann = build.result()
        except Exception:  # noqa: BLE001 - keep the old graph (or exact search); a later change retries
            self._build = None
            return
        with self._lock:
            n = len(self._changes) if drain else self.REPLAY_PER_CALL
            batch = self._changes[:n]
            del self._changes[:n]
            done = not self._changes
        self._replay(ann, batch)
        if done:
            self._build = None
            self.ann, self._ann_removed = ann, 0

    def wait_built(self, timeout: float | None = None) -> None:
        """Block until a graph under way is in place (tests, benchmarks)."""
        if self._build is not None:
            concurrent.futures.wait([self._build], timeout)
            self._poll(drain=True)

    def _scores(self, rows: np.ndarray | slice, vec: np.ndarray) -> np.ndarray:
        return (self.mat[rows].astype(np.float32) @ vec) * self.scale[rows]

    def search(self, vec: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, similarities), best first."""
        self._poll()
        n = self.n
        if n == 0:
            return self.ids[:0], np.zeros(0, dtype=np.float32)
        vec = np.asarray(vec, dtype=np.float32)
        if self.ann is None:  # (also while the first graph is built)
            if n <= self.CHUNK:
                sims = self._scores(slice(0, n), vec)
            else:
                sims = np.empty(n, dtype=np.float32)
                for lo in range(0, n, self.CHUNK):
                    sims[lo:lo + self.CHUNK] = self._scores(slice(lo, min(n, lo + self.CHUNK)), vec)
            if n <= k:
                order = np.argsort(-sims)
            else:
                top = np.argpartition(-sims, k)[:k]
                order = top[np.argsort(-sims[top])]
            return self.ids[order], sims[order]
        found = self.ann.search(quantize(vec)[0], max(4 * k, 16))
        keys = found.keys[found.keys != np.iinfo(np.uint64).max] if found.keys.dtype == np.uint64 else found.keys
        rows = np.fromiter((self.pos[int(x)] for x in keys if int(x) in self.pos), dtype=np.int64)
        if rows.size == 0:
            return self.ids[:0], np.zeros(0, dtype=np.float32)
        sims = self._scores(rows, vec)  # re-scored from the index's rows (the query in full precision)
        order = np.argsort(-sims)[:k]
        return self.ids[rows[order]], sims[order]


class MemoryStore(CacheStore):
    """``max_bytes`` bounds the entries' estimated footprint in this process (`base.entry_bytes`: answer, prompt,
    keys, vector, index and map overhead), not only their answers."""

    def __init__(self, dim: int = 384, max_entries: int = 100_000, max_bytes: int = 256 << 20,
                 ann_threshold: int = 4096):
        self.dim = dim
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ann_threshold = ann_threshold
        self.entries: OrderedDict[int, CacheEntry] = OrderedDict()  # recency order: oldest first
        self.by_exact: dict[str, int] = {}
        self.indexes: dict[str, VectorIndex] = {}
        self.bytes = 0
        self.evictions = 0
        self.expirations = 0

    def __len__(self) -> int:
        return len(self.entries)

    # -- hot path (sync, no I/O) -------------------------------------------------------------------------
    def find_exact(self, exact_key: str, now: float | None = None) -> CacheEntry | None:
        eid = self.by_exact.get(exact_key)
        if eid is None:
            return None
        entry = self.entries[eid]
        if entry.expired(time.time() if now is None else now):
            self._remove(eid)
            self.expirations += 1
            return None
        return entry

    def search(self, namespace: str, vector: np.ndarray, k: int = 4, now: float | None = None) -> list[Candidate]:
        index = self.indexes.get(namespace)
        if index is None:
            return []
        ids, sims = index.search(vector, k)
        now = time.time() if now is None else now
        out = []
        for eid, sim in zip(ids.tolist(), sims.tolist()):
            entry = self.entries.get(eid)
            if entry is None:
                continue
            if entry.expired(now):
                self._remove(eid)
                self.expirations += 1
                continue
            out.append(Candidate(entry, sim, index.vector(eid)))
        return out

    def touch(self, entry: CacheEntry, now: float) -> None:
        entry.hits += 1
        entry.last_used = now
        if entry.id in self.entries:
            self.entries.move_to_end(entry.id)

    # -- mutations --------------------------------------------------------------------------------------
    def put(self, entry: CacheEntry) -> list[int]:
        """Insert synchronously; returns the ids evicted to make room (the replaced one included)."""
        dropped = []
        old = self.by_exact.get(entry.exact_key)
        if old is not None and old != entry.id:
            self._remove(old)
            dropped.append(old)
        if entry.id in self.entries:
            self._remove(entry.id)
        entry.pieces = chunking(entry.pieces)
        if not entry.size:
            entry.size = entry_bytes(entry, self.dim)
        if not entry.last_used:
            entry.last_used = entry.created
        # one copy of each label however many entries carry it (each request made its own string)
        entry.tenant, entry.route, entry.model = sys.intern(entry.tenant), sys.intern(entry.route), sys.intern(entry.model)
        self.entries[entry.id] = entry
        self.by_exact[entry.exact_key] = entry.id
        self.bytes += entry.size
        if entry.namespace is not None and entry.vector is not None:
            self._index(entry, entry.namespace, entry.vector)
        elif entry.vector is None:
            entry.namespace = None  # no vector, no semantic layer (attach gives it one)
        while len(self.entries) > self.max_entries or self.bytes > self.max_bytes:
            eid = next(iter(self.entries))
            if eid == entry.id:
                break  # a single entry over max_bytes stays alone
            self._remove(eid)
            self.evictions += 1
            dropped.append(eid)
        return dropped

    def _remove(self, eid: int) -> CacheEntry | None:
        entry = self.entries.pop(eid, None)
        if entry is None:
            return None
        if self.by_exact.get(entry.exact_key) == eid:
            del self.by_exact[entry.exact_key]
        self.bytes -= entry.size
        if entry.namespace is not None:
            index = self.indexes.get(entry.namespace)
            if index is not None:
                index.remove(eid)
                if not len(index):
                    del self.indexes[entry.namespace]
        return entry

    def _index(self, entry: CacheEntry, namespace: str, vector: np.ndarray) -> None:
        """Put the vector in the namespace's index, the only copy kept (the entry's is dropped)."""
        index = self.indexes.get(namespace)
        if index is None:
            index = self.indexes[sys.intern(namespace)] = VectorIndex(self.dim, self.ann_threshold)
        index.add(entry.id, vector)
        entry.namespace = sys.intern(namespace)  # the index's key: one string per namespace, not one per entry
        entry.vector = None

    def attach(self, eid: int, namespace: str, vector: np.ndarray) -> bool:
        """Add an exact-only entry to the semantic layer once its embedding is known (False: gone, or has one)."""
        entry = self.entries.get(eid)
        if entry is None or entry.namespace is not None:
            return False
        self._index(entry, namespace, np.asarray(vector, dtype=np.float32).reshape(-1))
        return True

    def remove(self, eid: int) -> bool:
        return self._remove(eid) is not None

    def expire(self, now: float | None = None) -> list[int]:
        now = time.time() if now is None else now
        gone = [eid for eid, e in self.entries.items() if e.expired(now)]
        for eid in gone:
            self._remove(eid)
        self.expirations += len(gone)
        return gone

    def has_namespace(self, namespace: str) -> bool:
        return namespace in self.indexes  # an index is dropped with its last vector

    def ids_where(self, predicate: Callable[[CacheEntry], bool]) -> list[int]:
        return [eid for eid, e in self.entries.items() if predicate(e)]

    def ids_of(self, namespace: str | None) -> list[int]:
        if namespace is None:
            return list(self.entries)
        return [eid for eid, e in self.entries.items() if e.namespace == namespace]

    # -- the async contract -----------------------------------------------------------------------------
    async def get(self, entry_id: int) -> CacheEntry | None:
        return self.entries.get(entry_id)

    async def add(self, entry: CacheEntry) -> int:
        self.put(entry)
        return entry.id

    async def delete(self, entry_id: int) -> bool:
        return self.remove(entry_id)

    async def evict(self, now: float | None = None) -> int:
        return len(self.expire(now))

    async def clear(self, namespace: str | None = None) -> int:
        ids = self.ids_of(namespace)
        for eid in ids:
            self._remove(eid)
        return len(ids)

    async def update(self, entry: CacheEntry) -> None:
        pass  # the entry object is the stored one

    async def delete_where(self, predicate: Callable[[CacheEntry], bool]) -> int:
        ids = self.ids_where(predicate)
        for eid in ids:
            self._remove(eid)
        return len(ids)
