"""The cache's HTTP controls against the real server on loopback: feedback (POST /v1/cache/feedback),
invalidation (POST /admin/cache/invalidate) and metrics (GET /admin/cache/metrics); on the in-process store
and on two replicas sharing Redis."""

from __future__ import annotations

import hashlib
import time
import uuid

import httpx
import openai
import pytest

from tests.conftest import model, skip_unless_service

ADMIN = "sk-admin-cache-test"
KEY_A, KEY_B = "sk-tenant-a-cache", "sk-tenant-b-cache"


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def ask(gateway, text: str, key: str = KEY_A, team: str | None = None):
    """(headers, answer text) of one chat completion through the openai SDK."""
    client = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": text}], temperature=0,
        extra_headers={"x-pointsman-team": team} if team else None)
    return raw.headers, raw.parse().choices[0].message.content


def feedback(gateway, body, key: str = KEY_A, team: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"}
    if team:
        headers["x-pointsman-team"] = team
    return httpx.post(f"{gateway.base_url}/cache/feedback", json=body, headers=headers)


def admin(gateway, path: str, body=None, key: str = ADMIN) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"}
    if body is None:
        return httpx.get(f"{gateway.url}/admin/cache/{path}", headers=headers)
    return httpx.post(f"{gateway.url}/admin/cache/{path}", json=body, headers=headers)


def calls(upstream, name) -> int:
    return upstream.stats()["counts"].get(name, 0)


def cache_config(upstream, name: str, **cache) -> dict:
    return {"models": [model("m", upstream, name)],
            "server": {"cache": {"enabled": True, **cache}, "api_keys_env": ["PM_CACHE_KEY_A", "PM_CACHE_KEY_B"],
                       "admin_key_env": "PM_CACHE_ADMIN"}}


@pytest.fixture
def keys(monkeypatch):
    monkeypatch.setenv("PM_CACHE_KEY_A", KEY_A)
    monkeypatch.setenv("PM_CACHE_KEY_B", KEY_B)
    monkeypatch.setenv("PM_CACHE_ADMIN", ADMIN)


@pytest.fixture
def cached(make_gateway, upstream, keys):
    name = f"cache-{uuid.uuid4().hex[:8]}"  # a model id of its own: upstream call counts are this test's alone
    return make_gateway(cache_config(upstream, name)), name


# -- feedback ----------------------------------------------------------------------------------------------------
def test_reject_by_request_id_stops_an_exact_entry_from_being_served(cached, upstream):
    gateway, name = cached
    ask(gateway, "What is the capital of France?")
    hit, _ = ask(gateway, "What is the capital of France?")
    assert hit["x-pointsman-cache"] == "hit-exact" and calls(upstream, name) == 1
    response = feedback(gateway, {"request_id": hit["x-pointsman-request-id"], "verdict": "reject"})
    assert response.status_code == 200, response.text
    assert response.json() == {"object": "cache.feedback", "entry_id": hit["x-pointsman-cache-entry"],
                               "verdict": "reject", "action": "deleted"}
    again, _ = ask(gateway, "What is the capital of France?")
    assert "x-pointsman-cache" not in again and calls(upstream, name) == 2
    # one verdict per answer: the same request again is unknown
    assert feedback(gateway, {"request_id": hit["x-pointsman-request-id"], "verdict": "reject"}).status_code == 404


def test_reject_of_a_fresh_answer_removes_what_it_stored(cached, upstream):
    gateway, name = cached
    miss, _ = ask(gateway, "Name a prime number above 100")
    assert "x-pointsman-cache" not in miss
    response = feedback(gateway, {"request_id": miss["x-pointsman-request-id"], "verdict": "reject"})
    assert response.status_code == 200 and response.json()["action"] == "deleted"
    assert "x-pointsman-cache" not in ask(gateway, "Name a prime number above 100")[0] and calls(upstream, name) == 2


def test_reject_of_a_semantic_hit_demotes_the_entry(cached, upstream):
    gateway, name = cached
    ask(gateway, "How do I reverse a list in Python?")
    hit, _ = ask(gateway, "How can I reverse a list in Python?")
    assert hit["x-pointsman-cache"] == "hit-semantic"
    response = feedback(gateway, {"entry_id": hit["x-pointsman-cache-entry"], "verdict": "reject"})
    assert response.status_code == 200 and response.json()["action"] == "demoted"
    after, text = ask(gateway, "How can I reverse a list in Python?")  # the rejected pairing is not served again
    assert "x-pointsman-cache" not in after and text == "echo: How can I reverse a list in Python?"
    assert ask(gateway, "How do I reverse a list in Python?")[0]["x-pointsman-cache"] == "hit-exact"  # still there
    metrics = admin(gateway, "metrics").json()
    assert metrics["feedback_rejected"] == 1 and metrics["rejected"]["demoted"] >= 1


def test_accept_is_counted_and_keeps_the_entry(cached, upstream):
    gateway, _ = cached
    ask(gateway, "ping?")
    hit, _ = ask(gateway, "ping?")
    response = feedback(gateway, {"request_id": hit["x-pointsman-request-id"], "verdict": "accept"})
    assert response.status_code == 200 and response.json()["action"] == "accepted"
    assert ask(gateway, "ping?")[0]["x-pointsman-cache"] == "hit-exact"
    assert admin(gateway, "metrics").json()["feedback_accepted"] == 1


def test_feedback_is_tenant_scoped(cached, upstream):
    gateway, name = cached
    ask(gateway, "Summarise our Q3 plan")
    hit, _ = ask(gateway, "Summarise our Q3 plan")
    entry, request = hit["x-pointsman-cache-entry"], hit["x-pointsman-request-id"]
    for body in ({"entry_id": entry, "verdict": "reject"}, {"request_id": request, "verdict": "reject"}):
        other_key = feedback(gateway, body, key=KEY_B)
        other_team = feedback(gateway, body, team="finance")  # same key, another team: another tenant
        assert other_key.status_code == other_team.status_code == 404
        assert other_key.json()["error"]["code"] == "cache_entry_not_found"
    assert ask(gateway, "Summarise our Q3 plan")[0]["x-pointsman-cache"] == "hit-exact" and calls(upstream, name) == 1
    assert feedback(gateway, {"entry_id": entry, "verdict": "reject"}).status_code == 200  # its own tenant may


def test_feedback_errors_are_openai_shaped(cached):
    gateway, _ = cached
    url = f"{gateway.base_url}/cache/feedback"
    auth = {"authorization": f"Bearer {KEY_A}"}
    for body, param in [({"request_id": "req_x"}, "verdict"), ({"request_id": "req_x", "verdict": "meh"}, "verdict"),
                        ({"verdict": "reject"}, "request_id"),
                        ({"verdict": "reject", "request_id": "req_x", "entry_id": "1f"}, "request_id"),
                        ({"verdict": "reject", "entry_id": "not-hex"}, "entry_id"),
                        ({"verdict": "reject", "request_id": 12}, "request_id"),
                        ({"verdict": "reject", "request_id": "r", "extra": 1}, "extra")]:
        response = httpx.post(url, json=body, headers=auth)
        assert response.status_code == 400, (body, response.text)
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]
    assert httpx.post(url, content=b"{not json", headers=auth).json()["error"]["code"] == "invalid_json"
    assert httpx.post(url, json={"request_id": "req_x", "verdict": "reject"}).status_code == 401
    assert httpx.post(url, json={"request_id": "req_x", "verdict": "reject"},
                      headers={"authorization": "Bearer sk-wrong"}).status_code == 401
    unknown = httpx.post(url, json={"request_id": "req_nope", "verdict": "reject"}, headers=auth)
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found_error"
    assert httpx.post(url, json={"entry_id": "abc123", "verdict": "reject"}, headers=auth).status_code == 404
    wrong_method = httpx.get(url, headers=auth)
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"


