"""Verification sampling for the semantic cache: labels from live traffic for the online error bound.

A ``cache.verify.share`` of cacheable requests is sampled (one coin per request, before its outcome is known,
so that the labels are a random sample of requests: cache/online.py). A sampled request is labelled:

* an exact hit, or a miss with no candidate that passed the rule checks: never a wrong reuse, at once;
* a semantic hit: its request is also sent upstream, to the model that made the cached answer, and the two
  answers are compared. Off the client's path by default (it has the cached answer already); on it for
  ``mode: on-path`` or a team of ``on_path_teams``: the client waits and gets the fresh answer when the
  cached one is judged different;
* a miss whose nearest candidate passed the checks but not the threshold: its own fresh answer (the client's,
  no extra call) is compared with that candidate's, once the answer has been sent.

Verification calls go through the gateway's dispatcher (retries, fallbacks of the plan, costs) and each has
its own ledger row (tier ``cache-verify`` or ``cache-verify-judge``, no client key: the operator's spend).
Once they cost ``budget_usd_per_day`` (per gateway process) sampling stops for the day, so that the labels
stay a random sample (misses would otherwise go on being labelled without the hits).

Two answers agree when their texts are equal, or else (no judge) when their embeddings by the cache's encoder
are at least ``answer_similarity`` apart in cosine and the rule checks of cache/checks.py find no numbers or
negation on one side only; with ``judge`` a pool model is asked instead.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
import orjson

from pointsman.cache import Hit, SemanticCache
from pointsman.cache.checks import compare, facts
from pointsman.cache.online import OnlineBound
from pointsman.config.schema import CacheVerifyConfig
from pointsman.embed.base import Embedder
from pointsman.gateway.own_calls import DailyBudget, recorded_call
from pointsman.ledger import BatchLedger
from pointsman.text import text_of

log = logging.getLogger("pointsman.cache")

__all__ = ["CacheVerifier", "answer_text", "judge_messages", "ReplacedHit"]

MAX_IN_FLIGHT = 32  # verification calls at once; beyond, requests are not sampled (decided before the outcome)
MAX_JUDGE_CHARS = 4000
JUDGE_INSTRUCTIONS = ("You compare two answers to the same request. Reply with one word: yes if they give the "
                      "same answer (wording may differ), no if they differ in substance.")


def answer_text(answer: dict[str, Any] | bytes | None) -> str:
    """The text a chat.completion answers with (its tool calls as JSON when it has no text)."""
    if isinstance(answer, bytes | bytearray):
        answer = orjson.loads(answer)
    if not isinstance(answer, dict):
        return ""
    choices = answer.get("choices") or [{}]
    message = (choices[0] or {}).get("message") or {}
    text = text_of(message.get("content"), "")
    return text or (orjson.dumps(message.get("tool_calls")).decode() if message.get("tool_calls") else "")


def judge_messages(request: str, first: str, second: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": JUDGE_INSTRUCTIONS},
            {"role": "user", "content": f"Request:\n{request[:MAX_JUDGE_CHARS]}\n\nAnswer A:\n{first[:MAX_JUDGE_CHARS]}"
                                        f"\n\nAnswer B:\n{second[:MAX_JUDGE_CHARS]}"}]


class ReplacedHit(Hit):
    """A sampled semantic hit whose cached answer was judged different on the client's path: the client gets
    the fresh answer instead (``x-pointsman-cache: replaced``, the entry it replaced)."""

    def headers(self) -> dict[str, str]:
        return {"x-pointsman-cache": "replaced", "x-pointsman-cache-entry": f"{self.entry_id:x}",
                "x-pointsman-cache-similarity": f"{self.similarity:.4f}"}


class CacheVerifier:
    def __init__(self, config: CacheVerifyConfig, cache: SemanticCache, dispatcher: Any, ledger: BatchLedger,
                 pool: Any, embedder: Embedder | None, spawn: Callable[[Coroutine[Any, Any, None]], Any],
                 redact: Callable[[bytes], bytes] = lambda b: b, rng: random.Random | None = None) -> None:
        self.config = config
        self.cache = cache
        self.dispatcher = dispatcher
        self.ledger = ledger
        self.pool = pool
        self.embedder = embedder
        self.spawn = spawn  # runs a coroutine in the background (cancelled when the cache closes)
        self.redact = redact
        self.rng = rng or random.Random()
        acceptance = cache.acceptance
        self.bound = OnlineBound(acceptance.threshold, delta=acceptance.delta, confidence=config.confidence,
                                 min_labels=config.min_labels, window=config.window, max_tenants=config.max_tenants,
                                 min_threshold=config.min_threshold, share=config.share)
        cache.on_reject = self.bound.add_feedback  # client rejects of semantic hits tighten (cache.feedback)
        self.in_flight = 0
        # labels waiting to be counted: a label's threshold decision (O(window)) is made a little later, in one
        # batch, not on the path of the request that gave it
        self._pending: list[tuple[str, float | None, bool]] = []
        self._drain_at: asyncio.TimerHandle | None = None
        self.budget = DailyBudget(config.budget_usd_per_day)
        self.budgets: Any = None  # accounting's limits: verification calls count against their model's (the gateway sets it)
        self.counts = {"sampled": 0, "verified": 0, "agreed": 0, "disagreed": 0, "near_labels": 0, "plain_labels": 0,
                       "replaced": 0, "over_budget": 0, "busy": 0, "failed": 0, "dropped": 0}

    # -- O(1) decisions on the request path ----------------------------------------------------------------
    def threshold(self, tenant: str) -> float:
        return self.bound.threshold(tenant)

    def sample(self) -> bool:
        """Whether this request is sampled (asked before its look-up: hits and misses alike)."""
        if self.rng.random() >= self.config.share:
            return False
        if not self.budget.left():
            self.counts["over_budget"] += 1
            return False
        if self.in_flight >= MAX_IN_FLIGHT:
            self.counts["busy"] += 1
            return False
        self.counts["sampled"] += 1
        return True

    def on_path(self, tenant: str) -> bool:
        return self.config.mode == "on-path" or tenant.partition("|")[2] in self.config.on_path_teams

    def label(self, tenant: str, p: float | None, wrong: bool) -> None:
        if p is None:
            self.counts["plain_labels"] += 1
        self._pending.append((tenant, p, wrong))
        if self._drain_at is None:
            self._drain_at = asyncio.get_running_loop().call_later(0.02, self._drain)

    def _drain(self) -> None:
        self._drain_at = None
        pending, self._pending = self._pending, []
        for tenant, p, wrong in pending:
            self.bound.add(tenant, p, wrong)

    # -- a sampled semantic hit --------------------------------------------------------------------------------
    def check_later(self, body: dict[str, Any], tenant: str, hit: Hit, request_id: str | None) -> None:
        """Off the client's path: it has the cached answer; the label comes when the fresh one is compared."""
        self.in_flight += 1
        self.spawn(self._check(body, tenant, hit, request_id))

    async def _check(self, body: dict[str, Any], tenant: str, hit: Hit, request_id: str | None) -> None:
        try:
            await self.check_now(body, tenant, hit, request_id, counted=True)
        finally:
            self.in_flight -= 1

    async def check_now(self, body: dict[str, Any], tenant: str, hit: Hit, request_id: str | None,
                        counted: bool = False) -> dict[str, Any] | None:
        """Ask upstream, compare, label; the fresh answer when the cached one is judged different, else None
        (also when the check could not be made: the sample is dropped and the client keeps the cached answer)."""
        if not counted:
            self.in_flight += 1
        try:
            if hit.model not in self.pool:  # the model that made the answer left the pool: no like-for-like check
                self.counts["dropped"] += 1
                return None
            plain = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
            fresh = await self._call(f"{request_id or 'req'}-verify", "cache-verify", hit.model,
                                     {**plain, "model": hit.model})
            same = await self.same(_question(body), answer_text(hit.answer), answer_text(fresh), request_id)
            self.counts["verified"] += 1
            self.counts["agreed" if same else "disagreed"] += 1
            self.label(tenant, hit.p_correct, not same)
            return None if same else fresh
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a check is best effort: the client has (or gets) the cached answer
            self.counts["failed"] += 1
            log.info("cache verification of %s failed: %s", request_id, exc)
            return None
        finally:
            if not counted:
                self.in_flight -= 1

    def replacement(self, hit: Hit, fresh: dict[str, Any], model: str) -> ReplacedHit:
        self.counts["replaced"] += 1
        body = self.redact(orjson.dumps(fresh))
        return ReplacedHit("replaced", hit.entry_id, hit.similarity, hit.p_correct, hit.checks, body, None, model, 0.0)

    # -- a sampled miss with a near candidate --------------------------------------------------------------
    def label_near(self, tenant: str, entry_id: int, p: float, answer: dict[str, Any], question: str,
                   request_id: str | None) -> None:
        """After the answer was sent: compare it with the near candidate's (no upstream call unless a judge)."""
        self.in_flight += 1
        self.spawn(self._near(tenant, entry_id, p, answer, question, request_id))

    async def _near(self, tenant: str, entry_id: int, p: float, answer: dict[str, Any], question: str,
                    request_id: str | None) -> None:
        try:
            entry = await self.cache.backend.get(entry_id)
            if entry is None or entry.answer is None:  # gone meanwhile: the label is lost, not guessed
                self.counts["dropped"] += 1
                return
            same = await self.same(question, answer_text(entry.answer), answer_text(answer), request_id)
            self.counts["near_labels"] += 1
            self.label(tenant, p, not same)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001
            self.counts["failed"] += 1
            log.info("cache near-miss label for %s failed: %s", request_id, exc)
        finally:
            self.in_flight -= 1

    # -- comparing two answers -----------------------------------------------------------------------------
    async def same(self, question: str, cached: str, fresh: str, request_id: str | None = None) -> bool:
        if cached.strip() == fresh.strip():
            return True
        if self.config.judge:
            verdict = answer_text(await self._call(f"{request_id or 'req'}-verify-judge", "cache-verify-judge",
                                                   self.config.judge, {
                "model": self.config.judge, "messages": judge_messages(question, cached, fresh), "temperature": 0,
                "max_tokens": 4}))
            return verdict.strip().lower().startswith("yes")
        if self.embedder is None or not cached or not fresh:
            return False
        u, v = await asyncio.gather(self.embedder.embed(cached), self.embedder.embed(fresh))
        cos = float(np.dot(u, v) / max(float(np.linalg.norm(u) * np.linalg.norm(v)), 1e-12))
        if cos < self.config.answer_similarity:
            return False
        return compare(facts(cached), facts(fresh), ("negation", "numbers")).passed

    async def _call(self, record_id: str, tier: str, model: str, body: dict[str, Any]) -> dict[str, Any]:
        return await recorded_call(self.dispatcher, self.ledger, record_id=record_id, tier=tier, model=model,
                                   body=body, reason="cache.verify", budget=self.budget, budgets=self.budgets)

    def snapshot(self) -> dict[str, Any]:
        return {"share": self.config.share, "mode": self.config.mode, "spent_usd_today": round(self.budget.spent_usd, 6),
                "budget_usd_per_day": self.config.budget_usd_per_day, "in_flight": self.in_flight + len(self._pending),
                **self.counts,
                **self.bound.snapshot(self.config.metrics_top)}


def _question(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return text_of(message.get("content"), " ")
    return ""
