"""POST /v1/responses (OpenAI's Responses API) through the real `openai` SDK's `client.responses` against the
running gateway: input items, instructions, function calls, typed stream events, stored responses and
previous_response_id per tenant, GET and DELETE (issue 22)."""

from __future__ import annotations

import json
import sqlite3

import openai
import pytest

from tests.conftest import API_KEY_ENV, ledger_rows, model
from tests.accounting_services import pg_rows

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture
def gateway(make_gateway, upstream):
    return make_gateway({
        "models": [
            model("cheap", upstream, prices={"input": 0.5, "output": 1.5}),
            model("strong", upstream, prices={"input": 10, "output": 30}, capabilities=["tools", "json"]),
            {"name": "claude", "provider": "anthropic", "base_url": upstream.url, "model": "claude-test",
             "api_key_env": API_KEY_ENV, "prices": {"input": 15, "output": 75}, "capabilities": ["tools"]},
        ],
        "policies": {"auto": {"default": "cheap"}},
    })


def client(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)


def test_text_input_and_instructions(gateway, upstream):
    raw = client(gateway).responses.with_raw_response.create(model="auto", instructions="Be brief.", input="hello there")
    response = raw.parse()
    assert response.object == "response" and response.status == "completed" and response.model == "cheap"
    assert response.output_text == "echo: hello there"
    assert response.usage.input_tokens == 4 and response.usage.output_tokens == 3
    assert response.id == "resp_" + raw.headers["x-pointsman-request-id"].removeprefix("req_")
    assert raw.headers["x-pointsman-tier"] == "default" and float(raw.headers["x-pointsman-cost-usd"]) > 0
    assert upstream.stats()["last_body"]["messages"] == [{"role": "system", "content": "Be brief."},
                                                          {"role": "user", "content": "hello there"}]


def test_function_calls_round_trip_through_previous_response_id(gateway, upstream):
    c = client(gateway)
    first = c.responses.create(model="auto", input="What is the weather in Paris?", tools=[WEATHER])
    call = first.output[0]
    assert call.type == "function_call" and call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    assert first.model == "strong"  # tools: cheap is not eligible
    second = c.responses.create(model="claude", previous_response_id=first.id, tools=[WEATHER],
                                input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"}])
    assert second.output_text == "echo: sunny, 21 C" and second.previous_response_id == first.id
    sent = upstream.stats()["last_body"]["messages"]  # the stored conversation was continued, in Anthropic's shape
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"][0]["type"] == "tool_use" and sent[2]["content"][0]["type"] == "tool_result"
    third = c.responses.create(model="auto", previous_response_id=second.id, input="and tomorrow?")
    assert third.output_text == "echo: and tomorrow?"
    assert [m["role"] for m in upstream.stats()["last_body"]["messages"]] == ["user", "assistant", "tool", "assistant", "user"]


def test_explicit_input_items_and_json_output(gateway, upstream):
    response = client(gateway).responses.create(model="auto", input=[
        {"role": "developer", "content": "Answer in JSON."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "four apples"}]}],
        text={"format": {"type": "json_schema", "name": "fruit", "schema": {"type": "object"}}})
    assert response.model == "strong"  # json capability
    sent = upstream.stats()["last_body"]
    assert sent["response_format"]["type"] == "json_schema" and sent["response_format"]["json_schema"]["name"] == "fruit"
    assert sent["messages"][0] == {"role": "system", "content": "Answer in JSON."}


def test_get_and_delete_are_tenant_scoped(make_gateway, upstream, monkeypatch):
    monkeypatch.setenv("POINTSMAN_TEST_KEY_A", "sk-a")
    monkeypatch.setenv("POINTSMAN_TEST_KEY_B", "sk-b")
    gateway = make_gateway({"models": [model("cheap", upstream)],
                            "server": {"api_keys_env": ["POINTSMAN_TEST_KEY_A", "POINTSMAN_TEST_KEY_B"]}})
    a = openai.OpenAI(base_url=gateway.base_url, api_key="sk-a", max_retries=0)
    b = openai.OpenAI(base_url=gateway.base_url, api_key="sk-b", max_retries=0)
    made = a.responses.create(model="auto", input="remember me")
    assert a.responses.retrieve(made.id).output_text == "echo: remember me"
    with pytest.raises(openai.NotFoundError):
        b.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        b.responses.create(model="auto", previous_response_id=made.id, input="and now?")
    with pytest.raises(openai.NotFoundError):
        b.responses.delete(made.id)
    a.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        a.responses.retrieve(made.id)
    unstored = a.responses.create(model="auto", input="forget me", store=False)
    with pytest.raises(openai.NotFoundError):
        a.responses.retrieve(unstored.id)