# -- invalidation and metrics ------------------------------------------------------------------------------------
def test_admin_invalidate_by_entry_tenant_model_and_all(cached, upstream):
    gateway, name = cached
    first, _ = ask(gateway, "q one")
    ask(gateway, "q two")
    ask(gateway, "q three", key=KEY_B)
    ask(gateway, "q four", key=KEY_B, team="ops")
    assert admin(gateway, "metrics").json()["entries"] == 4
    # one entry (the id from a hit's header)
    entry = ask(gateway, "q one")[0]["x-pointsman-cache-entry"]
    assert admin(gateway, "invalidate", {"entry_id": entry}).json() == {"object": "cache.invalidation", "invalidated": 1}
    assert "x-pointsman-cache" not in ask(gateway, "q one")[0]  # a miss, stored again
    unknown = admin(gateway, "invalidate", {"entry_id": entry})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "cache_entry_not_found"
    # a tenant: key B, team ops only
    assert admin(gateway, "invalidate", {"key_id": key_id(KEY_B), "team": "ops"}).json()["invalidated"] == 1
    assert ask(gateway, "q three", key=KEY_B)[0]["x-pointsman-cache"] == "hit-exact"
    assert "x-pointsman-cache" not in ask(gateway, "q four", key=KEY_B, team="ops")[0]
    # a whole key (every team)
    assert admin(gateway, "invalidate", {"key_id": key_id(KEY_B)}).json()["invalidated"] == 2
    # a model: the requested name or the pool model that answered
    assert admin(gateway, "invalidate", {"model": "no-such-model"}).json()["invalidated"] == 0
    assert admin(gateway, "invalidate", {"model": "m"}).json()["invalidated"] == 2
    assert admin(gateway, "metrics").json()["entries"] == 0
    ask(gateway, "q five")
    assert admin(gateway, "invalidate", {"all": True}).json()["invalidated"] == 1
    assert "x-pointsman-cache" not in ask(gateway, "q five")[0]


