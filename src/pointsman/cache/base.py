"""The cache's small contracts: what an entry is, what a store does, and which requests share an answer.

Two layers share one entry:

* the **exact** layer: ``exact_key`` = SHA-256 of the normalised request (tenant, model or policy,
  every answer-changing parameter, every message). Same bytes in → same answer out.
* the **semantic** layer: ``namespace`` = SHA-256 of everything that changes the answer *except the
  wording of the last user message* (tenant, model or policy, system prompt, tools, sampling and format
  parameters, earlier turns). Inside one namespace the nearest earlier prompt (by embedding) is a
  candidate, which the false-hit guard (``checks.py``) then accepts or rejects.

What counts as "answer-changing" is every request field except a short list known not to change the
answer (``stream``, ``stream_options``, ``user``, ``metadata``, ``store``, ...): an unknown field is
assumed to matter, so a new parameter can split the cache but never merge two different answers.

A store keeps entries (vector + answer bytes + metadata) and answers two questions on the hot path with
no I/O: which entry has this exact key, and which entries of this namespace are nearest to this vector.
Mutations and fetching an answer are ``async`` because the shared store talks to Redis.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
from abc import ABC, abstractmethod
from array import array
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

__all__ = [
    "CacheEntry", "Candidate", "CacheStore", "CachePolicy", "CacheKeys", "request_keys", "new_entry_id",
    "NOT_ANSWER_CHANGING", "entry_bytes", "chunking",
]

# Request fields that never change the answer's content. Everything else is part of the key.
NOT_ANSWER_CHANGING = frozenset({
    "model", "messages",  # keyed separately
    "stream", "stream_options",  # a streamed and a whole answer are the same answer
    "user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key",
})

# What an absent `temperature` means upstream (OpenAI's default is 1.0: sampling).
DEFAULT_TEMPERATURE = 1.0


def new_entry_id() -> int:
    """A random positive 63-bit id: unique across replicas without coordination (and a usearch key)."""
    return int.from_bytes(os.urandom(8), "little") & 0x7FFF_FFFF_FFFF_FFFF or 1


def chunking(pieces: list[str] | list[int] | array | None) -> array | None:
    """A streamed answer's chunking, compactly: the length of each content delta (the deltas themselves are
    the stored answer's content, cut at those lengths; a list of 2-7 character strings cost ~15x more)."""
    if pieces is None or isinstance(pieces, array):
        return pieces
    lengths = [p if isinstance(p, int) else len(p) for p in pieces]
    return array("H" if max(lengths, default=0) < 1 << 16 else "I", lengths)


# What an entry costs besides its variable parts (answer, prompt, chunking), by bench/cache/memory.py on CPython
# 3.11 (64-bit) at the default caps: the CacheEntry with its numbers and keys, its places in the entries, exact-key
# and index maps, usearch's graph node (counted always: a namespace may grow past ann_threshold), and what the
# allocators keep once entries churn (~1.6 KB an entry: RSS grows that much more than the live objects).
ENTRY_OVERHEAD = 3400


def entry_bytes(entry: CacheEntry, dim: int = 384) -> int:
    """The estimated memory of ``entry`` in a process's store (what ``max_bytes`` bounds)."""
    pieces = entry.pieces
    chunks = 0 if pieces is None else sys.getsizeof(pieces) + (
        0 if isinstance(pieces, array) else sum(sys.getsizeof(p) for p in pieces))
    return (ENTRY_OVERHEAD + int(1.25 * (dim + 4)) + sys.getsizeof(entry.answer or b"") + sys.getsizeof(entry.prompt_text)
            + chunks)


