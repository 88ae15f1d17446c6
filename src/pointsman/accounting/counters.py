"""Budget and rate counters: reserve, settle, expire; one contract, in process or in Redis.

A counter is one window of one limit (``{prefix}:d:team=ops:|20260105``: the team's spend on 5 January); a window
that resets is a new counter, which expires on its own, never a SET over a live one. Amounts are integers
(requests, tokens, nano-USD), so sums are exact.

* ``reserve(id, counters, deadline)`` checks every counter (value + amount <= cap) and, only if all pass, adds
  every amount and records the reservation under the request id: one atomic step (a Lua script in Redis), so two
  replicas can never both pass a check the sum of their requests fails. Reserving an id again changes nothing.
* ``settle(id, actual)`` takes the reservation back and adds the real amounts, once per id (a retried settle is a
  no-op); after a reservation expired, or when none was made (the store was down, fail-open), it adds the real
  amounts alone.
* reservations older than their deadline are taken back (every reserve sweeps a few; a background task sweeps
  the rest): a replica killed between reserve and settle leaks nothing past the deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, NamedTuple

log = logging.getLogger("pointsman.accounting")

__all__ = ["Counter", "CounterStore", "MemoryCounters", "RedisCounters", "Refused", "counters_from_url"]

DONE_TTL_S = 900  # how long a settled or expired id is remembered: a retry within it is not counted twice
MAX_CLOSED = 200_000  # in process, ids remembered at most (the oldest forgotten first)
SWEEP_BATCH = 16  # expired reservations taken back per reserve, at most


class Counter(NamedTuple):  # a tuple: made 8 times per request, twice
    key: str
    amount: int
    cap: int  # the limit: value + amount may not exceed it
    expire_s: int  # the window's end plus a margin: the key disappears on its own
    check: int = 0  # which check of the request this is (names the limit in a refusal)


@dataclass(frozen=True, slots=True)
class Refused:
    check: int  # the Counter.check that would be exceeded
    current: int  # its value when refused


class CounterStore(ABC):
    @abstractmethod
    async def reserve(self, request_id: str, counters: list[Counter], deadline: float) -> Refused | None:
        """Add every amount if none passes its cap (None), else nothing (the first refusal). Idempotent per id."""

    @abstractmethod
    async def settle(self, request_id: str, actual: list[Counter]) -> None:
        """Replace the reservation by the real amounts (``cap`` unused). Idempotent per id."""

    @abstractmethod
    async def sweep(self) -> int:
        """Take back the reservations past their deadline; how many."""

    @abstractmethod
    async def values(self, keys: list[str]) -> list[int]: ...

    @abstractmethod
    async def reconcile(self, key: str, settled: int, expire_s: int) -> int:
        """Set a counter to ``settled`` (from the ledger) plus the open reservations on it; the new value."""

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


# -- in process ----------------------------------------------------------------------------------------------
class MemoryCounters(CounterStore):
    """The single-process default. Each call runs to its end without awaiting: atomic on the event loop."""

    def __init__(self) -> None:
        self._values: dict[str, list[float]] = {}  # key -> [value, expires at]
        self._open: dict[str, tuple[float, list[tuple[str, int]]]] = {}  # id -> (deadline, [(key, amount)])
        self._closed: dict[str, tuple[str, float]] = {}  # id -> ("x" expired | "d" done, remembered until)
        self._last_purge = 0.0

    def _get(self, key: str, now: float) -> int:
        slot = self._values.get(key)
        if slot is None or slot[1] <= now:
            return 0
        return int(slot[0])

    def _add(self, key: str, amount: int, expire_s: float, now: float) -> None:
        slot = self._values.get(key)
        if slot is None or slot[1] <= now:
            self._values[key] = [amount, now + expire_s]
        else:
            slot[0] += amount

    def _take_back(self, held: list[tuple[str, int]], now: float) -> None:
        for key, amount in held:
            slot = self._values.get(key)
            if slot is not None and slot[1] > now:
                slot[0] -= amount

    def _sweep(self, now: float, limit: int | None = None) -> int:
        due: list[str] = []
        for rid, (deadline, _) in self._open.items():  # in insertion order, which is deadline order (one timeout)
            if deadline > now or (limit is not None and len(due) >= limit):
                break
            due.append(rid)
        for rid in due:
            self._take_back(self._open.pop(rid)[1], now)
            self._closed[rid] = ("x", now + DONE_TTL_S)
        if now - self._last_purge > 60:  # expired windows and forgotten ids
            self._last_purge = now
            self._values = {k: v for k, v in self._values.items() if v[1] > now}
            self._closed = {k: v for k, v in self._closed.items() if v[1] > now}
        return len(due)

    async def reserve(self, request_id: str, counters: list[Counter], deadline: float) -> Refused | None:
        now = time.time()
        self._sweep(now, SWEEP_BATCH)
        if request_id in self._open or request_id in self._closed:
            return None
        for c in counters:
            current = self._get(c.key, now)
            if current + c.amount > c.cap:
                return Refused(c.check, current)
        for c in counters:
            self._add(c.key, c.amount, c.expire_s, now)
        self._open[request_id] = (deadline, [(c.key, c.amount) for c in counters])
        return None

    async def settle(self, request_id: str, actual: list[Counter]) -> None:
        now = time.time()
        closed = self._closed.get(request_id)
        if closed is not None and closed[0] == "d":
            return
        held = self._open.pop(request_id, None)
        if held is not None:
            self._take_back(held[1], now)
        for c in actual:
            if c.amount:
                self._add(c.key, c.amount, c.expire_s, now)
        self._closed[request_id] = ("d", now + DONE_TTL_S)
        if len(self._closed) > MAX_CLOSED:  # dicts keep insertion order: the first is the oldest
            del self._closed[next(iter(self._closed))]

    async def sweep(self) -> int:
        return self._sweep(time.time())

    async def values(self, keys: list[str]) -> list[int]:
        now = time.time()
        return [self._get(k, now) for k in keys]

    async def reconcile(self, key: str, settled: int, expire_s: int) -> int:
        now = time.time()
        held = sum(amount for _, keys in self._open.values() for k, amount in keys if k == key)
        self._values[key] = [settled + held, now + expire_s]
        return settled + held


# -- Redis ---------------------------------------------------------------------------------------------------
# KEYS: the reservation (a hash: s = r(eserved) | x (expired) | d(one); c = [key, amount, ...] as JSON), the
# pending set (id -> deadline in ms), then the counters. ARGV: now ms, deadline ms, done ttl s, request id,
# the reservation key's prefix, then per counter: amount, cap, expire s.
_SWEEP = """
local function sweep(pending, res_prefix, now, batch)
  local due = redis.call('zrangebyscore', pending, '-inf', now, 'LIMIT', 0, batch)
  for _, rid in ipairs(due) do
    local rk = res_prefix .. rid
    if redis.call('hget', rk, 's') == 'r' then
      local held = cjson.decode(redis.call('hget', rk, 'c'))
      for i = 1, #held, 2 do
        if redis.call('exists', held[i]) == 1 then redis.call('decrby', held[i], held[i + 1]) end
      end
      redis.call('hset', rk, 's', 'x')
    end
    redis.call('zrem', pending, rid)
  end
  return #due
