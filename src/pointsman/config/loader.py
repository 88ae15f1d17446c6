"""Reading a pool config: Pointsman's own YAML, or LiteLLM's `model_list` so users can migrate."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
import yaml

from pointsman.config.schema import Config


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the field."""


# LiteLLM provider prefix -> (our provider, default base URL)
LITELLM_PROVIDERS: dict[str, tuple[str, str | None]] = {
    "openai": ("openai", None),
    "text-completion-openai": ("openai", None),
    "anthropic": ("anthropic", None),
    "groq": ("openai", "https://api.groq.com/openai/v1"),
    "together_ai": ("openai", "https://api.together.xyz/v1"),
    "deepseek": ("openai", "https://api.deepseek.com/v1"),
    "mistral": ("openai", "https://api.mistral.ai/v1"),
    "openrouter": ("openai", "https://openrouter.ai/api/v1"),
    "fireworks_ai": ("openai", "https://api.fireworks.ai/inference/v1"),
    "ollama": ("openai", "http://localhost:11434/v1"),
    "ollama_chat": ("openai", "http://localhost:11434/v1"),
    "hosted_vllm": ("openai", None),
    "vllm": ("openai", None),
    "lm_studio": ("openai", "http://localhost:1234/v1"),
}
_ENV_REF = re.compile(r"^os\.environ/([A-Za-z_][A-Za-z0-9_]*)$")


def _litellm_model(entry: dict[str, Any], index: int, taken: set[str]) -> dict[str, Any]:
    where = f"model_list[{index}]"
    params = entry.get("litellm_params") or {}
    info = entry.get("model_info") or {}
    target = params.get("model")
    if not isinstance(target, str) or "/" not in target:
        if isinstance(target, str):
            target = f"openai/{target}"  # LiteLLM's own default for unprefixed names
        else:
            raise ConfigError(f"{where}.litellm_params.model is required")
    prefix, upstream = target.split("/", 1)
    if prefix not in LITELLM_PROVIDERS:
        raise ConfigError(f"{where}: LiteLLM provider {prefix!r} is not supported yet; supported: {sorted(LITELLM_PROVIDERS)}")
    provider, default_base = LITELLM_PROVIDERS[prefix]
    api_key = params.get("api_key")
    api_key_env = None
    if isinstance(api_key, str):
        match = _ENV_REF.match(api_key)
        if not match:
            raise ConfigError(f"{where}.litellm_params.api_key holds a literal key; keys never live in config files: "
                              f"put it in an environment variable and write `os.environ/NAME`")
        api_key_env = match.group(1)
    name = str(entry.get("model_name") or upstream)
    unique, n = name, 2
    while unique in taken:  # LiteLLM lists several deployments under one name; we keep each as a model
        unique, n = f"{name}#{n}", n + 1
    taken.add(unique)
    capabilities = [cap for cap, flag in (("tools", "supports_function_calling"), ("vision", "supports_vision"),
                                          ("json", "supports_response_schema")) if info.get(flag)]
    model: dict[str, Any] = {"name": unique, "provider": provider, "model": upstream, "api_key_env": api_key_env,
                             "base_url": params.get("api_base") or default_base, "capabilities": capabilities}
    per_token_in = info.get("input_cost_per_token", params.get("input_cost_per_token"))
    per_token_out = info.get("output_cost_per_token", params.get("output_cost_per_token"))
    if per_token_in is not None or per_token_out is not None:
        model["prices"] = {"input": float(per_token_in or 0) * 1e6, "output": float(per_token_out or 0) * 1e6}
    window = info.get("max_input_tokens") or info.get("max_tokens")
    if window:
        model["context_window"] = int(window)
    if params.get("timeout"):
        model["timeout_s"] = float(params["timeout"])
    if params.get("max_retries") is not None:
        model["max_retries"] = int(params["max_retries"])
    return {k: v for k, v in model.items() if v is not None}


def from_litellm(data: dict[str, Any]) -> dict[str, Any]:
    """LiteLLM's proxy config (`model_list`, optional `router_settings.fallbacks`) → our config dict."""
    entries = data.get("model_list")
    if not isinstance(entries, list) or not entries:
        raise ConfigError("model_list must be a non-empty list")
    taken: set[str] = set()
    models = [_litellm_model(entry, i, taken) for i, entry in enumerate(entries)]
    return {"models": models}


def parse_config(data: Any, source: str = "config") -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    if "model_list" in data and "models" not in data:
        data = {**from_litellm(data), **{k: v for k, v in data.items() if k in ("policies", "server")}}
    try:
        config = msgspec.convert(data, Config)
    except (msgspec.ValidationError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from None
    names = [m.name for m in config.models]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{source}: model names must be unique; repeated: {duplicates}")
    return config


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    return parse_config(data, str(path))
