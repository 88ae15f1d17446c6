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
    retries = params.get("max_retries", params.get("num_retries"))
    if retries is not None:
        model["max_retries"] = int(retries)
    return {k: v for k, v in model.items() if v is not None}


# What a LiteLLM proxy config may hold beyond `model_list`: each setting is imported or refused by name, never
# dropped in silence (a dropped `master_key` would serve the migrated gateway without authentication).
_LITELLM_SECTIONS = {
    "general_settings": {"master_key"},
    "router_settings": {"fallbacks", "num_retries", "timeout"},
    "litellm_settings": {"fallbacks", "num_retries", "request_timeout", "drop_params", "set_verbose", "json_logs"},
}
_LITELLM_NO_EFFECT = {"drop_params", "set_verbose", "json_logs"}  # logging and parameter dropping: nothing to map
_OURS = {"policies", "server"}


def _env_name(value: Any, where: str) -> str:
    match = _ENV_REF.match(value) if isinstance(value, str) else None
    if not match:
        raise ConfigError(f"{where} must be `os.environ/NAME`: keys never live in config files")
    return match.group(1)


def _litellm_fallbacks(value: Any, where: str, names: set[str]) -> dict[str, list[str]]:
    """LiteLLM's `[{model: [fallback, ...]}, ...]` → {model: [fallback, ...]}."""
    out: dict[str, list[str]] = {}
    for item in value if isinstance(value, list) else [None]:
        if not isinstance(item, dict):
            raise ConfigError(f"{where} must be a list of {{model_name: [fallback, ...]}} mappings")
        for model, targets in item.items():
            targets = targets if isinstance(targets, list) else [targets]
            unknown = [str(m) for m in [model, *targets] if str(m) not in names]
            if unknown:
                raise ConfigError(f"{where}: {unknown} not in model_list")
            out.setdefault(str(model), []).extend(str(t) for t in targets)
    return out


def from_litellm(data: dict[str, Any]) -> dict[str, Any]:
    """LiteLLM's proxy config → our config dict: `model_list`, the master key (client and admin key), fallbacks,
    timeouts and retries. Any other setting is refused by name."""
    entries = data.get("model_list")
    if not isinstance(entries, list) or not entries:
        raise ConfigError("model_list must be a non-empty list")
    refused = [key for key in data if key not in {"model_list", *_LITELLM_SECTIONS, *_OURS}]
    for section, known in _LITELLM_SECTIONS.items():
        settings = data.get(section) or {}
        if not isinstance(settings, dict):
            raise ConfigError(f"{section} must be a mapping")
        refused += [f"{section}.{key}" for key in settings if key not in known]
    if refused:
        raise ConfigError(f"LiteLLM settings with no Pointsman equivalent: {', '.join(refused)}; remove them, or write "
                          "a Pointsman config (README, Configuration)" + (
                              "; environment_variables: set them in the environment, not the config file"
                              if "environment_variables" in refused else ""))
    taken: set[str] = set()
    models = [_litellm_model(entry, i, taken) for i, entry in enumerate(entries)]
    general, router, settings = (data.get(s) or {} for s in _LITELLM_SECTIONS)
    names = {m["name"] for m in models}
    fallbacks = _litellm_fallbacks(settings["fallbacks"], "litellm_settings.fallbacks", names) if "fallbacks" in settings else {}
    if "fallbacks" in router:
        fallbacks.update(_litellm_fallbacks(router["fallbacks"], "router_settings.fallbacks", names))
    retries = router.get("num_retries", settings.get("num_retries"))
    timeout = router.get("timeout", settings.get("request_timeout"))
    for model in models:
        if model["name"] in fallbacks:
            model["fallbacks"] = fallbacks[model["name"]]
        if retries is not None:
            model.setdefault("max_retries", int(retries))  # a model's own litellm_params win
        if timeout is not None:
            model.setdefault("timeout_s", float(timeout))
    out: dict[str, Any] = {"models": models}
    if "master_key" in general:
        key = _env_name(general["master_key"], "general_settings.master_key")
        out["server"] = {"api_keys_env": [key], "admin_key_env": key}  # LiteLLM's master key is both
    return out


def parse_config(data: Any, source: str = "config") -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    if "model_list" in data and "models" not in data:
        imported = from_litellm(data)
        server = {**imported.get("server", {}), **(data.get("server") or {})}  # ours win, key by key
        data = {**imported, **({"policies": data["policies"]} if "policies" in data else {}),
                **({"server": server} if server else {})}
    try:
        config = msgspec.convert(data, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_explained(exc)}") from None
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    names = [m.name for m in config.models]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{source}: model names must be unique; repeated: {duplicates}")
    for m in config.models:
        unknown = [f for f in m.fallbacks or () if f not in names or f == m.name]
        if unknown:
            raise ConfigError(f"{source}: model {m.name!r}: fallbacks {unknown} are not other pool models")
    shadow = config.learning.shadow
    for name in [*([shadow.judge] if shadow.judge else []), *(shadow.models or [])]:
        if name not in names:
            raise ConfigError(f"{source}: learning.shadow names {name!r}, which is not a pool model")
    return config


_BAD_CHOICE = re.compile(r"Invalid enum value (?P<value>.+) - at `\$\.(?P<path>[^`]+)`")


def _explained(exc: msgspec.ValidationError) -> str:
    """msgspec's message, naming the accepted words when a field takes one of a few (a Literal in the schema)."""
    found = _BAD_CHOICE.fullmatch(str(exc))
    choices = _choices_at(found["path"]) if found else None
    if found is None or not choices:
        return str(exc)
    return f"{found['path']} must be one of {', '.join(map(repr, choices))}, not {found['value']}"


def _choices_at(path: str) -> tuple[Any, ...] | None:
    """The values of the Literal at a msgspec error path (``policies[...].cascade.mode``), if it is one."""
    info: msgspec.inspect.Type = msgspec.inspect.type_info(Config)
    for part in [*re.findall(r"[^.\[\]]+|\[[^\]]*\]", path), None]:  # names, and [0] or [...] (an item)
        if isinstance(info, msgspec.inspect.UnionType):  # `X | None`: X
            types = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
            info = types[0] if len(types) == 1 else info
        if part is None:
            break
        if part.startswith("[") and isinstance(info, msgspec.inspect.ListType):
            info = info.item_type
        elif part.startswith("[") and isinstance(info, msgspec.inspect.DictType):
            info = info.value_type
        elif isinstance(info, msgspec.inspect.StructType):
            field = next((f for f in info.fields if f.encode_name == part), None)
            if field is None:
                return None
            info = field.type
        else:
            return None
    return info.values if isinstance(info, msgspec.inspect.LiteralType) else None


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    return parse_config(data, str(path))
