"""Prompt embeddings: the int8 ONNX MiniLM encoder, cheap prompt features, the asyncio micro-batcher.

Importing this package is cheap: onnxruntime and tokenizers load on first use.
"""

from pointsman.embed.features import FEATURE_NAMES, FEATURES_VERSION, prompt_features

__all__ = ["FEATURE_NAMES", "FEATURES_VERSION", "prompt_features", "MiniLMEncoder", "EmbedBatcher"]


def __getattr__(name):
    if name == "MiniLMEncoder":
        from pointsman.embed.encoder import MiniLMEncoder
        return MiniLMEncoder
    if name == "EmbedBatcher":
        from pointsman.embed.batcher import EmbedBatcher
        return EmbedBatcher
    raise AttributeError(name)
