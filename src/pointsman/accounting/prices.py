"""What a call costs: each pool model's price, resolved once at start-up, and the usage it is applied to.

Where a model's price comes from, first match wins:

* its config's ``contract.rate``: the committed rate its contract bills every token at (what finance sees);
* its config's ``prices``: input and output as given; a cached-input or cache-write rate left out is the
  snapshot's discount (its cached rate over its input rate) applied to the given input rate when the snapshot
  knows the model, else the input rate;
* pydantic's genai-prices snapshot (shipped with the package; no network is used), for models served by a
  provider it knows: cached-input, cache-write and reasoning rates, long-context tiers, off-peak hours;
* else the model is unpriced: its calls cost 0, and the gateway names it at start.

The hot path only calls :meth:`ModelPrice.cost` on plain floats; the snapshot is read at start-up only.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, replace
from datetime import datetime, time, timezone
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from pointsman.config.schema import ModelConfig, Prices, UnsetPrices

log = logging.getLogger("pointsman.accounting")

__all__ = ["ModelPrice", "Rates", "TokenUsage", "UNPRICED", "answer_chars", "estimate_usage", "model_price", "price_of_model_id",
           "read_usage", "resolve_prices", "snapshot_price"]

PER_MILLION = 1_000_000
SNAPSHOT_PROVIDERS = {"openai": "openai", "anthropic": "anthropic"}  # our provider kind -> genai-prices' id


class TokenUsage(NamedTuple):
    """One call's tokens. Cached and cache-write tokens are part of `prompt`, reasoning tokens part of
    `completion` (OpenAI's convention, which every provider's usage is translated to)."""

    prompt: int
    completion: int
    cached: int = 0
    cache_write: int = 0
    reasoning: int = 0


def _int(value: Any) -> int:
    try:
        return max(int(value or 0), 0)
    except (TypeError, ValueError):
        return 0


def read_usage(usage: Any) -> TokenUsage | None:
    """The provider's usage as TokenUsage; None when it reported none (then the tokens are estimated)."""
    if not isinstance(usage, dict) or ("prompt_tokens" not in usage and "completion_tokens" not in usage):
        return None
    prompt, completion = _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
    details = usage.get("prompt_tokens_details")
    details = details if isinstance(details, dict) else {}
    cached = min(_int(details.get("cached_tokens")), prompt)
    # Anthropic's cache creation (providers/anthropic.py passes it on under LiteLLM's name)
    cache_write = min(_int(usage.get("cache_creation_input_tokens") or details.get("cache_creation_tokens")),
                      prompt - cached)
    out_details = usage.get("completion_tokens_details")
    reasoning = min(_int(out_details.get("reasoning_tokens")) if isinstance(out_details, dict) else 0, completion)
    return TokenUsage(prompt, completion, cached, cache_write, reasoning)


