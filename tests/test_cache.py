"""The semantic cache in process: key rules, eviction, never-cache rules, SSE replay, checks, learning, feedback."""

from __future__ import annotations

import asyncio
import sys

import json

import numpy as np
import pytest

from pointsman.cache import (AcceptanceModel, CacheControl, CachePolicy, MemoryStore, SemanticCache, StreamRecorder,
                             is_refusal, replay_as_sse, uncacheable_reason)
from pointsman.cache import default_acceptance_model
from pointsman.cache.checks import CHECK_NAMES, FEATURE_NAMES, clopper_pearson_upper, compare, facts, pair_features
from pointsman.cache.base import ENTRY_OVERHEAD, entry_bytes
from pointsman.cache.memory import VectorIndex

DIM = 384


def unit(seed: int, dim: int = DIM) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def near(v: np.ndarray, cos: float, seed: int = 99) -> np.ndarray:
    """A unit vector at cosine `cos` from `v`."""
    r = np.random.default_rng(seed).standard_normal(v.shape[0]).astype(np.float32)
    r -= (r @ v) * v
    r /= np.linalg.norm(r)
    out = cos * v + np.sqrt(1 - cos * cos) * r
    return (out / np.linalg.norm(out)).astype(np.float32)


def body(text: str = "How do I reverse a list in Python?", **kw) -> dict:
    b = {"model": "auto", "messages": [{"role": "user", "content": text}], "temperature": 0}
    b.update(kw)
    return b


def answer(text: str = "Use list.reverse() or slicing.", finish: str = "stop", **message) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "small",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, **message},
                         "finish_reason": finish}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17}}


def AlwaysAccept() -> AcceptanceModel:  # noqa: N802 - reads like a class at the call sites
    return AcceptanceModel(threshold=0.0)  # every candidate that passes the rule checks is served


async def put(cache: SemanticCache, b: dict, vec: np.ndarray | None = None, tenant: str = "t1",
              text: str = "Use list.reverse() or slicing.") -> int | None:
    k = cache.keys(b, tenant)
    return await cache.store(k.exact_key, k.namespace, vec, k.query_text, answer(text), model="small")


async def ask(cache: SemanticCache, b: dict, vec: np.ndarray | None = None, tenant: str = "t1"):
    k = cache.keys(b, tenant)
    assert k.cacheable, k.reason
    return await cache.lookup(k.exact_key, k.namespace, vec, k.query_text)


# -- key rules ------------------------------------------------------------------------------------------
async def test_exact_hit_and_whitespace_normalisation():
    cache = SemanticCache()
    await put(cache, body("How do I reverse a list in Python?"))
    hit = await ask(cache, body("  How do I   reverse a list in Python? "))
    assert hit is not None and hit.kind == "exact" and hit.similarity == 1.0
    assert json.loads(hit.body())["choices"][0]["message"]["content"].startswith("Use list.reverse")