@dataclass(slots=True)
class CacheEntry:
    """One cached answer. ``answer`` is the final chat.completion JSON (bytes); for a streamed answer,
    ``pieces`` is its chunking as the content deltas arrived (their lengths, see `chunking`), so a replay keeps it."""

    id: int
    namespace: str | None  # None: exact layer only (the request had no semantic form)
    exact_key: str
    prompt_text: str  # the last user message, for the false-hit checks
    # (dim,) float32, L2-normalised; None: exact layer only. A store may keep it in its own form and drop it from
    # the entry (MemoryStore keeps it, int8, in its index only: a stored entry's vector is None there)
    vector: np.ndarray | None
    answer: bytes | None  # None in a replica's mirror until fetched
    model: str = ""
    streamed: bool = False
    pieces: array | None = None  # see `chunking`
    created: float = field(default_factory=time.time)
    ttl: float | None = None  # seconds; None = no expiry
    hits: int = 0
    last_used: float = 0.0
    min_similarity: float = 0.0  # per-entry floor, raised by rejected feedback (a "demotion")
    rejects: int = 0
    size: int = 0  # estimated bytes in memory (`entry_bytes`), for the byte bound
    tenant: str = ""  # who may be served it ("<key id>|<team>"): feedback and invalidation are scoped by it
    route: str = ""  # the model or policy the request named

    def expired(self, now: float) -> bool:
        return self.ttl is not None and now >= self.created + self.ttl

    def meta(self) -> dict[str, Any]:
        """Everything but the vector and the answer: JSON-safe."""
        return {"id": self.id, "namespace": self.namespace, "exact_key": self.exact_key,
                "prompt_text": self.prompt_text, "model": self.model, "streamed": self.streamed,
                "created": self.created, "ttl": self.ttl, "hits": self.hits, "min_similarity": self.min_similarity,
                "rejects": self.rejects, "size": self.size, "tenant": self.tenant, "route": self.route}


@dataclass(slots=True)
class Candidate:
    entry: CacheEntry
    similarity: float
    vector: np.ndarray | None = None  # the entry's vector as stored, when the store has it at hand


class CacheStore(ABC):
    """The store contract. ``find_exact`` and ``search`` are synchronous and do no I/O (a shared store
    searches its in-process mirror); everything that may talk to a server is ``async``."""

    @abstractmethod
    def find_exact(self, exact_key: str, now: float | None = None) -> CacheEntry | None:
        """The live entry with this exact key, or None."""

    @abstractmethod
    def search(self, namespace: str, vector: np.ndarray, k: int = 4, now: float | None = None) -> list[Candidate]:
        """Up to ``k`` live entries of ``namespace`` nearest to ``vector`` (cosine), best first."""

    @abstractmethod
    async def get(self, entry_id: int) -> CacheEntry | None:
        """The entry with its answer loaded (a shared store may fetch it), or None if gone."""

    @abstractmethod
    async def add(self, entry: CacheEntry) -> int:
        """Insert (or replace the entry with the same exact key); evicts to stay within bounds."""

    @abstractmethod
    async def delete(self, entry_id: int) -> bool: ...

    @abstractmethod
    async def evict(self, now: float | None = None) -> int:
        """Drop expired entries and whatever is over the size bounds (least recently used first)."""

    @abstractmethod
    async def clear(self, namespace: str | None = None) -> int:
        """Delete every entry of ``namespace``, or every entry when None."""

    @abstractmethod
    def touch(self, entry: CacheEntry, now: float) -> None:
        """Record a hit (LRU order, hit count); must not block."""

    @abstractmethod
    async def update(self, entry: CacheEntry) -> None:
        """Persist changed feedback metadata (``min_similarity``, ``rejects``)."""

    async def start(self) -> None:  # noqa: B027 - optional
        """Begin background work (a replica's stream reader)."""

    async def close(self) -> None:  # noqa: B027 - optional
        ...

    @abstractmethod
    def __len__(self) -> int: ...

    def has_namespace(self, namespace: str) -> bool:
        """Whether ``namespace`` may hold entries (a store that cannot tell says True): an empty namespace
        needs no query embedding for its lookup."""
        return True

    async def delete_where(self, predicate: Callable[[CacheEntry], bool]) -> int:
        """Delete every entry whose metadata matches (``answer`` may be None); returns how many."""
        raise NotImplementedError

    def note_served(self, request_id: str, entry_id: int, kind: str, similarity: float) -> None:  # noqa: B027
        """Remember which entry answered a request, for feedback that names the request (best effort, no I/O
        on the caller's path; a shared store makes it visible to the other replicas)."""

    async def find_served(self, request_id: str) -> tuple[int, str, float] | None:
        """(entry id, kind, similarity) of a request another replica answered, if the store shares them."""
        return None


