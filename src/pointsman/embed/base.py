"""The two contracts of embed/: an encoder turns texts into vectors; an embedder serves one text at a
time to the async gateway (batched in a worker thread, or inline when the encoder is cheap).

Encoders: :class:`~pointsman.embed.encoder.MiniLMEncoder` (the transformer),
:class:`~pointsman.embed.static.StaticEncoder` (the token table distilled from it). Embedders:
:class:`~pointsman.embed.batcher.EmbedBatcher`, :class:`~pointsman.embed.inline.InlineEmbedder`.
A new encoder is one file implementing :class:`Encoder` plus a line in ``registry.make_encoder``.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np

__all__ = ["Encoder", "Embedder"]


@runtime_checkable
class Encoder(Protocol):
    model_id: str  # recorded in trained artefacts; registry.encoder_kind maps it back to an encoder
    dim: int
    max_seq_length: int  # the default window: tokens read per text

    def load(self) -> "Encoder": ...

    def tokenize(self, texts: Sequence[str], max_tokens: int | Sequence[int] | None = None
                 ) -> tuple[list[list[int]], np.ndarray]:
        """Token ids cut to the window, and every text's full token count."""

    def encode_ids(self, ids: list[list[int]], progress: bool = False) -> np.ndarray:
        """(n, dim) float32, L2-normalised."""

    def encode_with_features(self, texts: Sequence[str], progress: bool = False,
                             max_tokens: int | Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings and :func:`pointsman.embed.features.prompt_features`."""


@runtime_checkable
class Embedder(Protocol):
    model_id: str  # keys a request's embeddings (routing/base.py RouteContext.embedding)

    async def embed_with_features(self, text: str, max_tokens: int | None = None) -> tuple[np.ndarray, np.ndarray]: ...

    async def embed(self, text: str, max_tokens: int | None = None) -> np.ndarray: ...

    async def warmup(self) -> None: ...

    async def close(self) -> None: ...