def test_admin_endpoints_need_the_admin_key_and_valid_bodies(cached):
    gateway, _ = cached
    assert admin(gateway, "metrics", key=KEY_A).status_code == 403
    assert httpx.get(f"{gateway.url}/admin/cache/metrics").status_code == 401
    assert admin(gateway, "invalidate", {"all": True}, key=KEY_A).status_code == 403
    for body, param in [({}, None), ({"all": True, "model": "m"}, "all"), ({"entry_id": "12", "team": "x"}, "entry_id"),
                        ({"all": "yes"}, "all"), ({"tenant": "x"}, "tenant"), ({"entry_id": "0"}, "entry_id")]:
        response = admin(gateway, "invalidate", body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["param"] == param and response.json()["error"]["message"]
    assert httpx.post(f"{gateway.url}/admin/cache/metrics", headers={"authorization": f"Bearer {ADMIN}"}).status_code == 405


def test_metrics_count_hits_misses_rejections_and_bytes(cached, upstream):
    gateway, _ = cached
    ask(gateway, "turn on dark mode")
    ask(gateway, "turn on dark mode")
    ask(gateway, "turn off dark mode")  # a near miss the guard refuses
    metrics = admin(gateway, "metrics").json()
    assert metrics["object"] == "cache.metrics" and metrics["store"] == "memory"
    assert metrics["hits_exact"] == 1 and metrics["hits_semantic"] == 0 and metrics["hits"] == 1
    assert metrics["misses"] == 2 and metrics["stored"] == 2 and metrics["entries"] == 2
    assert metrics["rejected"]["polarity"] + metrics["rejected"]["negation"] >= 1
    assert metrics["bytes"] > 0 and metrics["bytes_served"] > 0


def test_cache_endpoints_when_the_cache_is_off(make_gateway, upstream, keys):
    config = cache_config(upstream, "echo")
    config["server"]["cache"] = {"enabled": False}
    gateway = make_gateway(config)
    response = admin(gateway, "metrics")
    assert response.status_code == 404 and response.json()["error"]["code"] == "cache_disabled"
    assert feedback(gateway, {"request_id": "req_x", "verdict": "reject"}).status_code == 404


# -- two replicas on Redis ---------------------------------------------------------------------------------------
@pytest.fixture
def replicas(make_gateway, upstream, keys):
    import redis

    try:
        redis.Redis(socket_connect_timeout=1).ping()
    except redis.RedisError:
        skip_unless_service("no Redis at 127.0.0.1:6379")
    prefix = f"pointsman-test:{uuid.uuid4().hex[:8]}"
    name = f"cache-{uuid.uuid4().hex[:8]}"
    config = cache_config(upstream, name, store="redis://127.0.0.1:6379/0", prefix=prefix)
    try:
        yield make_gateway(config), make_gateway(config), name
    finally:
        client = redis.Redis()
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)


