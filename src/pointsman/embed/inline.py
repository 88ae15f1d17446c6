"""The embedder interface of :class:`EmbedBatcher` for an encoder cheap enough to run on the event loop.

A static embedding of a short prompt is a tokenizer call, the prompt features and a table look-up
(0.4-0.6 ms at 16 tokens, about 1 ms at 500 characters, ~4 ms at 512 tokens): a hop to a worker
thread costs about as much (measured: a 512-token decision took 4.9 ms p50 through the default
executor, 3.8 ms inline), and there is nothing to batch. The whole prompt is still tokenised (its
length is a feature) and scanned for the features, about 1.2 ms per 1,000 characters, so a long
prompt (over :data:`INLINE_MAX_CHARS`) goes to one worker thread instead of stalling the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import numpy as np

__all__ = ["InlineEmbedder", "INLINE_MAX_CHARS"]

INLINE_MAX_CHARS = 4000  # about 5 ms of work; longer texts are embedded off the event loop


class InlineEmbedder:
    def __init__(self, encoder) -> None:
        self.encoder = encoder
        self.model_id = encoder.model_id
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None  # made for the first long text

    async def embed_with_features(self, text: str, max_tokens: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        if not getattr(self.encoder, "loaded", True):
            await self.warmup()  # never load (on a new machine: distil) on the event loop
        if len(text) > INLINE_MAX_CHARS:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pointsman-static")
            emb, feats = await asyncio.get_running_loop().run_in_executor(
                self._executor, functools.partial(self.encoder.encode_with_features, [text], max_tokens=max_tokens))
        else:
            emb, feats = self.encoder.encode_with_features([text], max_tokens=max_tokens)
        return emb[0], feats[0]

    async def embed(self, text: str, max_tokens: int | None = None) -> np.ndarray:
        return (await self.embed_with_features(text, max_tokens))[0]

    async def warmup(self) -> None:
        """Load (or distil, the first time on a machine) off the event loop."""
        await asyncio.get_running_loop().run_in_executor(None, self.encoder.load)

    async def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
