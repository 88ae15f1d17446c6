"""Which encoder a component needs, and one shared embedder per encoder for the whole gateway.

Three encoders exist: ``minilm`` (the contextual transformer: the learned verifier), ``minilm-dup`` (its
top three layers fine-tuned on duplicate questions, shipped as a patch of replacement weights: the semantic
cache, which must tell paraphrases from near-misses; bench/cache/FINETUNE.md) and ``static`` (the token
table distilled from MiniLM: tier-2 routing, which only needs what a prompt is about). A trained artefact
records its encoder's ``model_id``; :func:`encoder_kind` maps that id to a kind (ids from before static
embeddings: minilm).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from pointsman.embed.base import Embedder, Encoder

__all__ = ["Embedders", "encoder_kind", "make_encoder", "default_window", "KINDS", "DUP_PATCH", "INJECTION_PATCH"]

KINDS = ("minilm", "static", "minilm-dup")
# replacement weights for MiniLM, written by bench/cache/finetune.py (their file name is in the model id)
DUP_PATCH = Path(__file__).with_name("models") / "minilm-dup.npz"
# MiniLM fine-tuned to read prompt injections: the injection guard's second stage (bench/guards/finetune.py)
INJECTION_PATCH = Path(__file__).with_name("models") / "minilm-injection.npz"
PATCHES = {"minilm-dup": DUP_PATCH, "minilm-injection": INJECTION_PATCH}


def encoder_kind(model_id: str | None) -> str:
    if model_id and "@static" in model_id:
        return "static"
    return "minilm-dup" if model_id and f"+{DUP_PATCH.stem}@" in model_id else "minilm"


def default_window(kind: str) -> int:
    """How many tokens of a prompt an artefact on this encoder reads unless told otherwise: the static
    table reads almost the whole prompt, MiniLM the routing prefix (each costs ~0.1 ms per token)."""
    if kind == "static":
        from pointsman.embed.static import STATIC_MAX_TOKENS

        return STATIC_MAX_TOKENS
    from pointsman.embed.encoder import ROUTING_MAX_TOKENS

    return ROUTING_MAX_TOKENS


def make_encoder(kind: str, max_seq_length: int | None = None) -> Encoder:
    """A new encoder of ``kind`` (loaded lazily); ``max_seq_length`` overrides its default window."""
    if kind == "static":
        from pointsman.embed.static import StaticEncoder

        return StaticEncoder() if max_seq_length is None else StaticEncoder(max_seq_length=max_seq_length)
    if kind == "minilm" or kind in PATCHES:
        from pointsman.embed.encoder import MAX_SEQ_LENGTH, MiniLMEncoder

        return MiniLMEncoder(max_seq_length=max_seq_length or MAX_SEQ_LENGTH, patch=PATCHES.get(kind))
    raise ValueError(f"unknown encoder {kind!r}; choose one of {', '.join(KINDS)}")


class Embedders:
    """One embedder per encoder kind, made when a stage first asks for it and shared by every stage.

    An expensive encoder (MiniLM) sits behind the micro-batcher and a worker thread; a cheap one
    (``inline``, the static table) runs on the event loop. ``batch=False`` runs every encoder inline
    (offline tools, where there is nothing to batch with). ``given`` supplies ready embedders by kind.
    ``inline_when``: the batchers run a short text on the event loop while it says true (see EmbedBatcher).
    """

    def __init__(self, given: dict[str, Embedder] | None = None, batch: bool = True,
                 inline_when: Callable[[], bool] | None = None) -> None:
        self._by_kind: dict[str, Embedder] = dict(given or {})
        self.batch = batch
        self.inline_when = inline_when

    def get(self, kind: str) -> Embedder:
        found: Embedder | None = self._by_kind.get(kind)
        if found is None:
            encoder = make_encoder(kind)
            if self.batch and not getattr(encoder, "inline", False):
                from pointsman.embed.batcher import EmbedBatcher

                found = EmbedBatcher(encoder, inline_when=self.inline_when)
            else:
                from pointsman.embed.inline import InlineEmbedder

                found = InlineEmbedder(encoder)
            self._by_kind[kind] = found
        return found

    def for_artefact(self, info: dict[str, Any]) -> Embedder:
        """The embedder a trained artefact was trained with (its ``encoder`` field)."""
        return self.get(encoder_kind(info.get("encoder")))

    async def warmup(self) -> None:
        for embedder in list(self._by_kind.values()):
            if hasattr(embedder, "warmup"):
                await embedder.warmup()  # load the models now, not on the first request

    async def close(self) -> None:
        for embedder in list(self._by_kind.values()):
            if hasattr(embedder, "close"):
                await embedder.close()