end
"""

_RESERVE = _SWEEP + """
sweep(KEYS[2], ARGV[5], ARGV[1], %d)
if redis.call('exists', KEYS[1]) == 1 then return {1, 0, 0} end
local n = #KEYS - 2
for i = 1, n do
  local current = tonumber(redis.call('get', KEYS[i + 2]) or '0')
  if current + tonumber(ARGV[3 * i + 3]) > tonumber(ARGV[3 * i + 4]) then return {0, i, current} end
end
local held = {}
for i = 1, n do
  local key, amount = KEYS[i + 2], ARGV[3 * i + 3]  -- strings: Lua would print a large number as 1e+15
  redis.call('incrby', key, amount)
  if redis.call('ttl', key) < 0 then redis.call('expire', key, ARGV[3 * i + 5]) end
  held[#held + 1] = key
  held[#held + 1] = amount
end
redis.call('hset', KEYS[1], 's', 'r', 'c', cjson.encode(held))
redis.call('pexpireat', KEYS[1], tonumber(ARGV[2]) + 1000 * tonumber(ARGV[3]))
redis.call('zadd', KEYS[2], ARGV[2], ARGV[4])
return {1, 0, 0}
""" % SWEEP_BATCH

# KEYS: the reservation, the pending set, then the real amounts' counters. ARGV: done ttl s, request id, then per
# counter: amount, expire s.
_SETTLE = """
local state = redis.call('hget', KEYS[1], 's')
if state == 'd' then return 0 end
if state == 'r' then
  local held = cjson.decode(redis.call('hget', KEYS[1], 'c'))
  for i = 1, #held, 2 do
    if redis.call('exists', held[i]) == 1 then redis.call('decrby', held[i], held[i + 1]) end
  end
end
for i = 3, #KEYS do
  local amount = ARGV[2 * i - 3]
  if amount ~= '0' then
    redis.call('incrby', KEYS[i], amount)
    if redis.call('ttl', KEYS[i]) < 0 then redis.call('expire', KEYS[i], ARGV[2 * i - 2]) end
  end
end
redis.call('hset', KEYS[1], 's', 'd')
redis.call('hdel', KEYS[1], 'c')
redis.call('expire', KEYS[1], ARGV[1])
redis.call('zrem', KEYS[2], ARGV[2])
return 1
"""

_SWEEP_ALL = _SWEEP + "return sweep(KEYS[1], ARGV[2], ARGV[1], 1000)"

# KEYS: the counter, the pending set. ARGV: settled amount, expire s, the reservation key's prefix.
_RECONCILE = """
local held = 0
for _, rid in ipairs(redis.call('zrange', KEYS[2], 0, -1)) do
  local rk = ARGV[3] .. rid
  if redis.call('hget', rk, 's') == 'r' then
    local c = cjson.decode(redis.call('hget', rk, 'c'))
    for i = 1, #c, 2 do if c[i] == KEYS[1] then held = held + tonumber(c[i + 1]) end end
  end
end
local value = string.format('%d', tonumber(ARGV[1]) + held)
redis.call('set', KEYS[1], value, 'EX', ARGV[2])
return tonumber(value)
"""


class RedisCounters(CounterStore):
    """Counters in Redis, shared by every replica: one script call per reserve and per settle."""

    def __init__(self, url: str, prefix: str = "pointsman:limits", *, timeout_s: float = 0.5, connections: int = 16,
                 client_name: str = "pointsman-limits", client: Any = None) -> None:
        if client is None:
            import redis.asyncio as aioredis

            # A bounded pool: a burst of requests queues for a few connections instead of opening one each (a
            # connect and a handshake per request, which on a busy machine outlasts store_timeout_s).
            pool = aioredis.BlockingConnectionPool.from_url(
                url, max_connections=connections, timeout=timeout_s, socket_connect_timeout=timeout_s,
                socket_timeout=timeout_s, client_name=client_name)
            client = aioredis.Redis(connection_pool=pool, decode_responses=False)
        self.r = client
        self.timeout_s = timeout_s
        self.prefix = prefix
        self.pending = f"{prefix}:pending"
        self.res_prefix = f"{prefix}:res:"
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)
        self._sweep_all = client.register_script(_SWEEP_ALL)
        self._reconcile = client.register_script(_RECONCILE)

    async def reserve(self, request_id: str, counters: list[Counter], deadline: float) -> Refused | None:
        args: list[Any] = [int(time.time() * 1000), int(deadline * 1000), DONE_TTL_S, request_id, self.res_prefix]
        for c in counters:
            args += [c.amount, c.cap, c.expire_s]
        ok, index, current = await self._reserve(keys=[self.res_prefix + request_id, self.pending,
                                                       *(c.key for c in counters)], args=args)
        return None if ok else Refused(counters[int(index) - 1].check, int(current))

    async def settle(self, request_id: str, actual: list[Counter]) -> None:
        args: list[Any] = [DONE_TTL_S, request_id]
        for c in actual:
            args += [c.amount, c.expire_s]
        await self._settle(keys=[self.res_prefix + request_id, self.pending, *(c.key for c in actual)], args=args)

    async def sweep(self) -> int:
        return int(await self._sweep_all(keys=[self.pending], args=[int(time.time() * 1000), self.res_prefix]))

    async def values(self, keys: list[str]) -> list[int]:
        if not keys:
            return []
        return [int(v) if v is not None else 0 for v in await self.r.mget(keys)]

    async def reconcile(self, key: str, settled: int, expire_s: int) -> int:
        return int(await self._reconcile(keys=[key, self.pending], args=[settled, expire_s, self.res_prefix]))

    async def start(self) -> None:
        """Open a connection and load the scripts before the first request (which would otherwise pay a NOSCRIPT
        round trip). Redis being away at start is not fatal: requests then meet `on_store_error`."""
        try:
            async with asyncio.timeout(self.timeout_s):
                for script in (self._reserve, self._settle, self._sweep_all, self._reconcile):
                    await self.r.script_load(script.script)
        except Exception as exc:  # noqa: BLE001 - Redis down or slow at start
            log.warning("limits store %s not reachable at start: %s", self.prefix, exc)

    async def close(self) -> None:
        await self.r.aclose(close_connection_pool=True)


def counters_from_url(url: str, prefix: str, timeout_s: float, connections: int = 16) -> CounterStore:
    if url == "memory":
        return MemoryCounters()
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisCounters(url, prefix, timeout_s=timeout_s, connections=connections)
    raise ValueError(f"server.limits.store must be 'memory' or a redis:// URL, not {url!r}")