def estimate_usage(prompt_chars: int, completion_chars: int) -> TokenUsage:
    """Tokens guessed from text length (about four characters a token): for a call that reported no usage."""
    return TokenUsage((prompt_chars + 3) // 4, (completion_chars + 3) // 4)


def answer_chars(answer: dict[str, Any]) -> int:
    """Characters of answer text in a chat completion: its contents and tool-call arguments."""
    total = 0
    for choice in answer.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        total += len(content) if isinstance(content, str) else 0
        for call in message.get("tool_calls") or ():
            arguments = (call.get("function") or {}).get("arguments") if isinstance(call, dict) else None
            total += len(arguments) if isinstance(arguments, str) else 0
    return total


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per million tokens of each kind, and a flat fee per request."""

    input: float
    output: float
    cache_read: float
    cache_write: float
    reasoning: float
    per_request: float = 0.0

    @classmethod
    def flat(cls, input: float, output: float, cache_read: float | None = None, cache_write: float | None = None) -> Rates:
        return cls(float(input), float(output), float(input if cache_read is None else cache_read),
                   float(input if cache_write is None else cache_write), float(output))

    def cost(self, usage: TokenUsage) -> float:
        fresh = max(usage.prompt - usage.cached - usage.cache_write, 0)
        return ((fresh * self.input + usage.cached * self.cache_read + usage.cache_write * self.cache_write
                 + (usage.completion - usage.reasoning) * self.output + usage.reasoning * self.reasoning) / PER_MILLION
                + self.per_request)


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """One model's resolved price. `tiers`: above this many prompt tokens, every token of the call is billed at
    these rates (the providers' long-context "cliff"); `off_peak`: UTC [start, end) seconds of the day with
    their own rates (DeepSeek's discount hours)."""

    model: str
    source: str  # "contract", "config", "genai-prices:<provider>/<model id>", "unpriced"
    rates: Rates
    tiers: tuple[tuple[int, Rates], ...] = ()
    off_peak: tuple[tuple[int, int, Rates], ...] = ()

    @property
    def priced(self) -> bool:
        return self.source != "unpriced"

    def rates_for(self, prompt_tokens: int, at: float | None = None) -> Rates:
        if self.off_peak and at is not None:
            second = int(at) % 86400
            for start, end, rates in self.off_peak:
                if (start <= second < end) if start <= end else (second >= start or second < end):
                    return rates
        chosen = self.rates
        for threshold, rates in self.tiers:  # ascending
            if prompt_tokens > threshold:
                chosen = rates
        return chosen

    def cost(self, usage: TokenUsage, at: float | None = None) -> float:
        """USD for one call; `at` (unix seconds) matters only for models with off-peak hours."""
        return self.rates_for(usage.prompt, at).cost(usage)


UNPRICED_RATES = Rates(0.0, 0.0, 0.0, 0.0, 0.0)
UNPRICED = ModelPrice("", "unpriced", UNPRICED_RATES)


# -- the snapshot (start-up only) ---------------------------------------------------------------------------


def _self_hosted(base_url: str) -> bool:
    """A model served from this machine or a private network has no list price."""
    host = urlsplit(base_url).hostname or ""
    if host == "localhost" or host.endswith((".local", ".internal", ".lan")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_private or address.is_loopback or address.is_link_local


def _lookup(model_ref: str, provider_id: str | None, api_url: str | None) -> tuple[str, Any] | None:
    """(genai-prices' provider id, its model info), or None when the snapshot does not know the model."""
    from genai_prices import data_snapshot  # start-up only: the snapshot takes a moment to load

    try:
        provider, info = data_snapshot.get_snapshot().find_provider_model(model_ref, None, provider_id, api_url)
    except LookupError:
        return None
    return provider.id, info


def _snapshot_model(config: ModelConfig) -> tuple[str, Any] | None:
    """The snapshot's entry for a pool model's upstream: by its base URL, else by its provider kind."""
    if config.base_url:
        return None if _self_hosted(config.base_url) else _lookup(config.upstream_model, None, config.base_url)
    if config.provider not in SNAPSHOT_PROVIDERS:
        return None  # the local model, or a provider kind the snapshot does not know
    return _lookup(config.upstream_model, SNAPSHOT_PROVIDERS[config.provider], None)


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _rates_of(price: Any) -> tuple[Rates, tuple[tuple[int, Rates], ...]] | None:
    """A genai-prices ModelPrice as base rates and long-context tiers; None when it has no token prices."""
    from genai_prices.types import TieredPrices

    keys = {"input": "input_mtok", "output": "output_mtok", "cache_read": "cache_read_mtok",
            "cache_write": "cache_write_mtok", "reasoning": "output_reasoning_mtok"}
    raw = {name: getattr(price, key, None) for name, key in keys.items()}
    if raw["cache_write"] is None:
        raw["cache_write"] = getattr(price, "cache_write_5m_mtok", None)
    if raw["input"] is None and raw["output"] is None:
        return None
    per_request = getattr(price, "requests_kcount", None)
    thresholds = sorted({tier.start for value in raw.values() if isinstance(value, TieredPrices) for tier in value.tiers})

    def at(value: Any, threshold: int) -> float | None:
        if isinstance(value, TieredPrices):
            chosen = value.base
            for tier in value.tiers:
                if tier.start <= threshold:
                    chosen = tier.price
            return float(chosen)
        return _number(value)

    def band(threshold: int) -> Rates:
        values = {name: at(value, threshold) for name, value in raw.items()}
        input_rate, output_rate = values["input"] or 0.0, values["output"] or 0.0
        return Rates(input_rate, output_rate,
                     input_rate if values["cache_read"] is None else values["cache_read"],
                     input_rate if values["cache_write"] is None else values["cache_write"],
                     output_rate if values["reasoning"] is None else values["reasoning"],
                     float(per_request) / 1000 if per_request is not None else 0.0)

    return band(-1), tuple((t, band(t)) for t in thresholds)


def _utc_seconds(moment: time) -> int:
    """Seconds into the UTC day of a time of day (naive times are UTC)."""
    offset = moment.utcoffset()
    local = moment.hour * 3600 + moment.minute * 60 + moment.second
    return (local - (int(offset.total_seconds()) if offset is not None else 0)) % 86400


def snapshot_price(config: ModelConfig, now: datetime | None = None) -> ModelPrice | None:
    """The pool model's price from the genai-prices snapshot, or None when the snapshot does not know it."""
    found = _snapshot_model(config)
    return None if found is None else _price_of(config.name, *found, now=now)


def price_of_model_id(model_id: str) -> ModelPrice | None:
    """A model id's list price from the snapshot, its provider found from the id (report baselines)."""
    found = _lookup(model_id, None, None)
    return None if found is None else _price_of(model_id, *found)


def _price_of(name: str, provider_id: str, info: Any, now: datetime | None = None) -> ModelPrice | None:
    from genai_prices.types import ModelPrice as SnapshotPrice, TimeOfDateConstraint

    now = now or datetime.now(timezone.utc)
    source = f"genai-prices:{provider_id}/{info.id}"
    if isinstance(info.prices, SnapshotPrice):
        resolved = _rates_of(info.prices)
        return None if resolved is None else ModelPrice(name, source, resolved[0], resolved[1])
    # conditional prices: the last one in force wins; daily windows after it apply within their hours
    windows: list[tuple[int, int, Rates]] = []
    base: tuple[Rates, tuple[tuple[int, Rates], ...]] | None = None
    for conditional in reversed(info.prices):
        constraint = conditional.constraint
        if isinstance(constraint, TimeOfDateConstraint):
            rates = _rates_of(conditional.prices)
            if rates is not None:
                windows.append((_utc_seconds(constraint.start_time), _utc_seconds(constraint.end_time), rates[0]))
            continue
        if constraint is None or constraint.active(now):
            base = _rates_of(conditional.prices)
            break
    if base is None:
        first = _rates_of(info.prices[0].prices)
        if first is None:
            return None
        base = first
    return ModelPrice(name, source, base[0], base[1], tuple(windows))


def model_price(config: ModelConfig) -> ModelPrice:
    """The price a pool model's calls are recorded at (the order of precedence is in the module's docstring)."""
    contract = config.contract.rate if config.contract is not None else None
    given = contract or config.prices
    if isinstance(given, UnsetPrices):
        return snapshot_price(config) or replace(UNPRICED, model=config.name)
    listed = snapshot_price(config) if given.cached_input is None or given.cache_write is None else None
    return ModelPrice(config.name, "contract" if contract is not None else "config", _given(given, listed))


def _given(prices: Prices, listed: ModelPrice | None) -> Rates:
    cache_read, cache_write = prices.cached_input, prices.cache_write
    if listed is not None and listed.rates.input > 0:  # the snapshot's discount, applied to the given input rate
        if cache_read is None:
            cache_read = prices.input * listed.rates.cache_read / listed.rates.input
        if cache_write is None:
            cache_write = prices.input * listed.rates.cache_write / listed.rates.input
    return Rates.flat(prices.input, prices.output, cache_read, cache_write)


def resolve_prices(models: list[ModelConfig]) -> dict[str, ModelPrice]:
    """Every pool model's price, once, at start-up; a warning names the models priced nowhere."""
    prices = {model.name: model_price(model) for model in models}
    unpriced = [name for name, price in prices.items() if not price.priced]
    if unpriced:
        log.warning("no price for %s: %s calls are recorded at $0 (the price snapshot does not know them, or they are "
                    "self-hosted); give `prices: {input: ..., output: ...}` (USD per million tokens) in their config",
                    ", ".join(unpriced), "their" if len(unpriced) > 1 else "its")
    return prices
