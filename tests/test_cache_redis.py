"""The shared Redis store with two replicas (two store instances, one real Redis, a unique prefix per test)."""

from __future__ import annotations

import asyncio
import os
import time

import numpy as np
import pytest
import pytest_asyncio

from pointsman.cache import AcceptanceModel, SemanticCache

redis_asyncio = pytest.importorskip("redis.asyncio")
from pointsman.cache.redis import RedisStore  # noqa: E402
from tests.conftest import skip_unless_service  # noqa: E402

pytestmark = pytest.mark.asyncio(loop_scope="session")  # the fixture's background tasks share the test's loop

URL = os.environ.get("POINTSMAN_TEST_REDIS", "redis://127.0.0.1:6379/0")


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
    return v / np.linalg.norm(v)


def near(v: np.ndarray, cos: float, seed: int = 99) -> np.ndarray:
    r = np.random.default_rng(seed).standard_normal(v.shape[0]).astype(np.float32)
    r -= (r @ v) * v
    r /= np.linalg.norm(r)
    return (cos * v + np.sqrt(1 - cos * cos) * r).astype(np.float32)


def body(text: str) -> dict:
    return {"model": "auto", "temperature": 0, "messages": [{"role": "user", "content": text}]}


def answer(text: str = "42") -> dict:
    return {"id": "c", "object": "chat.completion", "created": 1, "model": "small",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}


async def _redis_up() -> bool:
    client = redis_asyncio.Redis.from_url(URL)
    try:
        return bool(await asyncio.wait_for(client.ping(), 1.0))
    except Exception:  # noqa: BLE001
        return False
    finally:
        await client.aclose()


@pytest_asyncio.fixture(loop_scope="session")
async def replicas(request):
    if not await _redis_up():
        skip_unless_service(f"no Redis at {URL}")
    prefix = f"pointsman-test:{request.node.name}:{os.urandom(4).hex()}"
    stores = [RedisStore(URL, prefix, block_ms=200, touch_flush_s=0.05, max_entries=50) for _ in range(2)]
    caches = [SemanticCache(s, acceptance=AcceptanceModel(threshold=0.0)) for s in stores]
    for c in caches:
        await c.start()
    yield caches
    for c in caches:
        await c.close()
    cleaner = RedisStore(URL, prefix)
    await cleaner.destroy()
    leftover = [k async for k in cleaner.r.scan_iter(match=f"{prefix}:*".encode())]
    await cleaner.r.aclose()
    assert leftover == []


async def wait_for(predicate, timeout: float, t0: float | None = None) -> float:
    """Seconds from t0 (default: now) until predicate() holds; fails after timeout."""
    t0 = time.perf_counter() if t0 is None else t0
    while not predicate():
        if time.perf_counter() - t0 > timeout:
            raise AssertionError(f"not within {timeout}s")
        await asyncio.sleep(0.0005)
    return time.perf_counter() - t0


async def test_two_replicas_see_each_others_writes_within_the_bound(replicas):
    a, b = replicas
    bound = RedisStore.PROPAGATION_BOUND_S
    delays = []
    for i in range(20):
        k = a.keys(body(f"What is {i} squared?"), "t1")
        t0 = time.perf_counter()  # from the start of A's write (its own round trip included)
        eid = await a.store(k.exact_key, k.namespace, unit(i), k.query_text, answer(str(i * i)))
        delays.append(await wait_for(lambda: b.backend.find_exact(k.exact_key) is not None, bound, t0))
        hit = await b.lookup(k.exact_key, k.namespace, unit(i), k.query_text)  # answer fetched from Redis
        assert hit is not None and hit.entry_id == eid and b"\"" + str(i * i).encode() in hit.answer
    # a semantic hit on replica B searches B's mirror: no round trip for the search
    k = b.keys(body("What is 3 squared, please?"), "t1")
    hit = await b.lookup(k.exact_key, k.namespace, near(unit(3), 0.97), k.query_text)
    assert hit is not None and hit.kind == "semantic"
    assert max(delays) < bound
    print(f"propagation delay: median {np.median(delays) * 1000:.2f} ms, max {max(delays) * 1000:.2f} ms")