@dataclass(slots=True)
class CachePolicy:
    """What may be stored and served. Defaults are the strict ones."""

    allow_sampled: bool = False  # serve/store requests with temperature > 0
    default_temperature: float = DEFAULT_TEMPERATURE  # what an absent temperature means upstream
    tools_side_effect_free: bool = False  # tool-call answers may be cached
    semantic: bool = True  # the semantic layer (else exact only)
    ttl_s: float | None = 24 * 3600.0
    max_answer_bytes: int = 1 << 20


@dataclass(slots=True)
class CacheKeys:
    exact_key: str
    namespace: str | None  # None: no semantic layer for this request (see `why_not_semantic`)
    query_text: str  # the last user message: what gets embedded and checked
    cacheable: bool  # may be served from and stored into the cache
    reason: str = ""  # why not, when not
    why_not_semantic: str = ""
    tenant: str = ""
    route: str = ""


# -- normalisation -------------------------------------------------------------------------------------
_WS = re.compile(r"\s+")


def _norm_text(text: str) -> str:
    return _WS.sub(" ", text).strip()


def _norm_content(content: Any) -> Any:
    if isinstance(content, str):
        return _norm_text(content)
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                out.append({"type": "text", "text": _norm_text(part["text"])})
            else:
                out.append(part)
        # A list of text parts only is the same prompt as their joined string.
        if all(isinstance(p, dict) and p.get("type") == "text" for p in out):
            return " ".join(p["text"] for p in out)
        return out
    return content


def _norm_message(message: dict[str, Any]) -> dict[str, Any]:
    m = {k: v for k, v in message.items() if v is not None}
    if "content" in m:
        m["content"] = _norm_content(m["content"])
    if m.get("role") == "developer":  # the new name of the system role: same meaning
        m["role"] = "system"
    return m


def _digest(obj: Any) -> str:
    return hashlib.sha256(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)).hexdigest()


def request_keys(body: dict[str, Any], tenant: str | None, route: str | None = None,
                 policy: CachePolicy | None = None, vector_space: str = "") -> CacheKeys:
    """The cache keys of one chat request.

    ``tenant``: who may share answers (the caller's key id, or key id + team); requests of different
    tenants never share an entry. ``route``: the model or policy the request is answered under (default:
    ``body["model"]``). ``vector_space``: the encoder's id, part of the namespace, so that vectors of two
    encoders (a shared store across an upgrade) are never compared.
    """
    policy = policy or CachePolicy()
    messages = body.get("messages") or []
    params = {k: v for k, v in body.items() if k not in NOT_ANSWER_CHANGING and v is not None}
    norm = [_norm_message(m) for m in messages if isinstance(m, dict)]
    route = route or body.get("model") or ""
    route = route if isinstance(route, str) else str(route)
    scope = {"tenant": tenant or "", "route": route, "params": params}
    try:
        exact_key = _digest([scope, norm])
    except orjson.JSONEncodeError:  # orjson reads 1024 levels but writes 254: such a request has no key, so no entry
        return CacheKeys("", None, "", False, "nested too deeply to key", "nested too deeply to key", tenant or "", route)

    cacheable, reason = True, ""
    temperature = body.get("temperature")
    temperature = policy.default_temperature if temperature is None else temperature
    if not isinstance(temperature, int | float) or temperature > 0:
        if not policy.allow_sampled:
            cacheable, reason = False, f"temperature {temperature} > 0"
    n = body.get("n")
    if n not in (None, 1):
        cacheable, reason = False, f"n={n}"
    if not norm:
        cacheable, reason = False, "no messages"

    namespace, query_text, why = None, "", ""
    if norm and norm[-1].get("role") == "user":
        last = norm[-1]
        if isinstance(last.get("content"), str) and set(last) <= {"role", "content"}:
            query_text = last["content"]
            if policy.semantic:
                namespace = "ns:" + _digest([scope, norm[:-1], vector_space] if vector_space else [scope, norm[:-1]])
            else:
                why = "semantic layer off"
        else:
            why = "last user message is not plain text"
            query_text = ""
    else:
        why = "the last message is not the user's"
    if not query_text and not why:
        why = "empty prompt"
        namespace = None
    return CacheKeys(exact_key, namespace, query_text, cacheable, reason, why, tenant or "", route)