def test_streaming_typed_events_text_and_function_call(gateway):
    c = client(gateway)
    events = list(c.responses.create(model="auto", input="tell me a story", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(1, len(events) + 1))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "echo: tell me a story"
    done = events[-1].response
    assert done.output_text == "echo: tell me a story" and done.usage.output_tokens == 5
    with c.responses.stream(model="auto", input="weather in Paris?", tools=[WEATHER]) as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.output[0].type == "function_call" and json.loads(final.output[0].arguments) == {"city": "Paris"}
    assert c.responses.retrieve(final.id).output[0].call_id == final.output[0].call_id  # stored after a stream too
    row = ledger_rows(gateway)[-1]
    assert row["stream"] == 1 and row["chosen_model"] == "strong" and row["cost_usd"] > 0


async def test_async_client(gateway):
    c = openai.AsyncOpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    first = await c.responses.create(model="auto", input="one")
    second = await c.responses.create(model="auto", input="two", previous_response_id=first.id)
    assert second.output_text == "echo: two"
    stream = await c.responses.create(model="claude", input="three", stream=True)
    kinds = [event.type async for event in stream]
    assert kinds[-1] == "response.completed"
    await c.close()


def test_errors_and_unsupported_tools(gateway):
    c = client(gateway)
    with pytest.raises(openai.BadRequestError) as caught:
        c.responses.create(model="auto", input="search", tools=[{"type": "web_search"}])
    assert "web_search" in caught.value.message
    with pytest.raises(openai.NotFoundError):
        c.responses.create(model="auto", input="hi", previous_response_id="resp_unknown")
    with pytest.raises(openai.NotFoundError):
        c.responses.create(model="no-such-model", input="hi")


def test_stored_responses_live_in_the_ledgers_database(gateway):
    made = client(gateway).responses.create(model="auto", input="where am I kept?")
    db = sqlite3.connect(gateway.ledger_path)
    try:
        (request_id,) = db.execute("SELECT request_id FROM responses WHERE id = ?", (made.id,)).fetchone()
    finally:
        db.close()
    assert request_id in {r["id"] for r in ledger_rows(gateway)}


def test_stored_responses_are_purged_after_their_retention(gateway):
    import asyncio
    import time

    from pointsman.app import responses

    api = client(gateway)
    kept = api.responses.create(model="auto", input="keep me for a while")
    assert api.responses.retrieve(kept.id).id == kept.id
    assert asyncio.run(responses.purge(gateway.gateway, time.time() - 3600)) == 0  # younger than the cut: kept
    assert asyncio.run(responses.purge(gateway.gateway, time.time() + 1)) == 1
    with pytest.raises(openai.NotFoundError):
        api.responses.retrieve(kept.id)


def test_stored_responses_and_sessions_in_postgresql(make_gateway, upstream, pg_url):
    """The same through a PostgreSQL ledger: previous_response_id continues across two replicas sharing it, and
    each row's session is in the ledger."""
    config = {"models": [model("cheap", upstream, capabilities=["tools"])], "server": {"ledger_url": pg_url}}
    one, two = make_gateway(config), make_gateway(config)
    tools = [WEATHER]
    first = client(one).responses.create(model="auto", input="What is the weather in Paris?", tools=tools)
    second = client(two).responses.create(model="auto", previous_response_id=first.id, tools=tools, input=[
        {"type": "function_call_output", "call_id": first.output[0].call_id, "output": "sunny"}])
    assert second.output[0].type == "function_call"  # the conversation came back from the other replica
    assert client(two).responses.retrieve(first.id).id == first.id
    one.flush_ledger()
    two.flush_ledger()
    sessions = {s for (s,) in pg_rows(pg_url, "SELECT session FROM requests")}
    assert len(sessions) == 1 and next(iter(sessions)).startswith("conv-")
