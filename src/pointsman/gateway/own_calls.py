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


def _worst_case(dispatcher: Any, model: str, body: dict[str, Any], default_output: int) -> tuple[int, float]:
    """(tokens, USD) the call may take at most: its text at ~3 characters a token, and its output cap."""
    from pointsman.accounting.limits import output_cap
    from pointsman.text import text_of

    prompt = sum(len(text_of(m.get("content"), " ")) for m in body.get("messages") or () if isinstance(m, dict)) // 3 + 16
    output = output_cap(body, default_output)
    return prompt + output, dispatcher.pool[model].cost(prompt, output)


async def recorded_call(dispatcher: Any, ledger: BatchLedger, *, record_id: str, tier: str, model: str,
                        body: dict[str, Any], reason: str, budget: DailyBudget | None = None,
                        budgets: Any = None) -> dict[str, Any]:
    """The upstream's answer to ``body`` from ``model`` (errors are raised after the row is written). ``budgets``
    (accounting/limits.py Budgets): the call is reserved on its model's limits and settled to its cost, as a
    client's call is; a 429 when a limit would be exceeded."""
    started = time.time()
    record = LedgerRecord(id=record_id, ts=started, requested_model=model, status=0, tier=tier, reason=reason)
    reservation = None
    try:
        if budgets is not None:  # refused (429) as a client's call would be, and in the ledger like one
            worst_tokens, worst_usd = _worst_case(dispatcher, model, body, budgets.config.default_max_tokens)
            reservation = await budgets.own_call(record_id, model, worst_tokens, worst_usd)
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
        if reservation is not None:
            await budgets.settle(reservation, record)
