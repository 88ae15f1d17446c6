"""Budgets and rate limits: the stage that reserves a request's worst case before any upstream call, and settles
it to the real cost once the request is recorded.

Where the stage runs (``Gateway.stages``: authenticate -> read -> cache -> route -> **limits** -> answer): after
routing, because a per-model limit and the worst-case price need the model the router chose (an "auto" request
checked before routing would have to be priced at the dearest pool model, refusing requests a cheap model serves
within budget), and after the cache, because a cache hit costs nothing upstream. The price of that place: a
request refused has been routed first, and tier 3's judge, when it was asked, has been paid for (its cost is part
of the reservation, as already spent).

Per request, for every limit on its key, team, cohort and routed model:

* requests per minute (+1), tokens per minute (prompt estimate + output cap), USD per day and per month (the worst
  case: the prompt estimate times the input price plus the output cap times the output price, at the dearest model
  of the plan, fallbacks and cascade rungs included) are reserved in one atomic step (counters.py); a request any
  counter would take past its limit gets a 429 naming the limit and when its window resets;
* once the request is in the ledger, the reservation is replaced by the real tokens and cost (the ledger row's),
  counted against the model that answered; a failed request settles to what it cost, usually nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote

from pointsman.accounting.counters import Counter, CounterStore, counters_from_url
from pointsman.accounting.directory import KeyDirectory
from pointsman.accounting.keys import METRICS, Limit
from pointsman.errors import GatewayError

if TYPE_CHECKING:
    from pointsman.app.pipeline import Exchange
    from pointsman.config.schema import LimitsConfig
    from pointsman.core import RouteContext, RouteDecision
    from pointsman.gateway.pool import Pool
    from pointsman.ledger import LedgerRecord

__all__ = ["Budgets", "Check", "prompt_tokens_estimate", "worst_case_usd", "window"]

log = logging.getLogger("pointsman.accounting")

NANO = 1_000_000_000  # USD counters count nano-dollars: integers, so sums are exact
_LETTER = {"requests_per_minute": "r", "tokens_per_minute": "t", "usd_per_day": "d", "usd_per_month": "m"}
_KEEP = {"requests_per_minute": 60, "tokens_per_minute": 60, "usd_per_day": 86400, "usd_per_month": 3 * 86400}
_CODES = {"requests_per_minute": "rate_limit_exceeded", "tokens_per_minute": "rate_limit_exceeded",
          "usd_per_day": "budget_exceeded", "usd_per_month": "budget_exceeded"}


def window(metric: str, ts: float) -> tuple[str, float]:
    """(the window's name, when it resets) for a request that arrived at ``ts``; days and months in UTC."""
    if metric in ("requests_per_minute", "tokens_per_minute"):
        minute = int(ts // 60)
        return str(minute), (minute + 1) * 60.0
    day = dt.datetime.fromtimestamp(ts, dt.timezone.utc).date()
    if metric == "usd_per_day":
        start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
        return day.strftime("%Y%m%d"), (start + dt.timedelta(days=1)).timestamp()
    following = dt.datetime(day.year + day.month // 12, day.month % 12 + 1, 1, tzinfo=dt.timezone.utc)
    return day.strftime("%Y%m"), following.timestamp()


def window_start(metric: str, ts: float) -> float:
    if metric in ("requests_per_minute", "tokens_per_minute"):
        return ts // 60 * 60.0
    day = dt.datetime.fromtimestamp(ts, dt.timezone.utc).date()
    first = day if metric == "usd_per_day" else day.replace(day=1)
    return dt.datetime(first.year, first.month, first.day, tzinfo=dt.timezone.utc).timestamp()


def prompt_tokens_estimate(ctx: RouteContext) -> int:
    """An upper estimate without a tokenizer: English runs about 4 characters a token, code, numbers and other
    scripts fewer; 3 keeps most prompts under it. Tools' schemas are prompt tokens too."""
    chars = ctx.total_chars
    tools = ctx.body.get("tools")
    if tools:
        chars += len(str(tools))
    return (chars + 2) // 3 + 4 * len(ctx.messages) + 8


def output_cap(body: dict[str, Any], default: int) -> int:
    """The completion tokens a request may produce: its max_tokens (or the configured default) times its n."""
    asked = body.get("max_completion_tokens") or body.get("max_tokens")
    cap = asked if isinstance(asked, int) and asked > 0 else default
    n = body.get("n")
    return cap * (n if isinstance(n, int) and n > 1 else 1)


def worst_case_usd(decision: RouteDecision, pool: Pool, prompt: int, output: int) -> float:
    """The most the plan can cost: its dearest model (a fallback may answer), or every rung of a cascade (plus a
    second cheap sample when the agreement verifier is on); tier 3's calls are already paid."""

    def cost(name: str) -> float:
        if name not in pool:
            return 0.0
        entry = pool[name]
        cap = entry.config.max_output_tokens
        return entry.cost(prompt, min(output, cap) if cap else output)

    spent = sum(a.cost_usd or 0.0 for a in decision.calls)
    plan = decision.cascade
    if plan is not None:
        rungs = [cost(m) for m in plan.ladder]
        last = max([rungs[-1] if rungs else 0.0, *(cost(m) for m in plan.fallbacks)])
        again = rungs[0] if rungs and "agreement" in getattr(plan.runner.config, "verifiers", ()) else 0.0
        return spent + sum(rungs[:-1]) + last + again
    return spent + max(cost(m) for m in (decision.model, *decision.fallbacks))


class Check(NamedTuple):
    """One counter of one request: which limit and metric it enforces, and when its window resets."""

    limit: Limit
    metric: str
    resets: float

    def unit(self, value: int) -> str:
        if self.metric.startswith("usd"):
            return f"{value / NANO:.6f} USD"
        return f"{value} {'requests' if self.metric == 'requests_per_minute' else 'tokens'}"


@dataclass(slots=True)
class Reservation:
    request_id: str
    routed: str  # the model the limits were checked for
    ts: float
    made: bool  # False: the store was down and the request went on (fail-open); settle still counts it


class Budgets:
    """The limits stage (``stage``), its settlement, and the counters it keeps."""

    def __init__(self, config: LimitsConfig, directory: KeyDirectory, pool: Pool,
                 counters: CounterStore | None = None) -> None:
        self.config = config
        self.directory = directory
        self.pool = pool
        self.counters = counters or counters_from_url(config.store, config.prefix, config.store_timeout_s,
                                                      config.store_connections)
        self.shared = config.store != "memory"
        self.store_errors = 0  # reserve or settle calls the store failed (observability, GET /admin/budgets)
        self.refused = 0
        self._sweeper: asyncio.Task[None] | None = None
        self._day: tuple[int, tuple[str, float], tuple[str, float]] | None = None
        self._stems: dict[tuple[tuple[str, str, str], str], str] = {}

    async def start(self, seed: bool = True) -> None:
        await self.counters.start()
        if seed and not self.shared:  # an in-process store starts empty: today's and this month's spend from the ledger
            try:
                await self.reconcile(self.directory.all_limits())
            except Exception as exc:  # noqa: BLE001 - budgets then count from now
                log.warning("budgets: could not read today's spend from the ledger, counting from now: %s", exc)
        self._sweeper = asyncio.create_task(self._sweep(), name="pointsman-limits-sweep")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        await self.counters.close()

    async def _sweep(self) -> None:
        """Reservations a crashed replica (or a lost settle) left are taken back past their deadline."""
        interval = max(0.2, min(5.0, self.config.reservation_timeout_s / 4))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.counters.sweep()
            except Exception as exc:  # noqa: BLE001 - the store is away; the next reserve sweeps too
                log.debug("limits sweep failed: %s", exc)

    # -- which counters ------------------------------------------------------------------------------------------
    def applicable(self, key_id: str | None, team: str | None, cohort: str | None, model: str) -> list[Limit]:
        found: list[Limit] = []
        for scope, name in (("key", key_id), ("team", team), ("cohort", cohort), ("model", model)):
            if name is not None:
                for limit in self.directory.limits.get((scope, name), ()):
                    if not limit.model or limit.model == model:
                        found.append(limit)
        return found

    def _windows(self, ts: float) -> dict[str, tuple[str, float]]:
        """Every metric's window at ``ts``; the day's and month's are worked out once a day (the hot path)."""
        day = int(ts // 86400)  # Unix time has no leap seconds: a UTC day is 86400 s
        if self._day is None or self._day[0] != day:
            self._day = (day, window("usd_per_day", ts), window("usd_per_month", ts))
        minute = int(ts // 60)
        per_minute = (str(minute), (minute + 1) * 60.0)
        return {"requests_per_minute": per_minute, "tokens_per_minute": per_minute, "usd_per_day": self._day[1],
                "usd_per_month": self._day[2]}

    def _stem(self, limit: Limit, metric: str) -> str:
        stem = self._stems.get((limit.ident, metric))
        if stem is None:
            if len(self._stems) > 10_000:  # limits removed long ago
                self._stems.clear()
            stem = self._stems[(limit.ident, metric)] = (
                f"{self.config.prefix}:{_LETTER[metric]}:{limit.scope}={quote(limit.name, safe='')}|"
                f"{quote(limit.model, safe='')}:")
        return stem

    def counter_key(self, limit: Limit, metric: str, ts: float) -> str:
        return self._stem(limit, metric) + self._windows(ts)[metric][0]

    def _counters(self, limits: list[Limit], ts: float, amounts: dict[str, int],
                  checks: list[Check] | None = None) -> list[Counter]:
        out: list[Counter] = []
        now = time.time()
        windows = self._windows(ts)
        for limit in limits:
            for metric in METRICS:
                cap = getattr(limit, metric)
                if cap is None:
                    continue
                name, resets = windows[metric]
                # kept past its window (a day; a month's three days), for late settles and reconciling
                expire = max(60, int(resets - now) + _KEEP[metric])
                out.append(Counter(self._stem(limit, metric) + name, amounts[metric],
                                   int(cap * NANO) if metric[0] == "u" else int(cap), expire,
                                   len(checks) if checks is not None else 0))
                if checks is not None:
                    checks.append(Check(limit, metric, resets))
        return out

    # -- the stage -----------------------------------------------------------------------------------------------
    async def stage(self, ex: Exchange) -> bool:
        """Reserve the request's worst case on every limit it falls under, or refuse it (429)."""
        decision, record = ex.decision, ex.record
        assert decision is not None and ex.ctx is not None and ex.raw is not None
        limits = self.applicable(record.key_id, record.team, record.cohort, decision.model)
        if not limits:
            return False
        prompt = prompt_tokens_estimate(ex.ctx)
        output = output_cap(ex.raw, self.config.default_max_tokens)
        usd = worst_case_usd(decision, self.pool, prompt, output)
        reservation = await self._reserve(record.id, decision.model, record.ts, limits, prompt + output, usd)
        ex.after.append(lambda: self.settle(reservation, ex.record))
        return False

    async def own_call(self, record_id: str, model: str, tokens: int, usd: float) -> Reservation | None:
        """Reserve a call the gateway makes for itself (a shadow answer, its judge, cache verification) on the limits
        of its model, as a client's call is (``tokens`` and ``usd``: its worst case); None when no limit applies;
        the 429 when one would be exceeded. Settle it with :meth:`settle` and the call's ledger row."""
        limits = self.applicable(None, None, None, model)
        if not limits:
            return None
        return await self._reserve(record_id, model, time.time(), limits, tokens, usd)

    async def _reserve(self, request_id: str, model: str, ts: float, limits: list[Limit], tokens: int,
                       worst_usd: float) -> Reservation:
        usd = math.ceil(worst_usd * NANO)
        checks: list[Check] = []
        counters = self._counters(limits, ts, {"requests_per_minute": 1, "tokens_per_minute": tokens,
                                               "usd_per_day": usd, "usd_per_month": usd}, checks)
        reservation = Reservation(request_id, model, ts, made=True)
        deadline = time.time() + self.config.reservation_timeout_s
        try:
            if self.shared:
                async with asyncio.timeout(self.config.store_timeout_s):
                    refused = await self.counters.reserve(request_id, counters, deadline)
            else:  # in process: no I/O, nothing to wait for
                refused = await self.counters.reserve(request_id, counters, deadline)
        except Exception as exc:  # noqa: BLE001 - Redis down or slow: the configured failure policy decides
            self.store_errors += 1
            if self.config.on_store_error == "closed":
                raise GatewayError(503, f"budgets and rate limits cannot be checked: the limits store is unavailable "
                                        f"({type(exc).__name__}); try again shortly", code="limits_unavailable",
                                   headers={"retry-after": "1"}) from None
            log.warning("limits store unavailable, request %s goes on unchecked (on_store_error: open): %s", request_id, exc)
            refused, reservation.made = None, False
        if refused is not None:
            self.refused += 1
            raise self._refusal(checks[refused.check], counters[refused.check], refused.current)
        return reservation

    def _refusal(self, check: Check, counter: Counter, current: int) -> GatewayError:
        now = time.time()
        wait = max(1, math.ceil(check.resets - now))
        when = dt.datetime.fromtimestamp(check.resets, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        alone = counter.amount > counter.cap
        detail = (f"this request alone may take {check.unit(counter.amount)}, more than the limit of "
                  f"{check.unit(counter.cap)}" if alone else
                  f"{check.unit(current)} used of {check.unit(counter.cap)}, this request may take up to "
                  f"{check.unit(counter.amount)}")
        what = "budget" if check.metric.startswith("usd") else "rate limit"
        message = f"{what} exceeded: {check.limit.label()} {check.metric} ({detail}); resets at {when} (in {wait} s)"
        return GatewayError(429, message, code=_CODES[check.metric], param=check.metric,
                            headers={"retry-after": str(wait), "x-pointsman-limit":
                                     f"{check.limit.scope}:{check.limit.name}{'@' + check.limit.model if check.limit.model else ''} "
                                     f"{check.metric}"})

    async def settle(self, reservation: Reservation, record: LedgerRecord) -> None:
        """The reservation becomes the ledger row's tokens and cost, on the limits of the model that answered."""
        model = record.chosen_model or reservation.routed
        limits = self.applicable(record.key_id, record.team, record.cohort, model)
        usd = round(record.cost_usd * NANO)
        actual = self._counters(limits, reservation.ts, {"requests_per_minute": 1, "usd_per_day": usd, "usd_per_month": usd,
                                                         "tokens_per_minute": record.prompt_tokens + record.completion_tokens})
        for attempt in range(2):  # once more on a broken connection: settling twice is harmless (idempotent)
            try:
                if self.shared:
                    async with asyncio.timeout(self.config.store_timeout_s):
                        await self.counters.settle(reservation.request_id, actual)
                else:
                    await self.counters.settle(reservation.request_id, actual)
                return
            except Exception as exc:  # noqa: BLE001 - the ledger holds the truth; reconcile repairs the counters
                if attempt == 1:
                    self.store_errors += 1
                    log.warning("settling request %s failed (the reservation expires after %g s; `pointsman budgets "
                                "reconcile` repairs the counters from the ledger): %s", reservation.request_id,
                                self.config.reservation_timeout_s, exc)

    # -- usage and reconciling -----------------------------------------------------------------------------------
    async def usage(self, limits: list[Limit], now: float | None = None) -> list[dict[str, Any]]:
        """Each limit with its counters' values in the current windows."""
        now = time.time() if now is None else now
        keys = [(limit, metric, self.counter_key(limit, metric, now)) for limit in limits for metric in METRICS
                if getattr(limit, metric) is not None]
        values = await self.counters.values([k for _, _, k in keys])
        out = []
        for limit in limits:
            used = {metric: (value / NANO if metric.startswith("usd") else value)
                    for (owner, metric, _), value in zip(keys, values) if owner is limit}
            out.append({**limit.public(), "used": used})
        return out

    async def reconcile(self, limits: list[Limit], now: float | None = None) -> list[dict[str, Any]]:
        """Set each USD counter of the current day and month to the ledger's spend plus the open reservations.

        An absolute value, so running it twice, or on two replicas, gives the same counters. Rows a replica has
        not flushed yet (server.ledger_flush_interval_s) are missing from the ledger: run it on quiet traffic."""
        now = time.time() if now is None else now
        store = self.directory.store
        assert store is not None
        column = {"key": "key_id", "team": "team", "cohort": "cohort", "model": "chosen_model"}
        done = []
        for limit in limits:
            for metric in ("usd_per_day", "usd_per_month"):
                if getattr(limit, metric) is None:
                    continue
                since, (_, resets) = window_start(metric, now), window(metric, now)
                spent, _ = await asyncio.to_thread(store.spend, column[limit.scope], limit.name, since, resets, limit.model)
                key = self.counter_key(limit, metric, now)
                value = await self.counters.reconcile(key, round(spent * NANO), int(resets - now) + 86400)
                done.append({"scope": limit.scope, "name": limit.name, "model": limit.model or None, "metric": metric,
                             "ledger_usd": spent, "counter_usd": value / NANO})
        return done