async def test_cross_tenant_isolation_with_two_replicas(replicas):
    a, b = replicas
    k1 = a.keys(body("Summarise our Q3 board minutes."), "tenant-1")
    await a.store(k1.exact_key, k1.namespace, unit(7), k1.query_text, answer("secret"))
    await wait_for(lambda: len(b.backend) == 1, RedisStore.PROPAGATION_BOUND_S)
    k2 = b.keys(body("Summarise our Q3 board minutes."), "tenant-2")
    assert k2.exact_key != k1.exact_key and k2.namespace != k1.namespace
    assert await b.lookup(k2.exact_key, k2.namespace, unit(7), k2.query_text) is None
    assert await b.lookup(k1.exact_key, k1.namespace, unit(7), k1.query_text) is not None


async def test_errors_never_cached_with_two_replicas(replicas):
    a, b = replicas
    k = a.keys(body("q"), "t1")
    assert await a.store(k.exact_key, k.namespace, unit(1), k.query_text, {"error": {"message": "x"}}, status=502) is None
    bad = answer("partial")
    bad["choices"][0]["finish_reason"] = "length"
    assert await a.store(k.exact_key, k.namespace, unit(1), k.query_text, bad) is None
    await asyncio.sleep(0.05)
    assert len(a.backend) == 0 and len(b.backend) == 0
    assert [x async for x in a.backend.r.scan_iter(match=f"{a.backend.prefix}:e:*".encode())] == []


async def test_deletes_feedback_and_invalidation_propagate(replicas):
    a, b = replicas
    bound = RedisStore.PROPAGATION_BOUND_S
    k = a.keys(body("How do I learn to code fast?"), "t1")
    eid = await a.store(k.exact_key, k.namespace, unit(2), k.query_text, answer())
    await wait_for(lambda: eid in b.backend.mirror.entries, bound)
    q = b.keys(body("How can I learn coding quickly?"), "t1")
    hit = await b.lookup(q.exact_key, q.namespace, near(unit(2), 0.93), q.query_text)
    assert hit is not None
    await b.feedback(eid, accepted=False)  # B demotes; A learns of it through the stream
    await wait_for(lambda: a.backend.mirror.entries[eid].min_similarity > 0.93, bound)
    assert await a.lookup(q.exact_key, q.namespace, near(unit(2), 0.93), q.query_text) is None
    await a.invalidate(entry_id=eid)
    await wait_for(lambda: len(b.backend) == 0, bound)
    for i in range(3):
        k = a.keys(body(f"q{i}"), "t1")
        await a.store(k.exact_key, k.namespace, unit(10 + i), k.query_text, answer())
    await wait_for(lambda: len(b.backend) == 3, bound)
    assert await b.invalidate(all=True) == 3
    await wait_for(lambda: len(a.backend) == 0, bound)


async def test_new_replica_resyncs_and_global_size_bound(replicas):
    a, b = replicas
    for i in range(60):  # max_entries=50
        k = a.keys(body(f"question {i}"), "t1")
        await a.store(k.exact_key, k.namespace, unit(i), k.query_text, answer())
    assert await a.backend.r.zcard(a.backend.k_lru) == 50
    await wait_for(lambda: len(b.backend) == 50, 1.0)
    late = RedisStore(URL, a.backend.prefix)
    await late.start()
    try:
        assert len(late) == 50 and late.resyncs == 1
        k = a.keys(body("question 59"), "t1")
        assert late.find_exact(k.exact_key) is not None
        assert late.find_exact(a.keys(body("question 0"), "t1").exact_key) is None  # evicted globally
        full = await late.get(late.find_exact(k.exact_key).id)
        assert full.answer is not None
    finally:
        await late.close()


