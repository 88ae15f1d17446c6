"""POST /v1/messages (Anthropic's Messages API in) through the real `anthropic` SDK against the running gateway:
routed like a chat request, answered by a pool model of either protocol, in Anthropic's shapes (issue 22)."""

from __future__ import annotations

import asyncio
import base64

import anthropic
import httpx
import pytest

from tests.conftest import API_KEY_ENV, ledger_rows, model

WEATHER = {"name": "get_weather", "description": "Weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture
def gateway(make_gateway, upstream):
    return make_gateway({
        "models": [
            model("cheap", upstream, prices={"input": 0.5, "output": 1.5}),
            model("strong", upstream, prices={"input": 10, "output": 30}, capabilities=["tools", "vision"]),
            {"name": "claude", "provider": "anthropic", "base_url": upstream.url, "model": "claude-test",
             "api_key_env": API_KEY_ENV, "prices": {"input": 15, "output": 75}, "capabilities": ["tools", "vision"]},
        ],
        "policies": {"auto": {"rules": [{"name": "proofs", "when": {"keywords": ["prove"]}, "route": "strong"}],
                              "default": "cheap"}},
    })


def client(gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0)


def test_text_with_system_prompt_is_routed_and_answered_as_a_message(gateway, upstream):
    raw = client(gateway).messages.with_raw_response.create(
        model="auto", max_tokens=100, system="Be brief.", messages=[{"role": "user", "content": "hello there"}])
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text" and message.content[0].text == "echo: hello there"
    assert message.stop_reason == "end_turn" and message.model == "cheap"
    assert message.usage.input_tokens == 4 and message.usage.output_tokens == 3  # 'Be brief.' + 'hello there'
    assert raw.headers["x-pointsman-model"] == "cheap" and raw.headers["x-pointsman-tier"] == "default"
    assert float(raw.headers["x-pointsman-cost-usd"]) == pytest.approx((4 * 0.5 + 3 * 1.5) / 1e6)
    assert message.id == "msg_" + raw.headers["x-pointsman-request-id"].removeprefix("req_")
    sent = upstream.stats()["last_body"]
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."} and sent["max_tokens"] == 100
    row = ledger_rows(gateway)[-1]
    assert row["requested_model"] == "auto" and row["chosen_model"] == "cheap" and row["status"] == 200


def test_rules_and_named_models_apply_and_an_anthropic_upstream_can_answer(gateway):
    c = client(gateway)
    raw = c.messages.with_raw_response.create(model="auto", max_tokens=50,
                                              messages=[{"role": "user", "content": "prove it"}])
    assert raw.headers["x-pointsman-tier"] == "rules" and raw.parse().model == "strong"
    message = c.messages.create(model="claude", max_tokens=50, messages=[{"role": "user", "content": "bonjour"}])
    assert message.content[0].text == "echo: bonjour" and message.model == "claude"


def test_tool_use_and_tool_result_round_trip(gateway, upstream):
    c = client(gateway)
    first = c.messages.create(model="auto", max_tokens=200, tools=[WEATHER],
                              messages=[{"role": "user", "content": "What is the weather in Paris?"}])
    assert first.stop_reason == "tool_use" and first.model == "strong"  # cheap cannot use tools
    use = first.content[0]
    assert use.type == "tool_use" and use.name == "get_weather" and use.input == {"city": "Paris"}
    second = c.messages.create(model="claude", max_tokens=200, tools=[WEATHER], messages=[
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": use.id, "name": use.name, "input": use.input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 21 C"}]}])
    assert second.stop_reason == "end_turn" and second.content[0].text == "echo: sunny, 21 C"
    sent = upstream.stats()["last_body"]  # the Anthropic upstream got the tool turn back in its own shape
    assert sent["messages"][1]["content"][0]["type"] == "tool_use"
    assert sent["messages"][2]["content"][0] == {"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 21 C"}


def test_image_blocks_go_as_image_parts_to_a_vision_model(gateway, upstream):
    data = base64.b64encode(b"\x89PNG fake").decode()
    message = client(gateway).messages.create(model="auto", max_tokens=50, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}},
        {"type": "text", "text": "what is this"}]}])
    assert message.model == "strong"  # vision needed: cheap is not eligible
    part = upstream.stats()["last_body"]["messages"][0]["content"][0]
    assert part == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}