@pytest.mark.parametrize("change", [
    {"tenant": "t2"},
    {"model": "big"},
    {"system": "You are a pirate."},
    {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
    {"max_tokens": 5},
    {"top_p": 0.5},
    {"response_format": {"type": "json_object"}},
    {"earlier": True},
])
async def test_anything_that_changes_the_answer_misses(change):
    cache = SemanticCache(acceptance=AlwaysAccept())
    v = unit(1)
    await put(cache, body(), v)
    b = body()
    tenant = change.get("tenant", "t1")
    if "model" in change:
        b["model"] = change["model"]
    if "system" in change:
        b["messages"].insert(0, {"role": "system", "content": change["system"]})
    if "earlier" in change:
        b["messages"][:0] = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    for field in ("tools", "max_tokens", "top_p", "response_format"):
        if field in change:
            b[field] = change[field]
    k = cache.keys(b, tenant)
    base = cache.keys(body(), "t1")
    assert k.exact_key != base.exact_key and k.namespace != base.namespace
    assert await cache.lookup(k.exact_key, k.namespace, v, k.query_text) is None  # not even the same vector
    assert await ask(cache, body(), v) is not None  # the original still hits


def test_semantic_namespace_ignores_only_the_last_user_wording():
    a = SemanticCache().keys(body("How do I reverse a list in Python?"), "t1")
    b = SemanticCache().keys(body("What is the way to reverse a Python list?", stream=True, user="u9"), "t1")
    assert a.namespace == b.namespace and a.exact_key != b.exact_key
    assert b.query_text == "What is the way to reverse a Python list?"


def test_temperature_rules():
    cache = SemanticCache()
    assert not cache.keys(body(temperature=0.7), "t").cacheable
    no_temp = body()
    del no_temp["temperature"]
    assert not cache.keys(no_temp, "t").cacheable  # absent = the upstream default, 1.0
    assert cache.keys(body(temperature=0), "t").cacheable
    assert not cache.keys(body(n=2), "t").cacheable
    lenient = SemanticCache(policy=CachePolicy(allow_sampled=True))
    assert lenient.keys(body(temperature=0.7), "t").cacheable


def test_no_semantic_layer_for_non_text_or_non_user_last_turn():
    k = SemanticCache().keys({"model": "m", "temperature": 0, "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, "t")
    assert k.namespace is None and k.cacheable
    k = SemanticCache().keys({"model": "m", "temperature": 0, "messages": [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": None, "tool_calls": []},
        {"role": "tool", "tool_call_id": "1", "content": "42"}]}, "t")
    assert k.namespace is None


def test_cache_control_headers():
    assert CacheControl.from_headers({b"x-pointsman-cache": b"bypass"}).bypass
    c = CacheControl.from_headers({b"x-pointsman-cache": b"refresh", b"x-pointsman-cache-ttl": b"60"})
    assert c.bypass and not c.no_store and c.ttl_s == 60
    assert CacheControl.from_headers({b"x-pointsman-cache-ttl": b"0"}).no_store
    assert not CacheControl.from_headers({}).bypass


@pytest.mark.parametrize("headers", [{b"x-pointsman-cache-ttl": b"1e309"}, {b"x-pointsman-cache-ttl": b"inf"},
                                     {b"x-pointsman-cache-ttl": b"soon"}, {b"x-pointsman-cache-ttl": b"-5"},
                                     {b"x-pointsman-cache-ttl": b"nan"}, {b"x-pointsman-cache": b"bypas"}])
def test_cache_control_headers_that_mean_nothing_are_a_400(headers):
    """An infinite TTL used to store an entry for ever and an invalid one was ignored in silence."""
    from pointsman.errors import GatewayError

    with pytest.raises(GatewayError) as caught:
        CacheControl.from_headers(headers)
    assert caught.value.status == 400 and caught.value.code == "invalid_header"


def test_a_requested_ttl_is_capped_at_the_caches_own():
    assert CacheControl.from_headers({b"x-pointsman-cache-ttl": b"999999999"}, max_ttl_s=3600).ttl_s == 3600
    assert CacheControl.from_headers({b"x-pointsman-cache-ttl": b"60"}, max_ttl_s=3600).ttl_s == 60


# -- eviction ------------------------------------------------------------------------------------------------
async def test_size_bound_evicts_least_recently_used():
    cache = SemanticCache(MemoryStore(max_entries=3))
    for i in range(3):
        await put(cache, body(f"question {i}"))
    assert await ask(cache, body("question 0")) is not None  # 0 is now the most recent
    await put(cache, body("question 3"))
    assert len(cache.backend) == 3
    assert await ask(cache, body("question 1")) is None  # the least recently used went
    assert await ask(cache, body("question 0")) is not None
    assert cache.backend.evictions == 1


async def test_byte_bound_evicts_least_recently_used_by_estimated_footprint():
    probe = SemanticCache(MemoryStore())
    eid = await put(probe, body("q0"), unit(0), text="x" * 400)
    one = probe.backend.entries[eid].size
    assert one == entry_bytes(probe.backend.entries[eid]) and one > 400 + ENTRY_OVERHEAD  # more than the answer
    cache = SemanticCache(MemoryStore(max_bytes=3 * one + one // 2), acceptance=AlwaysAccept())
    for i in range(5):
        await put(cache, body(f"q{i}"), unit(i), text="x" * 400)
        if i == 2:
            assert await ask(cache, body("q0")) is not None  # q0 is now more recent than q1 and q2
    assert len(cache.backend) == 3 and cache.backend.bytes <= 3 * one + one // 2
    assert cache.backend.evictions == 2
    assert await ask(cache, body("q1")) is None and await ask(cache, body("q2")) is None
    assert await ask(cache, body("q0")) is not None
    assert sorted(len(i) for i in cache.backend.indexes.values()) == [3]  # the evicted left the index too


async def test_ttl_expiry():
    cache = SemanticCache(acceptance=AlwaysAccept())
    k = cache.keys(body(), "t1")
    v = unit(3)
    await cache.store(k.exact_key, k.namespace, v, k.query_text, answer(), ttl_s=10, now=1000.0)
    assert await cache.lookup(k.exact_key, k.namespace, v, k.query_text, now=1005.0) is not None
    assert await cache.lookup(k.exact_key, k.namespace, v, k.query_text, now=1011.0) is None
    assert len(cache.backend) == 0
    await cache.store(k.exact_key, k.namespace, v, k.query_text, answer(), ttl_s=10, now=2000.0)
    assert await cache.backend.evict(now=2020.0) == 1


async def test_expired_entries_are_swept_without_a_lookup():
    """Expiry used to be checked only on look-up: an answer nobody asked for again held its memory for ever."""
    cache = SemanticCache(acceptance=AlwaysAccept())
    await cache.start(sweep_every_s=0.02)
    k = cache.keys(body(), "t1")
    await cache.store(k.exact_key, k.namespace, unit(3), k.query_text, answer(), ttl_s=0.05)
    assert len(cache.backend) == 1
    await asyncio.sleep(0.2)
    assert len(cache.backend) == 0
    await cache.close()


def test_vector_index_switches_to_ann_and_back():
    idx = VectorIndex(16, ann_threshold=64)
    vecs = {i: unit(i, 16) for i in range(200)}
    for i, v in vecs.items():
        idx.add(i, v)
    idx.wait_built(10)
    assert idx.ann is not None
    ids, sims = idx.search(vecs[7], 3)
    assert ids[0] == 7 and sims[0] == pytest.approx(1.0, abs=1e-3)
    for i in range(190):
        idx.remove(i)
    assert idx.ann is None and len(idx) == 10
    ids, _ = idx.search(vecs[195], 1)
    assert ids[0] == 195


def test_vector_index_keeps_int8_rows_and_scores_within_the_stated_tolerance():
    """One int8 row and a scale per vector (388 bytes, not 1,536); a similarity is off by < 0.003 (MEMORY.md: at
    most 0.0018 on QQP), exact and through the graph alike."""
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((300, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    queries = vecs[:20] * 0.9 + 0.1 * rng.standard_normal((20, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    for threshold in (1000, 64):  # exact search; the HNSW graph with candidates re-scored
        idx = VectorIndex(DIM, ann_threshold=threshold)
        for i, v in enumerate(vecs):
            idx.add(i, v)
        idx.wait_built(10)
        assert idx.mat.dtype == np.int8 and (idx.ann is not None) == (threshold == 64)
        for i, q in enumerate(queries):
            ids, sims = idx.search(q, 3)
            assert ids[0] == i
            assert np.abs(sims - vecs[ids] @ q).max() < 0.003
        assert np.abs(idx.vector(5) - vecs[5]).max() < 0.01 and idx.vector(10_000) is None


def test_the_graph_is_built_in_the_background_and_the_changes_meanwhile_are_replayed_onto_it(monkeypatch):
    """Building a graph takes seconds for a large namespace (~0.15 ms a vector): it used to block the event loop, at
    the first crossing of ann_threshold and after every quarter of evictions at the cap."""
    import concurrent.futures
    import threading

    from pointsman.cache import memory

    gate = threading.Event()

    class Gated(concurrent.futures.ThreadPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):
            return super().submit(lambda: (gate.wait(10), fn(*args, **kwargs))[1])

    monkeypatch.setattr(memory, "_BUILDER", Gated(max_workers=1))
    idx = VectorIndex(16, ann_threshold=64)
    vecs = {i: unit(i, 16) for i in range(400)}
    for i in range(100):
        idx.add(i, vecs[i])
    assert idx.ann is None and idx._build is not None and not idx._build.done()  # building, not blocking
    assert idx.search(vecs[7], 1)[0][0] == 7  # exact search meanwhile
    for i in range(100, 400):
        idx.add(i, vecs[i])
    for i in range(50):
        idx.remove(i)
    gate.set()
    idx.wait_built(10)
    assert idx.ann is not None and not idx._changes
    assert not any(idx.ann.contains(i) for i in range(50)) and all(idx.ann.contains(i) for i in range(50, 400))
    for i in (60, 150, 399):
        assert idx.search(vecs[i], 1)[0][0] == i
    # a quarter of tombstones: rebuilt, again in the background, with the removals made meanwhile
    gate.clear()
    for i in range(50, 150):
        idx.remove(i)
    old = idx.ann
    assert idx._build is not None and idx.ann is old
    idx.remove(150)
    gate.set()
    idx.wait_built(10)
    assert idx.ann is not old and not idx.ann.contains(150) and idx.ann.contains(151)


def test_vector_index_gives_back_rows_when_it_shrinks():
    idx = VectorIndex(DIM)
    for i in range(1000):
        idx.add(i, unit(i))
    assert len(idx.ids) >= 1000
    for i in range(990):
        idx.remove(i)
    assert len(idx.ids) < 100 and len(idx.mat) == len(idx.ids) == len(idx.scale)
    assert idx.search(unit(995), 1)[0][0] == 995


async def test_the_store_keeps_one_copy_of_each_vector_and_of_each_label():
    cache = SemanticCache(MemoryStore(), acceptance=AlwaysAccept())
    v = unit(1)
    tenant = "".join(["t", "1"])  # a string of its own, as each request makes
    k = cache.keys(body(), tenant)
    eid = await cache.store(k.exact_key, k.namespace, v, k.query_text, answer(), tenant=tenant, route="auto")
    entry = cache.backend.entries[eid]
    assert entry.vector is None and eid in cache.backend.indexes[entry.namespace]  # in the index only
    assert entry.tenant is sys.intern("t1") and entry.namespace is next(iter(cache.backend.indexes))
    hit = await ask(cache, body("How can I reverse a list in Python?"), near(v, 0.97))
    assert hit is not None and hit.kind == "semantic" and hit.similarity == pytest.approx(0.97, abs=0.003)
    # an entry stored without its embedding joins the semantic layer once it is attached
    k2 = cache.keys(body("What is a closure?"), "t1")
    eid2 = await cache.store(k2.exact_key, k2.namespace, None, k2.query_text, answer("A function with its scope."))
    assert cache.backend.entries[eid2].namespace is None
    assert await cache.attach_embedding(eid2, k2.namespace, unit(5), k2.query_text)
    assert not await cache.attach_embedding(eid2, k2.namespace, unit(5), k2.query_text)  # it has one now
    assert (await ask(cache, body("What's a closure?"), near(unit(5), 0.98))).entry_id == eid2


async def test_an_answer_is_stored_at_its_own_size():
    """orjson's bytes keep the ~4 KB its writer reserved: stored as they were, a short answer held 7x its size."""
    import tracemalloc

    cache = SemanticCache(MemoryStore())
    k = cache.keys(body(), "t1")
    tracemalloc.start()
    try:
        await cache.store(k.exact_key, k.namespace, None, k.query_text, answer("short"))
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held < 3000


def test_the_gateway_s_cache_fits_max_bytes_with_its_side_maps():
    from pointsman.app.caching import make_cache
    from pointsman.config.schema import CacheConfig

    cache = make_cache(CacheConfig(max_bytes=128 << 20))
    assert cache.side_map_bytes() > 0
    assert cache.backend.max_bytes == (128 << 20) - cache.side_map_bytes()
    assert make_cache(CacheConfig()).backend.max_bytes == (256 << 20) - cache.side_map_bytes()  # the default
    with pytest.raises(ValueError, match="max_bytes"):
        CacheConfig(max_bytes=1 << 20)


# -- never cache -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ans,status,why", [
    ({"error": {"message": "boom"}}, 500, "status 500"),
    ({"error": {"message": "boom"}}, 200, "error"),
    (answer(finish="length"), 200, "finish_reason length"),
    (answer(finish="content_filter"), 200, "finish_reason content_filter"),
    (answer("I'm sorry, but I can't help with that."), 200, "refusal"),
    (answer(None, refusal="no"), 200, "refusal"),
    (answer(None, finish="tool_calls", tool_calls=[{"id": "c", "type": "function",
                                                   "function": {"name": "send_email", "arguments": "{}"}}]),
     200, "tool calls with side effects"),
    (answer("   "), 200, "empty answer"),
])
async def test_never_cached(ans, status, why):
    cache = SemanticCache()
    k = cache.keys(body(), "t1")
    assert await cache.store(k.exact_key, k.namespace, unit(1), k.query_text, ans, status=status) is None
    assert cache.metrics.not_stored == {why: 1}
    assert await ask(cache, body(), unit(1)) is None


async def test_tool_calls_cached_when_declared_side_effect_free():
    ans = answer(None, finish="tool_calls", tool_calls=[{"id": "c", "type": "function",
                                                          "function": {"name": "lookup", "arguments": "{\"q\": 1}"}}])
    assert uncacheable_reason(ans, tools_side_effect_free=True) is None
    cache = SemanticCache(policy=CachePolicy(tools_side_effect_free=True))
    k = cache.keys(body(), "t1")
    assert await cache.store(k.exact_key, k.namespace, None, k.query_text, ans) is not None


def test_refusal_detector():
    assert is_refusal("I'm sorry, but I cannot assist with that request.")
    assert is_refusal("As an AI language model, I cannot browse the internet.")
    assert is_refusal("I can’t help with that.")
    assert not is_refusal("Sorry for the wait! Here is the list: 1. apples")
    assert not is_refusal("You cannot reverse a tuple in place; use reversed().")


async def test_incomplete_stream_is_not_cached():
    rec = StreamRecorder()
    rec.feed({"id": "c", "model": "m", "created": 1, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hal"}}]})
    assert rec.answer() is None  # no finish reason yet
    rec.feed({"id": "c", "choices": [{"index": 0, "delta": {"content": "f"}, "finish_reason": None}]})
    rec.error()
    rec.feed({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    assert rec.answer() is None
    cache = SemanticCache()
    k = cache.keys(body(), "t1")
    assert await cache.store(k.exact_key, k.namespace, None, k.query_text, rec.answer(), pieces=rec.pieces) is None


# -- streams and SSE replay --------------------------------------------------------------------------------------
def _openai_stream(events: list[bytes]):
    httpx2 = pytest.importorskip("httpx2")
    import openai

    def handler(request):
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=b"".join(events))

    client = openai.OpenAI(api_key="x", base_url="http://cache.test/v1",
                           http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))
    return list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}], stream=True,
                                               stream_options={"include_usage": True}))


async def test_streamed_answer_cached_and_replayed_through_openai_parser():
    pieces = ["Use ", "list.", "reverse()", " or slicing", "."]
    rec = StreamRecorder()
    rec.feed({"id": "c1", "object": "chat.completion.chunk", "created": 5, "model": "small",
              "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
    for p in pieces:
        rec.feed({"id": "c1", "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]})
    rec.feed({"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    rec.feed({"id": "c1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}})
    cache = SemanticCache()
    k = cache.keys(body(stream=True), "t1")
    eid = await cache.store(k.exact_key, k.namespace, None, k.query_text, rec.answer(), pieces=rec.pieces)
    assert eid is not None
    assert list(cache.backend.entries[eid].pieces) == [len(p) for p in pieces]  # lengths, not 5 more strings
    hit = await ask(cache, body())  # a non-streamed request gets the assembled answer
    assert json.loads(hit.body("req_1"))["choices"][0]["message"]["content"] == "".join(pieces)
    assert json.loads(hit.body("req_1"))["id"] == "req_1"
    events = hit.sse(include_usage=True, request_id="req_2")
    assert events[-1] == b"data: [DONE]\n\n"
    chunks = _openai_stream(events)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].delta.content for c in chunks[1:1 + len(pieces)]] == pieces  # original chunking
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 8
    assert all(c.id == "req_2" for c in chunks)


def test_replay_of_a_whole_answer_and_tool_calls():
    events = replay_as_sse(answer("word " * 40))
    chunks = _openai_stream(events)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "word " * 40
    assert len(chunks) > 4
    tool = answer(None, finish="tool_calls", tool_calls=[{"id": "call_1", "type": "function",
                                                         "function": {"name": "lookup", "arguments": "{\"q\": \"x\"}"}}])
    chunks = _openai_stream(replay_as_sse(tool))
    calls = [c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert calls[0][0].function.name == "lookup" and calls[0][0].id == "call_1"
    assert "".join(c[0].function.arguments for c in calls) == "{\"q\": \"x\"}"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


# -- false-hit checks ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("check,a,b", [
    ("negation", "Why does my laptop charge when plugged in?", "Why doesn't my laptop charge when plugged in?"),
    ("negation", "Which foods are safe for dogs?", "Which foods are never safe for dogs?"),
    ("polarity", "How do I turn on dark mode?", "How do I turn off dark mode?"),
    ("polarity", "How can I increase my credit score?", "How can I decrease my credit score?"),
    ("polarity", "Is it legal to record a call?", "Is it illegal to record a call?"),
    ("numbers", "How many calories are in 2 eggs?", "How many calories are in 3 eggs?"),
    ("numbers", "How long does it take to walk 10 km?", "How long does it take to walk 10 miles?"),
    ("numbers", "How old is a 5 year old dog in human years?", "How old is a ten year old dog in human years?"),
    ("entities", "What is the capital of Australia?", "What is the capital of Austria?"),
    ("entities", "What is the best way to learn Java?", "What is the best way to learn JavaScript?"),
    ("entities", "What does os.path.join do?", "What does os.path.split do?"),
    ("entities", "What is the weather in London in June?", "What is the weather in London in December?"),
    ("question", "Why did the Roman Empire fall?", "When did the Roman Empire fall?"),
    ("question", "Who invented the telephone?", "Where was the telephone invented?"),
])
def test_each_check_fires(check, a, b):
    r = compare(facts(b), facts(a))
    assert check in r.failed and not r.passed
    assert r.flags[CHECK_NAMES.index(check)] == 1.0


@pytest.mark.parametrize("a,b", [
    ("How do I turn on dark mode in Chrome?", "How can I enable dark mode in Chrome?"),
    ("What is the capital of Australia?", "What's the capital city of Australia?"),
    ("Is 8 GB of RAM enough for gaming?", "Is 8GB RAM enough for gaming?"),
    ("How do I get a work visa for Canada?", "How can I get a Canadian work visa?"),
    ("Why can't I connect to WiFi?", "Why am I unable to connect to WiFi?"),
    ("When was Albert Einstein born?", "What year was Albert Einstein born?"),
])
def test_checks_let_paraphrases_through(a, b):
    r = compare(facts(b), facts(a))
    assert r.passed, r.failed


async def test_semantic_hit_goes_through_checks():
    cache = SemanticCache(acceptance=AlwaysAccept())
    v = unit(5)
    await put(cache, body("How do I turn on dark mode in Chrome?"), v)
    hit = await ask(cache, body("How can I enable dark mode in Chrome?"), near(v, 0.95))
    assert hit is not None and hit.kind == "semantic" and 0.94 < hit.similarity < 0.96
    assert hit.headers()["x-pointsman-cache"] == "hit-semantic" and "negation" in hit.checks
    assert await ask(cache, body("How do I turn off dark mode in Chrome?"), near(v, 0.97)) is None
    assert cache.metrics.rejected["polarity"] == 1 and cache.metrics.hits_semantic == 1
    assert await ask(cache, body("Tell me a joke"), near(v, 0.5)) is None  # below the pre-filter


# -- the learned acceptance model -------------------------------------------------------------------------------
def test_clopper_pearson_upper_bound():
    assert clopper_pearson_upper(0, 100, 0.95) == pytest.approx(1 - 0.05 ** (1 / 100), rel=1e-6)
    assert clopper_pearson_upper(10, 1000, 0.95) > 0.01


def test_learned_threshold_holds_delta_on_synthetic_data():
    rng = np.random.default_rng(0)

    def sample(n):
        y = rng.random(n) < 0.4
        sim = np.where(y, rng.normal(0.92, 0.04, n), rng.normal(0.80, 0.07, n))
        neg = (rng.random(n) < np.where(y, 0.02, 0.3)).astype(float)  # a check that fires mostly on wrong pairs
        X = np.zeros((n, len(FEATURE_NAMES)))
        X[:, 0], X[:, 1], X[:, 2], X[:, 5] = 1.0, sim - 0.85, (sim - 0.85) ** 2, neg
        return X, y.astype(int)

    Xtr, ytr = sample(4000)
    Xcal, ycal = sample(4000)
    Xte, yte = sample(20000)
    model = AcceptanceModel(delta=0.02).fit(Xtr, ytr)
    assert model.w[5] < -1  # it learned that the check's firing means a wrong reuse
    model.calibrate(np.array([model.prob(x) for x in Xcal]), ycal)
    served = np.array([model.accept(x)[0] for x in Xte])
    wrong = (served & (yte == 0)).mean()
    assert wrong <= 0.02 and served.mean() > 0.15
    strict = AcceptanceModel(model.w, delta=0.005)
    strict.calibrate(np.array([model.prob(x) for x in Xcal]), ycal)
    assert strict.threshold > model.threshold
    restored = AcceptanceModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert restored.threshold == model.threshold and np.allclose(restored.w, model.w)


def test_shipped_model_loads_with_a_threshold_per_delta():
    strict, loose = default_acceptance_model(0.01), default_acceptance_model(0.02)
    assert strict.kind == "logistic" and len(strict.w) == len(FEATURE_NAMES)
    assert strict.threshold > loose.threshold and strict.delta == 0.01 and loose.delta == 0.02
    q, c = facts("How can I learn Python quickly?"), facts("What is the fastest way to learn Python?")
    r = compare(q, c)
    p_close = loose.prob(pair_features(0.97, q, c, r))
    p_far = loose.prob(pair_features(0.80, q, c, r))
    assert p_close > loose.threshold > p_far  # similarity matters the right way round


def test_mlp_acceptance_model_round_trips(tmp_path):
    rng = np.random.default_rng(1)
    d_in = 2 * DIM + len(FEATURE_NAMES) - 1
    m = AcceptanceModel(rng.standard_normal(9), hidden=(rng.standard_normal((d_in, 8)).astype(np.float32) * 0.05,
                                                       np.zeros(8, np.float32)), threshold=0.4)
    m.scaler = (np.zeros(d_in, np.float32), np.ones(d_in, np.float32))
    x = pair_features(0.9, facts("a b c"), facts("a b d"), compare(facts("a b c"), facts("a b d")))
    u, v = unit(1), unit(2)
    m.save(tmp_path / "m")
    back = AcceptanceModel.load(tmp_path / "m")
    assert back.kind == "mlp" and back.threshold == 0.4
    assert back.prob(x, u, v) == pytest.approx(m.prob(x, u, v), abs=2e-3)  # float16 storage of the first layer


def test_question_words_inside_a_sentence_are_not_question_types():
    assert facts("How will this affect students who study abroad?").qtypes == frozenset()
    assert facts("Who is the most followed celebrity on Twitter?").qtypes == {"who"}
    assert facts("What year did the war end?").qtypes == {"when"}


# -- feedback and invalidation -------------------------------------------------------------------------------------
async def test_feedback_reject_demotes_then_removes():
    model = AcceptanceModel(threshold=0.0)  # accept everything the checks pass
    cache = SemanticCache(acceptance=model, max_rejects=2)
    v = unit(8)
    eid = await put(cache, body("How do I learn to code fast?"), v)
    hit = await ask(cache, body("How can I learn coding quickly?"), near(v, 0.93))
    assert hit is not None and hit.entry_id == eid
    w_before = model.w.copy()
    await cache.feedback(eid, accepted=False)
    assert not np.allclose(model.w, w_before)  # the model learned from it
    assert await ask(cache, body("How can I learn coding quickly?"), near(v, 0.93)) is None  # demoted
    assert cache.metrics.rejected["demoted"] == 1
    assert await ask(cache, body("How do I learn to code really fast?"), near(v, 0.96, seed=3)) is not None
    await cache.feedback(eid, accepted=False)
    assert len(cache.backend) == 0  # second rejection: removed


async def test_feedback_on_exact_hit_removes_and_invalidate():
    cache = SemanticCache()
    eid = await put(cache, body("q1"))
    hit = await ask(cache, body("q1"))
    await cache.feedback(hit.entry_id, accepted=False)
    assert await ask(cache, body("q1")) is None and eid == hit.entry_id
    await put(cache, body("q2"), unit(1))
    await put(cache, body("q3"), unit(2), tenant="t2")
    ns = cache.keys(body("q2"), "t1").namespace
    assert await cache.invalidate(namespace=ns) == 1
    assert await ask(cache, body("q3"), tenant="t2") is not None
    assert await cache.invalidate(all=True) == 1 and len(cache.backend) == 0
    assert cache.stats()["invalidated"] == 2


async def test_stage_embeds_an_empty_namespace_only_after_the_answer():
    """The gateway's cache stage: no query embedding before the upstream call when the namespace is empty (a
    certain semantic miss); the answer goes into the exact layer at once and into the semantic layer when its
    embedding is ready; the next paraphrase in that namespace is embedded and hits."""
    from pointsman.app.caching import CacheStage
    from pointsman.config.schema import CacheConfig
    from pointsman.embed import EmbedBatcher, MiniLMEncoder
    from pointsman.routing.base import RouteContext

    class Counting:
        def __init__(self):
            # loaded here, as the gateway warms its encoders at start: a first load inside the look-up can outlast
            # cache.store_timeout_s, and the look-up is then given up as a miss
            self.inner, self.texts = EmbedBatcher(MiniLMEncoder().load()), []

        async def embed_with_features(self, text, *args, **kwargs):
            self.texts.append(text)
            return await self.inner.embed_with_features(text, *args, **kwargs)

    embedder = Counting()
    stage = CacheStage(CacheConfig(enabled=True))
    stage.cache.acceptance = AlwaysAccept()
    first = RouteContext(body("How do I reverse a list in Python?", model="m"))
    ticket = await stage.lookup({}, first, "t|", "m", embedder, "req_1")
    assert ticket.embedding is None and embedder.texts == []  # nothing embedded before the upstream call
    await stage.store(ticket, answer(), "m")
    again = await stage.lookup({}, RouteContext(body("How do I reverse a list in Python?", model="m")), "t|", "m",
                               embedder, "req_2")
    assert again.kind == "exact"  # stored in the exact layer before the embedding was ready
    para = await stage.lookup({}, RouteContext(body("How can I reverse a list in Python?", model="m")), "t|", "m",
                              embedder, "req_3")
    assert para is not None and para.kind == "semantic" and len(embedder.texts) == 2
    await stage.drain()
    assert stage.cache.stats()["lookups"] == 3 and stage.cache.stats()["misses"] == 1
    assert await stage.cache.feedback(request_id="req_3", tenant="t|") == (para.entry_id, "demoted")
    assert await stage.cache.feedback(request_id="req_1", tenant="other|") is None
    assert await stage.cache.feedback(request_id="req_1", tenant="t|") == (para.entry_id, "deleted")
    await embedder.inner.close()


async def test_an_entry_s_facts_are_extracted_when_it_is_first_a_candidate_and_kept_in_a_bounded_map(monkeypatch):
    """Facts (~4 KB an entry) are not kept on every entry: a store extracts none, a look-up extracts the facts of
    the candidates it checks and keeps the latest `max_facts` of them."""
    import pointsman.cache as cache_module

    calls: list[str] = []
    real = cache_module.facts
    monkeypatch.setattr(cache_module, "facts", lambda text: calls.append(text) or real(text))
    cache = SemanticCache(MemoryStore(), acceptance=AlwaysAccept())
    cache.max_facts = 2
    v = unit(1)
    on = await put(cache, body("How do I turn on dark mode in Chrome?"), v)
    assert calls == []
    off = body("How do I turn off dark mode in Chrome?")
    assert await ask(cache, off, near(v, 0.97)) is None  # a candidate checked, rejected on polarity
    assert calls == ["How do I turn off dark mode in Chrome?", "How do I turn on dark mode in Chrome?"]
    assert await ask(cache, off, near(v, 0.97)) is None
    assert calls[2:] == ["How do I turn off dark mode in Chrome?"]  # the candidate's facts were kept
    for i in (2, 3):
        eid = await put(cache, body(f"How do I turn on light mode number {i}?"), unit(i))
        assert await ask(cache, body(f"How do I turn off light mode number {i}?"), near(unit(i), 0.97)) is None
        assert eid in cache._facts
    assert len(cache._facts) == 2 and on not in cache._facts  # the oldest went
    assert await ask(cache, off, near(v, 0.97)) is None
    assert calls[-1] == "How do I turn on dark mode in Chrome?"  # extracted again


def test_an_invalid_cache_header_is_an_openai_style_400_through_the_gateway(make_gateway, upstream):
    import httpx

    from tests.conftest import model

    gw = make_gateway({"models": [model("m", upstream)], "server": {"cache": {"enabled": True, "semantic": False}}})
    response = httpx.post(f"{gw.base_url}/chat/completions", headers={"x-pointsman-cache-ttl": "1e309"},
                          json={"model": "m", "temperature": 0, "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_header"


def test_a_cache_store_from_outside_the_package_is_registered_by_scheme(make_gateway, upstream):
    """Issue 15: a cache store is one file, registered under its URL scheme (tests/example_extensions.py)."""
    import httpx

    import tests.example_extensions  # noqa: F401 - registers counting://
    from tests.conftest import model

    gw = make_gateway({"models": [model("m", upstream)],
                       "server": {"cache": {"enabled": True, "semantic": False, "store": "counting://here"}}})
    body = {"model": "m", "temperature": 0, "messages": [{"role": "user", "content": "What is the capital of Peru?"}]}
    httpx.post(f"{gw.base_url}/chat/completions", json=body)
    again = httpx.post(f"{gw.base_url}/chat/completions", json=body)
    assert again.headers["x-pointsman-cache"] == "hit-exact"
    store = gw.gateway.caching.cache.backend
    assert type(store).__name__ == "CountingStore" and store.url == "counting://here" and store.puts == 1
    from pointsman.app.caching import make_cache
    from pointsman.config.schema import CacheConfig

    with pytest.raises(ValueError, match="no store for nowhere://"):
        make_cache(CacheConfig(store="nowhere://x"))
