"""A cache store and a cascade verifier written outside the package, as a user would: one class each,
registered under a name (the routing tier of this kind is tests/example_tier.py)."""

from __future__ import annotations

from typing import Any

from pointsman.app.caching import register_store
from pointsman.cache.memory import MemoryStore
from pointsman.cascade.base import AnswerContext, Verdict, Verifier
from pointsman.cascade.validators import register_verifier


class CountingStore(MemoryStore):
    """The in-process store, counting what it was asked to keep (stands for a store of one's own)."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.url = url
        self.puts = 0

    async def add(self, entry: Any, *args: Any, **kwargs: Any) -> Any:
        self.puts += 1
        return await super().add(entry, *args, **kwargs)


@register_store("counting")
def counting_store(url: str, config: Any) -> CountingStore:
    return CountingStore(url, max_entries=config.max_entries)


@register_verifier("no-shouting")
class NoShouting(Verifier):
    """An answer in capitals only is not acceptable."""

    name = "no-shouting"

    async def check(self, item: AnswerContext) -> Verdict | None:
        letters = [c for c in item.text or "" if c.isalpha()]
        if letters and all(c.isupper() for c in letters):
            return Verdict(self.name, 0.0, "shouting", item.text[:40])
        return None
