"""Prompt embeddings: the int8 ONNX MiniLM encoder, the static table distilled from it (routing),
cheap prompt features, the asyncio micro-batcher, and the registry that hands stages their embedder.

Importing this package is cheap: onnxruntime and tokenizers load on first use.
"""

from pointsman.embed.features import FEATURE_NAMES, FEATURES_VERSION, prompt_features

__all__ = ["FEATURE_NAMES", "FEATURES_VERSION", "prompt_features", "MiniLMEncoder", "StaticEncoder", "EmbedBatcher",
           "InlineEmbedder", "Embedders"]

_LAZY = {"MiniLMEncoder": "pointsman.embed.encoder", "StaticEncoder": "pointsman.embed.static",
         "EmbedBatcher": "pointsman.embed.batcher", "InlineEmbedder": "pointsman.embed.inline",
         "Embedders": "pointsman.embed.registry"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
