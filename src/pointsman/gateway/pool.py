"""The model pool: each model's config, provider and breaker, and which models can take a request."""

from __future__ import annotations

from dataclasses import dataclass

from pointsman.accounting.prices import UNPRICED, ModelPrice, TokenUsage, resolve_prices
from pointsman.config.schema import Config, ModelConfig, UnsetPrices
from pointsman.gateway.resilience import CircuitBreaker
from pointsman.providers import Provider, build_provider
from pointsman.providers.transport import Transport
from pointsman.core import RouteContext


@dataclass(slots=True)
class PoolEntry:
    config: ModelConfig
    provider: Provider
    breaker: CircuitBreaker
    capabilities: frozenset[str]
    price: ModelPrice = UNPRICED  # resolved once at start-up (accounting/prices.py)

    @property
    def name(self) -> str:
        return self.config.name

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """USD for a call of this many tokens, none of them cached (estimates, budgets)."""
        return self.price.cost(TokenUsage(prompt_tokens, completion_tokens))

    def cost_of(self, usage: TokenUsage, at: float | None = None) -> float:
        """USD for a call's usage as the provider reported it (cached, cache-write and reasoning tokens)."""
        return self.price.cost(usage, at)


class Pool:
    def __init__(self, config: Config, transport: Transport) -> None:
        server = config.server
        self.entries: dict[str, PoolEntry] = {}
        prices = resolve_prices(config.models)
        for model in config.models:
            price = prices[model.name]
            if isinstance(model.prices, UnsetPrices):  # routing orders and weighs models by the snapshot's list price
                model.prices = UnsetPrices(input=price.rates.input, output=price.rates.output)
            self.entries[model.name] = PoolEntry(model, build_provider(model, transport),
                                                 CircuitBreaker(server.cooldown_failures, server.cooldown_s),
                                                 frozenset(model.capabilities), price)
        # Cheapest first (by a typical 3:1 input:output mix): the order of defaults and fallbacks.
        self.by_price = sorted(self.entries, key=lambda n: self.entries[n].config.prices.blended())
        # what chat requests are routed among: models of kind "embedding" serve /v1/embeddings only
        self.chat_models = [n for n in self.by_price if self.entries[n].config.kind == "chat"]


    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def __getitem__(self, name: str) -> PoolEntry:
        return self.entries[name]

    def eligible(self, ctx: RouteContext) -> list[str]:
        """Models able to take this request (capabilities, context window) and permitted by its compliance
        constraints (guards/compliance.py), cheapest first."""
        needed = ctx.required_capabilities
        tokens = ctx.estimated_tokens
        return [name for name in self.chat_models
                if needed <= self.entries[name].capabilities and self.entries[name].config.context_window >= tokens
                and ctx.permits(name)]

    def why_none_eligible(self, ctx: RouteContext) -> str:
        """Why no pool model can take the request, and what would change that."""
        needed = ctx.required_capabilities
        capable = [n for n in self.chat_models if needed <= self.entries[n].capabilities]
        if ctx.allowed is not None and not any(ctx.permits(n) for n in capable):
            return (f"no model both meets the constraints of this request ({'; '.join(ctx.constraints)}) and supports "
                    f"what it needs ({', '.join(sorted(needed)) or 'nothing special'}; context window included)")
        if not capable:
            listed = ", ".join(f"{n} [{', '.join(sorted(self.entries[n].capabilities)) or 'no capabilities'}]"
                               for n in self.chat_models)
            missing = ", ".join(sorted(needed))
            return (f"no model in the pool supports {missing}; the pool: {listed}. A model that can takes "
                    f"`capabilities: [{missing}]` in its config entry")
        largest = max(capable, key=lambda n: self.entries[n].config.context_window)
        return (f"the request needs about {ctx.estimated_tokens} tokens with the requested output (max_tokens "
                f"included), more than the largest context window of a capable model: "
                f"{self.entries[largest].config.context_window} ({largest}); lower max_tokens or shorten the messages")

    async def aclose(self) -> None:
        for entry in self.entries.values():
            await entry.provider.aclose()
