"""The in-process store: the embedded default, and each replica's mirror of the shared store.

One index per namespace (a namespace is tenant + model/policy + system prompt + tools + parameters +
earlier turns, so most are small): exact numpy dot products while a namespace holds at most
``ann_threshold`` vectors, a usearch HNSW graph beyond (int8 in the graph, candidates re-scored exactly
from the f32 matrix). Bounds: ``max_entries`` and ``max_bytes`` (answer bytes), least recently used
first; per-entry TTL, checked on every read and swept by :meth:`evict`. No I/O anywhere.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from pointsman.cache.base import CacheEntry, CacheStore, Candidate

if TYPE_CHECKING:  # usearch is imported when the index grows past ann_threshold (see _build_ann)
    from usearch.index import Index

__all__ = ["MemoryStore", "VectorIndex"]


class VectorIndex:
    """Cosine search over L2-normalised vectors keyed by int ids: exact below a size, HNSW above."""

    def __init__(self, dim: int, ann_threshold: int = 4096, ann_expansion: int = 64, ann_connectivity: int = 16):
        self.dim = dim
        self.ann_threshold = ann_threshold
        self.ann_expansion = ann_expansion
        self.ann_connectivity = ann_connectivity
        self.mat = np.zeros((16, dim), dtype=np.float32)
        self.ids = np.zeros(16, dtype=np.int64)
        self.pos: dict[int, int] = {}
        self.n = 0
        self.ann: Index | None = None  # once the index is large
        self._ann_removed = 0

    def __len__(self) -> int:
        return self.n

    def add(self, key: int, vec: np.ndarray) -> None:
        if key in self.pos:
            self.remove(key)
        if self.n == len(self.ids):
            cap = 2 * len(self.ids)
            self.mat = np.resize(self.mat, (cap, self.dim))
            self.ids = np.resize(self.ids, cap)
        self.mat[self.n] = vec
        self.ids[self.n] = key
        self.pos[key] = self.n
        self.n += 1
        if self.ann is not None:
            self.ann.add(key, vec)
        elif self.n > self.ann_threshold:
            self._build_ann()

    def remove(self, key: int) -> bool:
        i = self.pos.pop(key, None)
        if i is None:
            return False
        last = self.n - 1
        if i != last:  # swap the last row into the hole
            self.mat[i] = self.mat[last]
            moved = int(self.ids[last])
            self.ids[i] = moved
            self.pos[moved] = i
        self.n = last
        if self.ann is not None:
            self.ann.remove(key)
            self._ann_removed += 1
            if self.n <= self.ann_threshold // 2:
                self.ann = None  # small again: exact search
            elif self._ann_removed > self.n // 4:
                self._build_ann()  # many tombstones degrade the graph: rebuild
        return True

    def _build_ann(self) -> None:
        try:  # onnxruntime imported after usearch (its numkong extension) segfaults: usearch 2.26.6, numkong
            import onnxruntime  # noqa: F401  7.8.6, onnxruntime 1.32.0. Loaded first, both work.
        except ImportError:
            pass
        from usearch.index import Index

        ann = Index(ndim=self.dim, metric="ip", dtype="i8", connectivity=self.ann_connectivity,
                    expansion_add=128, expansion_search=self.ann_expansion)
        if self.n:
            ann.add(self.ids[: self.n].copy(), self.mat[: self.n], threads=1)
        self.ann = ann
        self._ann_removed = 0

    def search(self, vec: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, similarities), best first."""
        n = self.n
        if n == 0:
            return self.ids[:0], np.zeros(0, dtype=np.float32)
        if self.ann is None:
            sims = self.mat[:n] @ vec
            if n <= k:
                order = np.argsort(-sims)
            else:
                top = np.argpartition(-sims, k)[:k]
                order = top[np.argsort(-sims[top])]
            return self.ids[order], sims[order]
        found = self.ann.search(vec, max(4 * k, 16))
        keys = found.keys[found.keys != np.iinfo(np.uint64).max] if found.keys.dtype == np.uint64 else found.keys
        rows = np.fromiter((self.pos[int(x)] for x in keys if int(x) in self.pos), dtype=np.int64)
        if rows.size == 0:
            return self.ids[:0], np.zeros(0, dtype=np.float32)
        sims = self.mat[rows] @ vec  # exact re-scoring of the graph's candidates
        order = np.argsort(-sims)[:k]
        return self.ids[rows[order]], sims[order]


class MemoryStore(CacheStore):
    def __init__(self, dim: int = 384, max_entries: int = 100_000, max_bytes: int = 512 << 20,
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
            out.append(Candidate(entry, sim))
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
        if not entry.size:
            entry.size = len(entry.answer or b"") + sum(len(p) for p in entry.pieces or ())
        if not entry.last_used:
            entry.last_used = entry.created
        self.entries[entry.id] = entry
        self.by_exact[entry.exact_key] = entry.id
        self.bytes += entry.size
        if entry.namespace is not None and entry.vector is not None:
            index = self.indexes.get(entry.namespace)
            if index is None:
                index = self.indexes[entry.namespace] = VectorIndex(self.dim, self.ann_threshold)
            index.add(entry.id, np.asarray(entry.vector, dtype=np.float32))
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

    def attach(self, eid: int, namespace: str, vector: np.ndarray, facts: object = None) -> bool:
        """Add an exact-only entry to the semantic layer once its embedding is known (False: gone, or has one)."""
        entry = self.entries.get(eid)
        if entry is None or entry.vector is not None:
            return False
        entry.namespace, entry.vector, entry.facts = namespace, np.asarray(vector, dtype=np.float32).reshape(-1), facts
        index = self.indexes.get(namespace)
        if index is None:
            index = self.indexes[namespace] = VectorIndex(self.dim, self.ann_threshold)
        index.add(eid, entry.vector)
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
