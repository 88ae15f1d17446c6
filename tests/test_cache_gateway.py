"""The cache through the gateway: exact and semantic hits, the false-hit guard, tenants, streams,
errors never cached, controls; and two replicas sharing Redis."""

from __future__ import annotations

import time
import uuid

import openai
import pytest

from tests.conftest import ledger_rows, model


def ask(gateway, text: str, key: str = "unused", stream: bool = False, temperature: float | None = 0, **headers):
    client = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    extra = {"temperature": temperature} if temperature is not None else {}
    messages = [{"role": "user", "content": text}]
    if stream:
        with client.chat.completions.with_streaming_response.create(model="m", messages=messages, stream=True,
                                                                   extra_headers=headers or None, **extra) as response:
            chunks = list(response.parse())
            return response.headers, "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    raw = client.chat.completions.with_raw_response.create(model="m", messages=messages, extra_headers=headers or None, **extra)
    return raw.headers, raw.parse().choices[0].message.content


@pytest.fixture
def cached(make_gateway, upstream):
    name = f"cache-{uuid.uuid4().hex[:8]}"  # a model id of its own: upstream call counts are this test's alone
    return make_gateway({"models": [model("m", upstream, name)], "server": {"cache": {"enabled": True}}}), name


def calls(upstream, name) -> int:
    return upstream.stats()["counts"].get(name, 0)


def test_exact_repeat_is_served_from_the_cache(cached, upstream):
    gateway, name = cached
    first, text = ask(gateway, "What is the capital of France?")
    again, text_again = ask(gateway, "What is the capital of France?")
    assert "x-pointsman-cache" not in first and again["x-pointsman-cache"] == "hit-exact"
    assert text_again == text and calls(upstream, name) == 1
    assert again["x-pointsman-tier"] == "cache" and again["x-pointsman-cost-usd"] == "0"
    rows = ledger_rows(gateway)
    assert [r["cache_hit"] for r in rows] == [0, 1] and rows[1]["cost_usd"] == 0


def test_a_paraphrase_is_a_semantic_hit_with_its_evidence(cached, upstream):
    gateway, name = cached
    ask(gateway, "How do I reverse a list in Python?")
    headers, text = ask(gateway, "How can I reverse a list in Python?")
    assert headers["x-pointsman-cache"] == "hit-semantic" and calls(upstream, name) == 1
    assert float(headers["x-pointsman-cache-similarity"]) > 0.9 and headers["x-pointsman-cache-checks"]
    assert text == "echo: How do I reverse a list in Python?"


@pytest.mark.parametrize("first, second", [
    ("turn on dark mode", "turn off dark mode"),
    ("Convert 10 miles to kilometres", "Convert 12 miles to kilometres"),
    ("What is the population of France?", "What is the population of Spain?"),
])
def test_the_false_hit_guard_refuses_near_misses(cached, upstream, first, second):
    gateway, name = cached
    ask(gateway, first)
    headers, text = ask(gateway, second)
    assert "x-pointsman-cache" not in headers and text == f"echo: {second}" and calls(upstream, name) == 2


def test_tenants_never_share_answers(make_gateway, upstream, monkeypatch):
    monkeypatch.setenv("KEY_A", "sk-tenant-a")
    monkeypatch.setenv("KEY_B", "sk-tenant-b")
    name = f"cache-{uuid.uuid4().hex[:8]}"
    gateway = make_gateway({"models": [model("m", upstream, name)],
                            "server": {"cache": {"enabled": True}, "api_keys_env": ["KEY_A", "KEY_B"]}})
    ask(gateway, "Summarise our Q3 plan", key="sk-tenant-a")
    other, _ = ask(gateway, "Summarise our Q3 plan", key="sk-tenant-b")
    same, _ = ask(gateway, "Summarise our Q3 plan", key="sk-tenant-a")
    assert "x-pointsman-cache" not in other and same["x-pointsman-cache"] == "hit-exact"
    assert calls(upstream, name) == 2


def test_errors_are_never_cached(make_gateway, upstream):
    name = f"cache-{uuid.uuid4().hex[:8]}"
    gateway = make_gateway({"models": [model("m", upstream, name, max_retries=0)], "server": {"cache": {"enabled": True}}})
    upstream.script(name, ["status:500", "echo", "echo"])
    with pytest.raises(openai.InternalServerError):
        ask(gateway, "hello")
    headers, text = ask(gateway, "hello")
    assert "x-pointsman-cache" not in headers and text == "echo: hello"
    assert ask(gateway, "hello")[0]["x-pointsman-cache"] == "hit-exact" and calls(upstream, name) == 2


def test_a_streamed_answer_is_cached_once_complete_and_replayed_as_sse(cached, upstream):
    gateway, name = cached
    _, streamed = ask(gateway, "Tell me about the moon", stream=True)
    headers, replayed = ask(gateway, "Tell me about the moon", stream=True)
    assert headers["x-pointsman-cache"] == "hit-exact" and headers["content-type"].startswith("text/event-stream")
    assert replayed == streamed == "echo: Tell me about the moon"
    as_json, text = ask(gateway, "Tell me about the moon")
    assert as_json["x-pointsman-cache"] == "hit-exact" and text == streamed and calls(upstream, name) == 1


def test_controls_and_sampling(cached, upstream):
    gateway, name = cached
    ask(gateway, "ping")
    assert "x-pointsman-cache" not in ask(gateway, "ping", **{"x-pointsman-cache": "bypass"})[0]
    ask(gateway, "sampled", temperature=None)  # no temperature: OpenAI samples at 1.0, so no caching
    assert "x-pointsman-cache" not in ask(gateway, "sampled", temperature=None)[0]
    assert calls(upstream, name) == 4


def test_two_replicas_share_entries_through_redis(make_gateway, upstream):
    import redis

    prefix = f"pointsman-test:{uuid.uuid4().hex[:8]}"
    name = f"cache-{uuid.uuid4().hex[:8]}"
    config = {"models": [model("m", upstream, name)],
              "server": {"cache": {"enabled": True, "store": "redis://127.0.0.1:6379/0", "prefix": prefix}}}
    try:
        first, second = make_gateway(config), make_gateway(config)
        ask(first, "What is the boiling point of water at sea level?")
        time.sleep(0.25)  # the stated propagation bound between replicas
        headers, _ = ask(second, "What is the boiling point of water at sea level?")
        assert headers["x-pointsman-cache"] == "hit-exact" and calls(upstream, name) == 1
        other_tenant, _ = ask(second, "What is the boiling point of water at sea level?", **{"x-pointsman-team": "other"})
        assert "x-pointsman-cache" not in other_tenant
    finally:
        client = redis.Redis()
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
