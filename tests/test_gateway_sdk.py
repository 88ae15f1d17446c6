"""The gateway through the real `openai` SDK (sync, async, streaming, tools) on loopback."""

from __future__ import annotations

import json

import openai
import pytest

from tests.conftest import ledger_rows, model

WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


@pytest.fixture
def gateway(make_gateway, upstream):
    return make_gateway({
        "models": [
            model("cheap", upstream, prices={"input": 0.5, "output": 1.5}, capabilities=["json"]),
            model("strong", upstream, prices={"input": 10, "output": 30}, capabilities=["tools", "json"]),
        ],
        "policies": {
            "auto": {"rules": [{"name": "proofs", "when": {"keywords": ["prove"]}, "route": "strong"}], "default": "cheap"},
            "strong-first": {"default": "strong"},
        },
    })


def test_sync_chat_auto_routes_by_rule_and_reports_decision(gateway):
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": "hello there"}])
    answer = raw.parse()
    assert answer.choices[0].message.content == "echo: hello there"
    assert raw.headers["x-pointsman-model"] == "cheap"
    assert raw.headers["x-pointsman-tier"] == "default"
    # 2 prompt words at $0.5/M + 3 answer words at $1.5/M
    assert float(raw.headers["x-pointsman-cost-usd"]) == pytest.approx((2 * 0.5 + 3 * 1.5) / 1e6)
    assert 0 <= float(raw.headers["x-pointsman-overhead-ms"]) < 1000
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": "Prove that 2 is prime"}])
    assert raw.headers["x-pointsman-model"] == "strong"
    assert raw.headers["x-pointsman-tier"] == "rules"
    assert raw.headers["x-pointsman-reason"] == "rule proofs"


def test_named_policy_and_concrete_model(gateway):
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    raw = client.chat.completions.with_raw_response.create(model="router/strong-first", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-pointsman-model"] == "strong"
    raw = client.chat.completions.with_raw_response.create(model="cheap", messages=[{"role": "user", "content": "prove it"}])
    assert raw.headers["x-pointsman-model"] == "cheap"  # a named model is passed through, rules do not apply
    assert raw.headers["x-pointsman-tier"] == "direct"


def test_parameters_pass_through_untouched(gateway, upstream):
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    client.chat.completions.create(model="cheap", messages=[{"role": "user", "content": "hi"}], temperature=0.3, top_p=0.9,
                                   max_tokens=20, stop=["\n"], seed=7, response_format={"type": "json_object"},
                                   extra_body={"provider_specific": {"x": 1}})
    sent = upstream.stats()["last_body"]
    assert sent["model"] == "echo"  # the upstream's id replaces the pool name
    assert (sent["temperature"], sent["top_p"], sent["max_tokens"], sent["stop"], sent["seed"]) == (0.3, 0.9, 20, ["\n"], 7)
    assert sent["response_format"] == {"type": "json_object"}
    assert sent["provider_specific"] == {"x": 1}


def test_models_list(gateway):
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    ids = [m.id for m in client.models.list()]
    assert ids[:2] == ["cheap", "strong"]
    assert "auto" in ids and "router/strong-first" in ids


async def test_async_client_concurrent_requests(gateway):
    import asyncio

    client = openai.AsyncOpenAI(base_url=gateway.base_url, api_key="unused")
    answers = await asyncio.gather(*(client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": f"question {i}"}]) for i in range(20)))
    assert [a.choices[0].message.content for a in answers] == [f"echo: question {i}" for i in range(20)]
    await client.close()
    rows = ledger_rows(gateway)
    assert len(rows) == 20 and all(r["status"] == 200 for r in rows)


def test_streaming_with_usage(gateway):
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    stream = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "tell me a story"}],
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: tell me a story"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    assert sum(1 for c in chunks if c.usage) == 1


def test_streaming_without_usage_hides_the_usage_chunk_but_costs_the_request(gateway):
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    with client.chat.completions.with_streaming_response.create(
            model="auto", messages=[{"role": "user", "content": "tell me"}], stream=True) as response:
        assert response.headers["x-pointsman-model"] == "cheap"
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = list(response.parse())
    assert all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "echo: tell me"
    row = ledger_rows(gateway)[-1]
    assert row["stream"] == 1 and row["completion_tokens"] == 3 and row["cost_usd"] > 0 and row["ttft_ms"] is not None


def test_tools_route_only_to_capable_models_and_return_tool_calls(gateway):
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "What is the weather in Paris?"}], tools=[WEATHER_TOOL])
    answer = raw.parse()
    assert raw.headers["x-pointsman-model"] == "strong"  # cheap has no "tools" capability
    call = answer.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert answer.choices[0].finish_reason == "tool_calls"


def test_streamed_tool_call_reassembles(gateway):
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    stream = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "weather in Paris?"}],
                                            tools=[WEATHER_TOOL], stream=True)
    arguments, name = "", None
    for chunk in stream:
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            name = call.function.name or name
            arguments += call.function.arguments or ""
    assert name == "get_weather" and json.loads(arguments) == {"city": "Paris"}


def test_ledger_records_every_request_without_secrets(gateway):
    from tests.conftest import UPSTREAM_SECRET

    client = openai.OpenAI(base_url=gateway.base_url, api_key="client-key", max_retries=0)
    client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "one"}], user="alice",
                                   extra_headers={"x-pointsman-team": "search", "x-pointsman-cohort": "beta"})
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "two"}])
    rows = ledger_rows(gateway)
    assert [r["status"] for r in rows] == [200, 404]
    ok, missing = rows
    assert (ok["requested_model"], ok["chosen_model"], ok["tier"], ok["user"], ok["team"], ok["cohort"]) == (
        "auto", "cheap", "default", "alice", "search", "beta")
    assert ok["prompt_tokens"] == 1 and ok["completion_tokens"] == 2 and ok["latency_ms"] > 0
    assert json.loads(ok["attempts"])[0][:2] == ["cheap", "ok"]
    assert "does not exist" in missing["error"]
    dump = gateway.ledger_path.read_bytes()
    assert UPSTREAM_SECRET.encode() not in dump and b"client-key" not in dump


def test_anthropic_model_through_the_gateway(make_gateway, upstream):
    from tests.conftest import API_KEY_ENV, UPSTREAM_SECRET

    gw = make_gateway({"models": [{"name": "claude", "provider": "anthropic", "base_url": upstream.url, "model": "echo",
                                   "api_key_env": API_KEY_ENV, "capabilities": ["tools"], "prices": {"input": 3, "output": 15}}]})
    client = openai.OpenAI(base_url=gw.base_url, api_key="unused")
    answer = client.chat.completions.create(model="claude", messages=[{"role": "system", "content": "be brief"},
                                                                      {"role": "user", "content": "hello"}])
    assert answer.choices[0].message.content == "echo: hello" and answer.usage.completion_tokens > 0
    assert upstream.stats()["last_headers"]["x-api-key"] == UPSTREAM_SECRET
    assert upstream.stats()["last_body"]["system"]  # the system message moved to Anthropic's field
    stream = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "weather in Paris?"}],
                                            tools=[WEATHER_TOOL], stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    arguments = "".join(call.function.arguments or "" for c in chunks if c.choices for call in (c.choices[0].delta.tool_calls or []))
    assert json.loads(arguments) == {"city": "Paris"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    assert chunks[-1].usage.prompt_tokens > 0
    row = ledger_rows(gw)[-1]
    assert row["cost_usd"] > 0 and row["chosen_model"] == "claude"
