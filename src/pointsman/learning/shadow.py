"""Shadow answers: outcomes for the models routing did not choose.

A ``learning.shadow.share`` of routed requests is, after the client has its answer, also sent to one other
eligible pool model (picked at random, so that comparisons on these rows are unbiased: its propensity is
the share over the number of models it could have been); the judge model then scores both answers, in a
random order, and both scores go to the outcome store (learning/store.py). Every call goes through the
gateway's dispatcher and has its own ledger row (tier ``shadow`` or ``shadow-judge``, no client key: it is
the operator's spend), and all of them stop for the day once they cost ``budget_usd_per_day`` (counted per
gateway process).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from typing import Any

from pointsman.config.schema import ShadowConfig
from pointsman.core import RouteContext
from pointsman.gateway.own_calls import DailyBudget, recorded_call
from pointsman.ledger import BatchLedger, LedgerRecord
from pointsman.text import text_of

log = logging.getLogger("pointsman.learning")

__all__ = ["ShadowSampler", "judge_messages", "parse_verdict"]

MAX_ANSWER_CHARS = 6000  # of each answer shown to the judge
JUDGE_MAX_TOKENS = 16
_VERDICT = re.compile(r"A\s*[=:]\s*(\d+(?:\.\d+)?)\D+?B\s*[=:]\s*(\d+(?:\.\d+)?)", re.IGNORECASE | re.DOTALL)

JUDGE_INSTRUCTIONS = (
    "You grade answers. Read the user's request and two answers, A and B. Rate how well each answer serves the "
    "request, from 1 (useless or wrong) to 10 (excellent). Reply with exactly one line: A=<score> B=<score>")


def judge_messages(request: str, first: str, second: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": JUDGE_INSTRUCTIONS},
            {"role": "user", "content": f"Request:\n{request[:MAX_ANSWER_CHARS]}\n\nAnswer A:\n{first[:MAX_ANSWER_CHARS]}"
                                        f"\n\nAnswer B:\n{second[:MAX_ANSWER_CHARS]}"}]


def parse_verdict(text: str) -> tuple[float, float] | None:
    """(score of A, score of B) in 0..1 from the judge's "A=<1-10> B=<1-10>", None if it said something else."""
    match = _VERDICT.search(text or "")
    if match is None:
        return None
    a, b = float(match.group(1)), float(match.group(2))
    if not (1 <= a <= 10 and 1 <= b <= 10):
        return None
    return (a - 1) / 9, (b - 1) / 9


class ShadowSampler:
    def __init__(self, config: ShadowConfig, pool: Any, dispatcher: Any, ledger: BatchLedger, store: Any,
                 rng: random.Random | None = None) -> None:
        self.config = config
        self.pool = pool
        self.dispatcher = dispatcher
        self.ledger = ledger
        self.store = store  # an OutcomeStore, or a callable giving it (it is opened at start-up)
        self.rng = rng or random.Random()
        self._tasks: set[asyncio.Task[None]] = set()
        self.budget = DailyBudget(config.budget_usd_per_day)
        self.budgets: Any = None  # accounting's limits: shadow calls count against their model's (set by the gateway)
        self.counts = {"sampled": 0, "scored": 0, "over_budget": 0, "failed": 0, "unparsed": 0}

    def candidates(self, ctx: RouteContext, chosen: str) -> list[str]:
        allowed = set(self.config.models) if self.config.models else None
        return [m for m in self.pool.eligible(ctx) if m != chosen and (allowed is None or m in allowed)]

    def wants(self, ctx: RouteContext, tier: str) -> bool:
        """Whether this request gets a shadow answer (decided before answering, so the answer's text is kept)."""
        # a request with personal data or flagged by a guard goes to no more models than it must (guards/)
        if self.config.share <= 0 or tier in ("direct", "cache", "guard") or ctx.has_tools or ctx.sensitive:
            return False
        return self.rng.random() < self.config.share

    def schedule(self, body: dict[str, Any], ctx: RouteContext, record: LedgerRecord, answer: str) -> None:
        """Start the shadow answer and the judging in the background; the client's request is done."""
        chosen = record.chosen_model
        if chosen is None or not answer:
            return
        others = self.candidates(ctx, chosen)  # eligible: within the request's compliance constraints
        if not others or (self.config.judge is not None and not ctx.permits(self.config.judge)):  # the judge reads it too
            return
        if not self.budget.left():
            self.counts["over_budget"] += 1
            return
        shadow = self.rng.choice(others)
        propensity = {chosen: 1.0, shadow: self.config.share / len(others)}
        self.counts["sampled"] += 1
        task = asyncio.create_task(self._run(body, ctx, record.id, chosen, answer, shadow, propensity),
                                   name=f"pointsman-shadow-{record.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _call(self, record_id: str, tier: str, model: str, body: dict[str, Any]) -> str:
        answer = await recorded_call(self.dispatcher, self.ledger, record_id=record_id, tier=tier, model=model,
                                     body=body, reason=f"learning.shadow ({tier})", budget=self.budget,
                                     budgets=self.budgets)
        choices = answer.get("choices") or [{}]
        return text_of((choices[0].get("message") or {}).get("content"), "")

    async def _run(self, body: dict[str, Any], ctx: RouteContext, record_id: str, chosen: str, answer: str,
                   shadow: str, propensity: dict[str, float]) -> None:
        judge = self.config.judge
        assert judge is not None  # the config requires one when share > 0
        try:
            plain = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
            shadow_answer = await self._call(f"{record_id}-shadow", "shadow", shadow, {**plain, "model": shadow})
            if not shadow_answer or not self.budget.left():
                return
            swap = self.rng.random() < 0.5  # the judge sees the routed answer first or second at random
            first, second = (shadow_answer, answer) if swap else (answer, shadow_answer)
            verdict_text = await self._call(f"{record_id}-judge", "shadow-judge", judge, {
                "model": judge, "messages": judge_messages(ctx.routing_text, first, second), "temperature": 0,
                "max_tokens": JUDGE_MAX_TOKENS})
            verdict = parse_verdict(verdict_text)
            if verdict is None:
                self.counts["unparsed"] += 1
                log.info("shadow judge %s gave no verdict for %s: %r", judge, record_id, verdict_text[:80])
                return
            routed, other = (verdict[1], verdict[0]) if swap else verdict
            store = self.store() if callable(self.store) else self.store
            await asyncio.to_thread(store.add_shadow, record_id, {chosen: routed, shadow: other}, judge, propensity)
            self.counts["scored"] += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a shadow is best effort: the client was served long ago
            self.counts["failed"] += 1
            log.info("shadow answer for %s failed: %s", record_id, exc)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
