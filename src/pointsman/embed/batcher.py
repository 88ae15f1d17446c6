"""Asyncio micro-batcher: concurrent ``await batcher.embed(text)`` calls share one ONNX run.

One consumer task takes the first waiting request, then collects more for up to ``max_wait_ms``
or until ``max_batch`` are waiting, and encodes them together in a single worker thread (so the
event loop never blocks on the model). While a batch is being encoded, new requests queue up and
the next batch starts at once with whatever is waiting: under load batches fill by themselves,
at idle a lone request waits at most ``max_wait_ms``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Sequence

import numpy as np

__all__ = ["EmbedBatcher"]


class EmbedBatcher:
    def __init__(self, encoder, max_batch: int = 32, max_wait_ms: float = 1.0,
                 executor: concurrent.futures.Executor | None = None):
        self.encoder = encoder
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self._own_executor = executor is None
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="pointsman-embed")
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batches = 0       # counters for observability and benchmarks
        self.items = 0

    def _ensure_started(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop = loop
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._run(), name="pointsman-embed-batcher")

    async def embed_with_features(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(embedding (384,), prompt features (F,)) of one text."""
        self._ensure_started()
        fut = self._loop.create_future()
        self._queue.put_nowait((text, fut))
        return await fut

    async def embed(self, text: str) -> np.ndarray:
        """The L2-normalised embedding (384,) of one text."""
        return (await self.embed_with_features(text))[0]

    async def embed_many(self, texts: Sequence[str]) -> np.ndarray:
        vecs = await asyncio.gather(*(self.embed(t) for t in texts))
        return np.stack(vecs) if vecs else np.zeros((0, self.encoder.dim), dtype=np.float32)

    async def warmup(self) -> None:
        """Load the model in the worker thread (do it at startup, not on the first request)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self.encoder.load)

    async def _run(self) -> None:
        q = self._queue
        loop = asyncio.get_running_loop()
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
            live = [(t, f) for t, f in batch if not f.done()]  # skip cancelled waiters
            if not live:
                continue
            texts = [t for t, _ in live]
            try:
                emb, feats = await loop.run_in_executor(self._executor, self.encoder.encode_with_features, texts)
            except Exception as exc:  # hand the error to every waiter, keep serving
                for _, f in live:
                    if not f.done():
                        f.set_exception(exc)
                continue
            self.batches += 1
            self.items += len(live)
            for k, (_, f) in enumerate(live):
                if not f.done():
                    f.set_result((emb[k], feats[k]))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        if self._own_executor:
            self._executor.shutdown(wait=False)