def test_streaming_text_and_tools_with_the_sdk_accumulating_the_message(gateway):
    c = client(gateway)
    with c.messages.stream(model="auto", max_tokens=100, messages=[{"role": "user", "content": "tell me a story"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "echo: tell me a story" and final.content[0].text == text
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 5 and final.usage.input_tokens == 4
    with c.messages.stream(model="auto", max_tokens=100, tools=[WEATHER],
                           messages=[{"role": "user", "content": "weather in Paris?"}]) as s:
        events = [e.type for e in s]
        final = s.get_final_message()
    assert events[0] == "message_start" and "content_block_start" in events and events[-1] == "message_stop"
    assert final.stop_reason == "tool_use" and final.content[0].input == {"city": "Paris"}
    row = ledger_rows(gateway)[-1]
    assert row["stream"] == 1 and row["chosen_model"] == "strong" and row["cost_usd"] > 0


async def test_async_client_concurrent_and_streaming(gateway):
    c = anthropic.AsyncAnthropic(base_url=gateway.url, api_key="unused", max_retries=0)
    answers = await asyncio.gather(*(c.messages.create(model="auto", max_tokens=20, messages=[
        {"role": "user", "content": f"question {i}"}]) for i in range(10)))
    assert [a.content[0].text for a in answers] == [f"echo: question {i}" for i in range(10)]
    async with c.messages.stream(model="claude", max_tokens=50, messages=[{"role": "user", "content": "hi you"}]) as s:
        final = await s.get_final_message()
    assert final.content[0].text == "echo: hi you"
    await c.close()


def test_errors_come_back_in_anthropic_shape(gateway, upstream):
    c = client(gateway)
    with pytest.raises(anthropic.NotFoundError) as caught:
        c.messages.create(model="claude-opus-9", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["type"] == "error" and caught.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as bad:
        c.messages.create(model="auto", max_tokens=10, messages=[])
    assert bad.value.body["error"]["type"] == "invalid_request_error" and "messages" in bad.value.body["error"]["message"]
    upstream.script("echo", ["status:500", "status:500", "status:500"])
    with pytest.raises(anthropic.InternalServerError) as failed:
        c.messages.create(model="cheap", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert failed.value.body["error"]["type"] == "api_error"
    upstream.reset()
    response = httpx.get(f"{gateway.url}/v1/messages")
    assert response.status_code == 405 and response.json()["type"] == "error"


def test_client_keys_are_read_from_x_api_key(make_gateway, upstream, monkeypatch):
    monkeypatch.setenv("POINTSMAN_TEST_CLIENT_KEY", "sk-client-1")
    gateway = make_gateway({"models": [model("cheap", upstream)], "server": {"api_keys_env": ["POINTSMAN_TEST_CLIENT_KEY"]}})
    with pytest.raises(anthropic.AuthenticationError) as caught:
        anthropic.Anthropic(base_url=gateway.url, api_key="wrong", max_retries=0).messages.create(
            model="auto", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["error"]["type"] == "authentication_error"
    ok = anthropic.Anthropic(base_url=gateway.url, api_key="sk-client-1").messages.create(
        model="auto", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert ok.content[0].text == "echo: hi"


def test_count_tokens_estimates_without_calling_a_model(gateway, upstream):
    before = upstream.stats()["counts"]
    counted = client(gateway).messages.count_tokens(model="auto", system="Be brief.", tools=[WEATHER],
                                                    messages=[{"role": "user", "content": "x" * 400}])
    assert 100 < counted.input_tokens < 200
    assert upstream.stats()["counts"] == before


def test_cache_serves_a_repeated_message_request(make_gateway, upstream):
    gateway = make_gateway({"models": [model("cheap", upstream)],
                            "server": {"cache": {"enabled": True, "semantic": False}}})
    c = client(gateway)
    # (anthropic 2.x takes no temperature argument: it goes in the body as the API reads it)
    asked = {"model": "auto", "max_tokens": 20, "extra_body": {"temperature": 0},
             "messages": [{"role": "user", "content": "cache me"}]}
    c.messages.create(**asked)
    raw = c.messages.with_raw_response.create(**asked)
    assert raw.headers["x-pointsman-tier"] == "cache" and raw.parse().content[0].text == "echo: cache me"
    with c.messages.stream(**asked) as s:
        assert s.get_final_message().content[0].text == "echo: cache me"
