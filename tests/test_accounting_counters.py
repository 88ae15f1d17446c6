"""The counters' contract, in process and in Redis: all-or-nothing reserve, idempotent per request id, settle to the
real amount once, expired reservations taken back, reconcile to an absolute value, windows as new keys."""

from __future__ import annotations

import asyncio
import time

import pytest

from pointsman.accounting.counters import Counter, MemoryCounters, RedisCounters
from pointsman.accounting.limits import window
from tests.accounting_services import REDIS_URL, redis_client



@pytest.fixture(params=["memory", "redis"])
def store(request):
    if request.param == "memory":
        yield MemoryCounters(), "mem"
        return
    prefix = request.getfixturevalue("redis_prefix")
    yield RedisCounters(REDIS_URL, prefix), prefix  # each test closes it, on the loop it used


def run(coro):
    return asyncio.run(coro)


def test_reserve_is_all_or_nothing_and_idempotent(store):
    counters, p = store

    async def go():
        a, b = f"{p}:a", f"{p}:b"
        ok = await counters.reserve("r1", [Counter(a, 5, 10, 60, 0), Counter(b, 5, 6, 60, 1)], time.time() + 60)
        assert ok is None and await counters.values([a, b]) == [5, 5]
        assert await counters.reserve("r1", [Counter(a, 5, 10, 60, 0)], time.time() + 60) is None  # the same id again
        assert await counters.values([a, b]) == [5, 5]
        refused = await counters.reserve("r2", [Counter(a, 5, 10, 60, 0), Counter(b, 5, 6, 60, 1)], time.time() + 60)
        assert refused is not None and refused.check == 1 and refused.current == 5
        assert await counters.values([a, b]) == [5, 5]  # nothing of a refused request is kept
        await counters.settle("r1", [Counter(a, 2, 0, 60), Counter(b, 1, 0, 60)])
        await counters.settle("r1", [Counter(a, 2, 0, 60), Counter(b, 1, 0, 60)])  # a retried settle
        assert await counters.values([a, b]) == [2, 1]
        await counters.settle("r3", [Counter(a, 4, 0, 60)])  # never reserved (store was down): counted on settle
        assert await counters.values([a]) == [6]
        await counters.close()

    run(go())


def test_expired_reservations_are_taken_back_and_a_late_settle_still_counts(store):
    counters, p = store

    async def go():
        key = f"{p}:usd"
        await counters.reserve("dead", [Counter(key, 100, 1000, 60)], time.time() + 0.2)
        await counters.reserve("slow", [Counter(key, 100, 1000, 60)], time.time() + 0.2)
        assert await counters.values([key]) == [200]
        await asyncio.sleep(0.3)
        assert await counters.sweep() == 2
        assert await counters.values([key]) == [0]
        await counters.settle("slow", [Counter(key, 30, 0, 60)])  # came after its reservation expired
        await counters.settle("slow", [Counter(key, 30, 0, 60)])
        assert await counters.values([key]) == [30]
        assert await counters.reserve("dead", [Counter(key, 100, 1000, 60)], time.time() + 60) is None
        assert await counters.values([key]) == [30]  # an expired id does not reserve again
        await counters.close()

    run(go())


def test_reconcile_is_absolute_and_keeps_open_reservations(store):
    counters, p = store

    async def go():
        key = f"{p}:usd"
        await counters.reserve("open", [Counter(key, 7, 1000, 60)], time.time() + 60)
        assert await counters.reconcile(key, 50, 60) == 57
        assert await counters.reconcile(key, 50, 60) == 57  # twice (or on two replicas): the same value
        await counters.settle("open", [Counter(key, 3, 0, 60)])
        assert await counters.values([key]) == [53]
        await counters.close()

    run(go())


def test_big_amounts_stay_integers_in_redis(redis_prefix):
    async def go():
        counters = RedisCounters(REDIS_URL, redis_prefix)
        key = f"{redis_prefix}:usd"
        big = 10**15 + 1  # a million USD in nano-dollars: Lua would print this number as 1e+15
        assert await counters.reserve("r", [Counter(key, big, 10**17, 60)], time.time() + 60) is None
        await counters.settle("r", [Counter(key, big + 1, 0, 60)])
        assert await counters.values([key]) == [big + 1]
        await counters.close()

    run(go())
    assert redis_client().ttl(f"{redis_prefix}:usd") > 0  # every counter expires on its own


def test_windows_reset_as_new_keys():
    names = {window(m, 1767225599.0)[0] for m in ("usd_per_day", "usd_per_month")}  # 2025-12-31 23:59:59 UTC
    assert names == {"20251231", "202512"}
    assert window("usd_per_day", 1767225600.0) == ("20260101", 1767312000.0)
    assert window("usd_per_month", 1767225599.0)[1] == 1767225600.0  # December resets on 1 January
    assert window("requests_per_minute", 120.5) == ("2", 180.0)


def test_a_burst_of_reservations_shares_a_bounded_set_of_connections(redis_prefix):
    """100 requests arriving at once must not open 100 Redis connections (each a connect and a handshake: a
    cold burst then outlasts store_timeout_s on a busy machine and is refused with 503 limits_unavailable)."""
    name = f"pm-burst-{redis_prefix.rsplit(':', 1)[-1]}"

    async def go():
        counters = RedisCounters(REDIS_URL, redis_prefix, connections=8, client_name=name)
        await counters.start()
        key = f"{redis_prefix}:rpm"
        refused = await asyncio.gather(*(counters.reserve(f"r{i}", [Counter(key, 1, 1000, 60)], time.time() + 60)
                                         for i in range(100)))
        assert refused == [None] * 100 and await counters.values([key]) == [100]
        opened = [c for c in redis_client().client_list() if c.get("name") == name]
        await counters.close()
        return len(opened)

    assert 1 <= run(go()) <= 8
