"""Upstream calls the gateway makes for itself (shadow answers and their judge, cache verification): one home
for how they are made and paid for.

Each goes through the dispatcher (retries, breaker, fallbacks' rules), is priced from the provider's usage as a
client's request is (accounting/prices.py), and gets its own ledger row with no client key: it is the
operator's spend, visible in the spend reports by its tier. A :class:`DailyBudget` stops them for the day.
"""

from __future__ import annotations

import time
from typing import Any

from pointsman.accounting.prices import TokenUsage, read_usage
from pointsman.ledger import BatchLedger, LedgerRecord

__all__ = ["DailyBudget", "recorded_call"]


class DailyBudget:
    """USD a kind of own call may spend per UTC day, counted in this process."""

    def __init__(self, limit_usd: float) -> None:
        self.limit_usd = limit_usd
        self._day = self._today()
        self.spent_usd = 0.0

    @staticmethod
    def _today() -> int:
        return int(time.time() // 86400)

    def left(self) -> bool:
        today = self._today()
        if today != self._day:
            self._day, self.spent_usd = today, 0.0
        return self.spent_usd < self.limit_usd

    def spend(self, usd: float) -> None:
        self.spent_usd += usd


async def recorded_call(dispatcher: Any, ledger: BatchLedger, *, record_id: str, tier: str, model: str,
                        body: dict[str, Any], reason: str, budget: DailyBudget | None = None) -> dict[str, Any]:
    """The upstream's answer to ``body`` from ``model`` (errors are raised after the row is written)."""
    started = time.time()
    record = LedgerRecord(id=record_id, ts=started, requested_model=model, status=0, tier=tier, reason=reason)
    try:
        result = await dispatcher.run([model], body, stream=False)
    except Exception as exc:
        record.status = getattr(exc, "status", 500)
        record.error = str(getattr(exc, "message", exc))[:500]
        record.attempts = list(getattr(exc, "attempts", []) or [])
        raise
    else:
        answer: dict[str, Any] = result.answer or {}
        tokens = read_usage(answer.get("usage")) or TokenUsage(0, 0)
        record.status, record.chosen_model, record.attempts = 200, result.entry.name, result.attempts
        record.prompt_tokens, record.completion_tokens, record.cached_tokens = tokens.prompt, tokens.completion, tokens.cached
        record.cost_usd = result.entry.cost_of(tokens, started)
        if budget is not None:
            budget.spend(record.cost_usd)
        return answer
    finally:
        record.latency_ms = (time.time() - started) * 1000
        ledger.record(record)
