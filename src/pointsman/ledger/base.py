"""The ledger contract: one record per request, written in batches off the hot path.

`BatchLedger.record()` only appends to an in-memory buffer (no I/O, no lock held for long); a
background thread hands full batches to a `LedgerSink` every `flush_interval_s` or when
`batch_size` records wait. `close()` flushes what is left, so a clean shutdown loses nothing; a
crash loses at most one flush interval.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import deque

import msgspec

log = logging.getLogger("pointsman.ledger")


class Attempt(msgspec.Struct, array_like=True):
    """One call to one upstream model while serving a request."""

    model: str
    status: str  # "ok", or the error kind ("timeout", "rate_limited", "cooldown", ...)
    latency_ms: float
    error: str | None = None
    # Cascades: what the call cost, the verifiers' score of its answer, and what became of it
    # ("accepted", "escalated", "escalated:<defect>", "accepted:<budget>", "final").
    cost_usd: float | None = None
    score: float | None = None
    verdict: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class LedgerRecord(msgspec.Struct):
    id: str
    ts: float  # unix seconds when the request arrived
    requested_model: str
    status: int  # the HTTP status the client got
    chosen_model: str | None = None
    tier: str | None = None
    reason: str | None = None
    stream: bool = False
    key_id: str | None = None  # a hash of the client's key, never the key
    user: str | None = None
    team: str | None = None
    cohort: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    # no usage came from the provider: the tokens (and so the cost) were estimated from the text's length
    cost_estimated: bool = False
    cached_tokens: int = 0  # of prompt_tokens, read from the provider's prompt cache
    ttft_ms: float | None = None
    latency_ms: float = 0.0
    overhead_ms: float = 0.0
    cache_hit: bool = False
    error: str | None = None
    attempts: list[Attempt] = msgspec.field(default_factory=list)
    prompt: str | None = None  # the routing text, kept (in its own table) only with learning.store_prompts
    # the conversation: x-pointsman-session, or an agent's recognised from its opening (routing/sticky.py)
    session: str | None = None


class LedgerSink(ABC):
    """Where batches go. Called from the writer thread only, so a sink needs no locking."""

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def write(self, records: list[LedgerRecord]) -> None: ...

    @abstractmethod
    def close(self) -> None: ...


class BatchLedger:
    def __init__(self, sink: LedgerSink, *, flush_interval_s: float = 0.5, batch_size: int = 512) -> None:
        self.sink = sink
        self.flush_interval_s = flush_interval_s
        self.batch_size = batch_size
        self._buffer: deque[LedgerRecord] = deque()
        self._wake = threading.Event()
        self._write_lock = threading.Lock()  # one writer at a time: the thread, or an explicit flush()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.written = 0
        self.failed_batches = 0

    def start(self) -> None:
        self.sink.open()
        self._thread = threading.Thread(target=self._run, name="pointsman-ledger", daemon=True)
        self._thread.start()

    def record(self, record: LedgerRecord) -> None:
        self._buffer.append(record)  # deque.append is atomic under the GIL
        if len(self._buffer) >= self.batch_size and not self._wake.is_set():
            self._wake.set()

    def _drain(self) -> list[LedgerRecord]:
        batch = []
        buffer = self._buffer
        while buffer:
            batch.append(buffer.popleft())
        return batch

    def _flush(self) -> None:
        with self._write_lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        batch = self._drain()
        if not batch:
            return
        for attempt in range(3):
            try:
                self.sink.write(batch)
                self.written += len(batch)
                return
            except Exception:  # noqa: BLE001 - a sink failure must not kill the writer
                log.exception("ledger write of %d records failed (try %d of 3)", len(batch), attempt + 1)
                time.sleep(0.1 * (attempt + 1))
        self.failed_batches += 1
        # Keep the records for the next flush rather than drop them.
        self._buffer.extendleft(reversed(batch))

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            self._flush()
        self._flush()

    def flush(self) -> None:
        """Write everything recorded so far, now, from the calling thread (tests, admin tooling)."""
        self._flush()

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.sink.close()
