"""The embedder interface of :class:`EmbedBatcher` for an encoder cheap enough to run on the event loop.

A static embedding is a tokenizer call and a table look-up (well under a millisecond): queueing it
for a worker thread would cost more than computing it, and there is nothing to batch.
"""

from __future__ import annotations

import asyncio
from typing import Sequence

import numpy as np

__all__ = ["InlineEmbedder"]


class InlineEmbedder:
    def __init__(self, encoder) -> None:
        self.encoder = encoder
        self.model_id = encoder.model_id

    async def embed_with_features(self, text: str, max_tokens: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        emb, feats = self.encoder.encode_with_features([text], max_tokens=max_tokens)
        return emb[0], feats[0]

    async def embed(self, text: str, max_tokens: int | None = None) -> np.ndarray:
        return (await self.embed_with_features(text, max_tokens))[0]

    async def embed_many(self, texts: Sequence[str]) -> np.ndarray:
        return self.encoder.encode(list(texts))

    async def warmup(self) -> None:
        """Load (or distil, the first time on a machine) off the event loop."""
        await asyncio.get_running_loop().run_in_executor(None, self.encoder.load)

    async def close(self) -> None:
        return None
