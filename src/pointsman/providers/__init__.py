"""Providers: one file per upstream protocol, one contract in base.py.

Adding a provider is adding a file and a line here. Imports are lazy so that the local model's heavy
runtime loads only when a pool actually holds a local model.
"""

from __future__ import annotations

from importlib import import_module

from pointsman.config.schema import ModelConfig
from pointsman.providers.base import Provider, ProviderError
from pointsman.providers.transport import Transport

# provider name -> "module:class"
PROVIDERS: dict[str, str] = {
    "openai": "pointsman.providers.openai_compat:OpenAICompatProvider",
    "anthropic": "pointsman.providers.anthropic:AnthropicProvider",
    "local": "pointsman.providers.local:LocalProvider",
}


def build_provider(config: ModelConfig, transport: Transport) -> Provider:
    target = PROVIDERS.get(config.provider)
    if target is None:
        raise ValueError(f"model {config.name!r}: unknown provider {config.provider!r}; known: {sorted(PROVIDERS)}")
    module_name, class_name = target.split(":")
    cls = getattr(import_module(module_name), class_name)
    return cls(config, transport)


__all__ = ["PROVIDERS", "Provider", "ProviderError", "build_provider"]
