"""Asyncio micro-batcher: concurrent ``await batcher.embed(text)`` calls share one ONNX run.

One consumer task takes the first waiting request, then collects more for up to ``max_wait_ms``
or until ``max_batch`` are waiting, and encodes them together in a worker thread (so the event
loop never blocks on the model). While a batch is being encoded, new requests queue up and the
next batch starts at once with whatever is waiting: under load batches fill by themselves, so the
default wait is 0 (take what is queued now) and a lone request at idle does not wait at all.

A text the encoder's LRU already holds (a repeated prompt, or the cache's and the router's request
for the same short text) is answered on the event loop without queueing. A short text is also encoded on the
event loop when nothing else would wait for it: ``inline_when`` (the gateway: no other request in flight) says
so, no text is waiting for the worker, and no other text went inline in this turn of the loop. Handing one text to
the worker thread and back costs two thread wake-ups, which on a busy machine wait for a core; on the loop
the run keeps the core the request already has. Each request may name its
own window (``max_tokens``): the router reads a prefix, the semantic cache the full window.
``workers`` batches may run at once (one per core helps throughput under load; default 1).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from typing import Callable, Sequence

import numpy as np

from pointsman.embed.base import Encoder

__all__ = ["EmbedBatcher", "INLINE_MAX_CHARS"]

INLINE_MAX_CHARS = 200  # about 50 tokens: a few milliseconds of the event loop at most

# one waiting request: its text, its window, and the future its (embedding, features) go to
_Item = tuple[str, "int | None", "asyncio.Future[tuple[np.ndarray, np.ndarray]]"]


class EmbedBatcher:
    def __init__(self, encoder: Encoder, max_batch: int = 32, max_wait_ms: float = 0.0,
                 executor: concurrent.futures.Executor | None = None, workers: int = 1,
                 inline_when: Callable[[], bool] | None = None, inline_max_chars: int = INLINE_MAX_CHARS):
        self.encoder = encoder
        self.inline_when = inline_when  # None: every text goes to the worker thread
        self.inline_max_chars = inline_max_chars
        self._inline_turn = False  # a text went inline in this turn of the loop: the others queue (and batch)
        self._waiting = 0  # texts queued for the worker, or in its batch, and not yet answered
        self.model_id = getattr(encoder, "model_id", type(encoder).__name__)  # keys per-request embeddings
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.workers = max(1, int(workers))
        self._own_executor = executor is None
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(
            max_workers=self.workers, thread_name_prefix="pointsman-embed")
        self._cached = getattr(encoder, "cached", None)
        self._inflight: set[asyncio.Task] = set()
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batches = 0       # counters for observability and benchmarks
        self.items = 0
        self.inlined = 0

    def _ensure_started(self) -> tuple[asyncio.AbstractEventLoop, asyncio.Queue[_Item]]:
        loop = asyncio.get_running_loop()
        if self._queue is None or self._task is None or self._task.done() or self._loop is not loop:
            self._loop = loop
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._run(self._queue), name="pointsman-embed-batcher")
        return loop, self._queue

    async def embed_with_features(self, text: str, max_tokens: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(embedding (384,), prompt features (F,)) of one text, read up to ``max_tokens`` tokens
        (default: the encoder's window)."""
        if self._cached is not None:
            found = self._cached(text, max_tokens)
            if found is not None:
                return found
        if self._may_inline(text):
            loop = asyncio.get_running_loop()
            self._inline_turn = True
            loop.call_soon(self._end_inline_turn)  # runs after the tasks already scheduled for this turn
            self.inlined += 1
            emb, feats = self.encoder.encode_with_features([text], max_tokens=max_tokens)
            return emb[0], feats[0]
        loop, queue = self._ensure_started()
        fut: asyncio.Future[tuple[np.ndarray, np.ndarray]] = loop.create_future()
        queue.put_nowait((text, max_tokens, fut))
        self._waiting += 1
        try:
            return await fut
        finally:
            self._waiting -= 1

    def _may_inline(self, text: str) -> bool:
        return (self.inline_when is not None and len(text) <= self.inline_max_chars and not self._inline_turn
                and self._waiting == 0
                and getattr(self.encoder, "loaded", False) and self.inline_when())

    def _end_inline_turn(self) -> None:
        self._inline_turn = False

    async def embed(self, text: str, max_tokens: int | None = None) -> np.ndarray:
        """The L2-normalised embedding (384,) of one text."""
        return (await self.embed_with_features(text, max_tokens))[0]

    async def embed_many(self, texts: Sequence[str]) -> np.ndarray:
        vecs = await asyncio.gather(*(self.embed(t) for t in texts))
        return np.stack(vecs) if vecs else np.zeros((0, self.encoder.dim), dtype=np.float32)

    async def warmup(self) -> None:
        """Load the model in the worker thread (do it at startup, not on the first request)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self.encoder.load)

    async def _run(self, q: asyncio.Queue[_Item]) -> None:
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(self.workers)
        while True:
            first = await q.get()
            batch = [first]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                try:
                    batch.append(q.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(q.get(), timeout))
                except asyncio.TimeoutError:
                    break
            live = [item for item in batch if not item[2].done()]  # skip cancelled waiters
            if not live:
                continue
            await slots.acquire()
            # requests that arrived while we waited for a free worker join this batch
            while len(live) < self.max_batch:
                try:
                    item = q.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if not item[2].done():
                    live.append(item)
            task = loop.create_task(self._encode(live, slots))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _encode(self, live: list[_Item], slots: asyncio.Semaphore) -> None:
        loop = asyncio.get_running_loop()
        try:
            texts = [t for t, _, _ in live]
            windows = [w for _, w, _ in live]
            if all(w is None for w in windows):
                call = functools.partial(self.encoder.encode_with_features, texts)
            else:
                default = self.encoder.max_seq_length
                call = functools.partial(self.encoder.encode_with_features, texts,
                                         max_tokens=[default if w is None else w for w in windows])
            try:
                emb, feats = await loop.run_in_executor(self._executor, call)
            except Exception as exc:  # hand the error to every waiter, keep serving
                for _, _, f in live:
                    if not f.done():
                        f.set_exception(exc)
                return
            self.batches += 1
            self.items += len(live)
            for k, (_, _, f) in enumerate(live):
                if not f.done():
                    f.set_result((emb[k], feats[k]))
        finally:
            slots.release()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        for task in list(self._inflight):
            task.cancel()
        if self._own_executor:
            self._executor.shutdown(wait=False)