def eventually(predicate, timeout: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_invalidation_on_one_replica_reaches_the_other(replicas, upstream):
    a, b, name = replicas
    ask(a, "What is the boiling point of water at sea level?")
    ask(a, "How many legs does a spider have?", key=KEY_B)
    assert eventually(lambda: len(b.gateway.caching.cache.backend) == 2)
    assert ask(b, "What is the boiling point of water at sea level?")[0]["x-pointsman-cache"] == "hit-exact"
    # by tenant, sent to B: A drops it too (within the stated propagation bound)
    assert admin(b, "invalidate", {"key_id": key_id(KEY_A)}).json()["invalidated"] == 1
    assert eventually(lambda: len(a.gateway.caching.cache.backend) == 1)
    assert "x-pointsman-cache" not in ask(a, "What is the boiling point of water at sea level?")[0]
    # by entry id, sent to A, for an entry B never served
    entry = ask(a, "How many legs does a spider have?", key=KEY_B)[0]["x-pointsman-cache-entry"]
    assert admin(a, "invalidate", {"entry_id": entry}).json()["invalidated"] == 1
    assert eventually(lambda: int(entry, 16) not in b.gateway.caching.cache.backend.mirror.entries)
    assert "x-pointsman-cache" not in ask(b, "How many legs does a spider have?", key=KEY_B)[0]
    # everything, counted once
    assert eventually(lambda: len(a.gateway.caching.cache.backend) == 2)
    assert admin(a, "invalidate", {"all": True}).json()["invalidated"] == 2
    assert eventually(lambda: len(b.gateway.caching.cache.backend) == 0)
    assert admin(b, "metrics").json()["store"] == "redis"


def test_a_reject_sent_to_the_other_replica_stops_the_entry_everywhere(replicas, upstream):
    a, b, name = replicas
    ask(a, "Who wrote Hamlet?")
    hit, _ = ask(a, "Who wrote Hamlet?")
    assert hit["x-pointsman-cache"] == "hit-exact"
    # B did not serve this request: it learns which entry answered it from Redis (written with A's periodic
    # touch flush, every second)
    body = {"request_id": hit["x-pointsman-request-id"], "verdict": "reject"}
    assert feedback(b, body, key=KEY_B).status_code == 404  # another tenant's, on any replica
    assert eventually(lambda: feedback(b, body).status_code == 200, timeout=3.0)
    assert eventually(lambda: len(a.gateway.caching.cache.backend) == 0)
    assert "x-pointsman-cache" not in ask(a, "Who wrote Hamlet?")[0] and calls(upstream, name) == 2


# -- the OpenAPI document, fuzzed ------------------------------------------------------------------------------
def test_fuzz_the_cache_endpoints_against_their_openapi_document(make_gateway, upstream, keys):
    import schemathesis
    from schemathesis import GenerationMode

    from tests.test_fuzz_openapi import fuzz

    gateway = make_gateway(cache_config(upstream, f"cache-{uuid.uuid4().hex[:8]}"))
    ask(gateway, "What is the capital of France?")
    schema = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json", headers={"authorization": f"Bearer {KEY_A}"})

    def with_key(key):
        def tweak(case):
            case.headers = {**(case.headers or {}), "authorization": f"Bearer {key}"}
            return case
        return tweak

    for path, method, key, examples in [("/v1/cache/feedback", "POST", KEY_A, 40),
                                        ("/admin/cache/invalidate", "POST", ADMIN, 40),
                                        ("/admin/cache/metrics", "GET", ADMIN, 5)]:
        operation = schema[path][method]
        assert fuzz(operation, GenerationMode.POSITIVE, examples, with_key(key)) >= 1
        if method == "POST":
            assert fuzz(operation, GenerationMode.NEGATIVE, examples, with_key(key)) >= 1
    assert httpx.get(f"{gateway.url}/health").status_code == 200


def test_an_answer_stored_before_its_embedding_reaches_the_other_replica_s_semantic_layer(replicas, upstream):
    a, b, name = replicas
    first, _ = ask(a, "How do I reverse a list in Python?")  # an empty namespace: no embedding before the upstream
    assert "x-pointsman-cache" not in first
    assert ask(a, "How do I reverse a list in Python?")[0]["x-pointsman-cache"] == "hit-exact"
    mirror = b.gateway.caching.cache.backend.mirror
    assert eventually(lambda: any(e.namespace is not None for e in mirror.entries.values()), timeout=2.0)
    hit, text = ask(b, "How can I reverse a list in Python?")
    assert hit["x-pointsman-cache"] == "hit-semantic" and text == "echo: How do I reverse a list in Python?"
    assert calls(upstream, name) == 1


# -- the shared store down or hanging (issue 15: each failed before the fix) --------------------------------------
@pytest.fixture
def redis_behind_a_proxy():
    import redis

    from tests.tcp_proxy import TcpProxy

    try:
        redis.Redis(socket_connect_timeout=1).ping()
    except redis.RedisError:
        skip_unless_service("no Redis at 127.0.0.1:6379")
    proxy = TcpProxy(6379).start()
    yield proxy
    proxy.stop()


def _store_config(upstream, proxy) -> dict:
    return cache_config(upstream, f"cache-{uuid.uuid4().hex[:8]}", store=f"redis://127.0.0.1:{proxy.port}/0",
                        prefix=f"pointsman-test:{uuid.uuid4().hex[:8]}", semantic=False, store_timeout_s=0.5)


def _timed(fn, *args):
    started = time.monotonic()
    return fn(*args), time.monotonic() - started


def test_a_redis_outage_is_a_miss_and_a_503_on_the_controls(make_gateway, upstream, keys, redis_behind_a_proxy):
    """A Redis outage made look-ups raise (a 500 on every cached request) and the controls answer a plain 500."""
    proxy = redis_behind_a_proxy
    gateway = make_gateway(_store_config(upstream, proxy))
    ask(gateway, "What is the capital of France?")
    assert ask(gateway, "What is the capital of France?")[0]["x-pointsman-cache"] == "hit-exact"
    proxy.cut()
    for text in ("Who wrote Hamlet?", "What is the capital of France?"):
        (headers, answer), took = _timed(ask, gateway, text)
        assert answer.startswith("echo:") and took < 3  # answered, with or without the cache
    refused = admin(gateway, "invalidate", {"all": True})
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "cache_unavailable"
    assert admin(gateway, "metrics").json()["store_errors"] >= 1
    proxy.restore()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and admin(gateway, "invalidate", {"all": True}).status_code != 200:
        time.sleep(0.2)
    assert admin(gateway, "invalidate", {"all": True}).status_code == 200  # back without a restart


def test_a_hanging_redis_costs_a_request_at_most_the_store_timeout(make_gateway, upstream, keys, redis_behind_a_proxy):
    proxy = redis_behind_a_proxy
    gateway = make_gateway(_store_config(upstream, proxy))
    ask(gateway, "What is 2 + 2?")
    proxy.hang()
    (headers, answer), took = _timed(ask, gateway, "What is the tallest mountain?")
    assert answer.startswith("echo:") and took < 2.5  # was 5 s, then a 500


def test_a_replica_starts_while_redis_is_down_and_uses_it_once_back(make_gateway, upstream, keys, redis_behind_a_proxy):
    """A replica started while Redis was down exited."""
    proxy = redis_behind_a_proxy
    proxy.cut()
    gateway = make_gateway(_store_config(upstream, proxy))
    assert ask(gateway, "Name a prime number.")[1].startswith("echo:")
    proxy.restore()
    deadline, hit = time.monotonic() + 15, None
    while time.monotonic() < deadline and hit != "hit-exact":
        ask(gateway, "Name an even number.")
        hit = ask(gateway, "Name an even number.")[0].get("x-pointsman-cache")
        time.sleep(0.2)
    assert hit == "hit-exact"