async def test_a_hit_on_an_entry_deleted_before_the_touch_flush_leaves_no_key_behind(replicas):
    a, _ = replicas
    k = a.keys(body("Who painted the Mona Lisa?"), "t1")
    eid = await a.store(k.exact_key, k.namespace, unit(5), k.query_text, answer("Leonardo"))
    assert await a.lookup(k.exact_key, k.namespace, unit(5), k.query_text) is not None  # a touch is pending
    await a.invalidate(entry_id=eid)
    await a.backend._flush_once()
    assert not await a.backend.r.exists(a.backend._k_entry(eid))  # HINCRBY would have recreated the hash


async def test_invalidate_by_tenant_and_model_reads_redis_not_only_the_mirror(replicas):
    a, b = replicas
    for i, (tenant, model) in enumerate([("k1|", "small"), ("k1|ops", "small"), ("k2|", "big")]):
        k = a.keys(body(f"question {i}"), tenant, route="auto")
        await a.store(k.exact_key, k.namespace, unit(20 + i), k.query_text, answer(), model=model, tenant=tenant,
                      route="auto")
    a.backend.mirror.remove(next(iter(a.backend.mirror.entries)))  # a mirror that lags Redis
    assert await a.invalidate(tenant_key="k1") == 2
    await wait_for(lambda: len(b.backend) == 1, RedisStore.PROPAGATION_BOUND_S)
    assert await b.invalidate(model="big") == 1 and await b.invalidate(model="auto") == 0
    await wait_for(lambda: len(a.backend) == 0, RedisStore.PROPAGATION_BOUND_S)


async def test_a_streamed_answer_s_chunking_and_the_vector_reach_the_other_replica(replicas):
    """The chunking travels as lengths, the vector as float32; the other replica's mirror keeps the vector in its
    index only (int8) and replays the original chunks."""
    a, b = replicas
    pieces = ["Use ", "list.", "reverse()", "."]
    k = a.keys(body("How do I reverse a list in Python?"), "t|")
    eid = await a.store(k.exact_key, k.namespace, unit(3), k.query_text, answer("".join(pieces)), pieces=pieces)
    await wait_for(lambda: eid in b.backend.mirror.entries, 2.0)
    mirrored = b.backend.mirror.entries[eid]
    assert mirrored.vector is None and eid in b.backend.mirror.indexes[mirrored.namespace]
    assert mirrored.size == a.backend.mirror.entries[eid].size > len(answer("".join(pieces))["choices"][0]["message"]["content"])
    k2 = b.keys(body("How can I reverse a list in Python?"), "t|")
    hit = await b.lookup(k2.exact_key, k2.namespace, near(unit(3), 0.97), k2.query_text)
    assert hit is not None and hit.kind == "semantic" and list(hit.pieces) == [len(p) for p in pieces]
    events = hit.sse()
    assert [e for e in events if b'"content":"list."' in e]  # the original chunks


async def test_a_burst_of_look_ups_shares_a_bounded_set_of_connections(replicas):
    """100 concurrent requests must not open 100 Redis connections (a connect and a handshake each, which on a
    busy machine outlast the cache's store_timeout_s and turn hits into misses)."""
    a = replicas[0]
    keys = a.keys(body("How tall is the Eiffel tower?"), "t")
    entry_id = await a.store(keys.exact_key, keys.namespace, unit(1), keys.query_text, answer("330 m"), model="m")
    name = f"pm-cache-burst-{os.urandom(3).hex()}"
    store = RedisStore(URL, a.backend.prefix, block_ms=200, connections=8, client_name=name)
    cache = SemanticCache(store, acceptance=AcceptanceModel(threshold=0.0))
    await cache.start()  # another replica: its mirror holds the entry's metadata, the answer stays in Redis
    try:
        assert store.mirror.entries[entry_id].answer is None
        found = await asyncio.gather(*(store.get(entry_id) for _ in range(100)))
        assert all(e is not None and e.id == entry_id for e in found)
        client = redis_asyncio.Redis.from_url(URL)
        try:
            opened = [c for c in await client.client_list() if c.get("name") == name]
        finally:
            await client.aclose()
        assert 1 <= len(opened) <= 8, len(opened)
    finally:
        await cache.close()
