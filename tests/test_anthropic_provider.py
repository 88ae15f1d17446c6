"""AnthropicProvider: the translation both ways as pure functions, then the provider over real HTTP
against a loopback aiohttp server that answers from tests/upstream/anthropic_api.py."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from pointsman.config.schema import ModelConfig
from pointsman.providers.anthropic import (
    JSON_INSTRUCTION,
    AnthropicProvider,
    StreamTranslator,
    from_anthropic_response,
    to_anthropic_request,
)
from pointsman.providers.base import ProviderError
from pointsman.providers.transport import ReqwestTransport
from tests.upstream.anthropic_api import messages_response, messages_stream_events

WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                                  "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


def translate(body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return to_anthropic_request(body, "claude-test", **kwargs)


def parse_events(events: list[bytes]) -> list[dict[str, Any]]:
    parsed = []
    for raw in events:
        name, data = raw.rstrip(b"\n").split(b"\n")
        event = orjson.loads(data.removeprefix(b"data: "))
        assert name == b"event: " + event["type"].encode()  # the event line names the data's type
        parsed.append(event)
    return parsed


def translate_stream(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    translator = StreamTranslator()
    chunks = [chunk for event in events for chunk in translator.feed(event)]
    assert translator.done
    return chunks


def reassemble(chunks: list[dict[str, Any]]) -> tuple[str, dict[int, dict[str, str]], str | None]:
    """Content, tool calls by index, and finish reason, put back together as a client would."""
    text, tools, finish = "", {}, None
    for chunk in chunks:
        for choice in chunk["choices"]:
            delta = choice["delta"]
            text += delta.get("content") or ""
            for call in delta.get("tool_calls") or ():
                tool = tools.setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
                tool["id"] += call.get("id") or ""
                tool["name"] += (call.get("function") or {}).get("name") or ""
                tool["arguments"] += (call.get("function") or {}).get("arguments") or ""
            finish = choice["finish_reason"] or finish
    return text, tools, finish


# --- request translation ------------------------------------------------------------------------


def test_system_and_developer_messages_become_top_level_system() -> None:
    request = translate({"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
        {"role": "user", "content": "hi"},
    ]})
    assert request["system"] == "Be brief.\n\nUse French."
    assert request["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert request["model"] == "claude-test"


@pytest.mark.parametrize(("body", "default", "expected"), [
    ({}, None, 4096),
    ({}, 1000, 1000),
    ({"max_tokens": 50}, 1000, 50),
    ({"max_tokens": 50, "max_completion_tokens": 70}, None, 70),
])
def test_max_tokens_is_always_set(body: dict[str, Any], default: int | None, expected: int) -> None:
    request = translate({"messages": [{"role": "user", "content": "hi"}], **body}, default_max_tokens=default)
    assert request["max_tokens"] == expected


def test_images_from_data_urls_and_http_urls() -> None:
    request = translate({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}},
    ]}]})
    assert request["messages"][0]["content"] == [
        {"type": "text", "text": "what is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


def test_unsupported_content_part_is_refused() -> None:
    with pytest.raises(ProviderError) as info:
        translate({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]})
    assert info.value.status == 400 and info.value.kind == "unsupported_by_model"


def test_tool_calls_and_results_round_trip_into_alternating_turns() -> None:
    request = translate({"messages": [
        {"role": "user", "content": "weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "rainy"}]},
        {"role": "user", "content": "thanks"},
    ]})
    assert [turn["role"] for turn in request["messages"]] == ["user", "assistant", "user"]
    assert request["messages"][1]["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}},
    ]
    assert request["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
        {"type": "tool_result", "tool_use_id": "call_2", "content": "rainy"},
        {"type": "text", "text": "thanks"},
    ]


def test_consecutive_same_role_turns_are_merged() -> None:
    request = translate({"messages": [
        {"role": "user", "content": "one"}, {"role": "assistant", "content": ""}, {"role": "user", "content": "two"},
        {"role": "assistant", "content": "three"}, {"role": "assistant", "content": "four"},
    ]})  # the empty assistant turn is dropped: Anthropic refuses empty content
    assert request["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "three"}, {"type": "text", "text": "four"}]},
    ]


def test_tool_arguments_that_are_not_a_json_object_are_refused() -> None:
    with pytest.raises(ProviderError) as info:
        translate({"messages": [{"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]})
    assert info.value.status == 400 and not info.value.retryable


def test_tools_become_input_schemas() -> None:
    request = translate({"messages": [{"role": "user", "content": "hi"}],
                         "tools": [WEATHER_TOOL, {"type": "function", "function": {"name": "now"}}]})
    assert request["tools"] == [
        {"name": "get_weather", "description": "Weather of a city",
         "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in request


@pytest.mark.parametrize(("choice", "expected"), [
    ("auto", {"type": "auto"}),
    ("none", {"type": "none"}),
    ("required", {"type": "any"}),
    ({"type": "function", "function": {"name": "get_weather"}}, {"type": "tool", "name": "get_weather"}),
])
def test_tool_choice_mapping(choice: Any, expected: dict[str, Any]) -> None:
    request = translate({"messages": [{"role": "user", "content": "hi"}], "tools": [WEATHER_TOOL], "tool_choice": choice})
    assert request["tool_choice"] == expected


def test_parallel_tool_calls_false_disables_parallel_tool_use() -> None:
    request = translate({"messages": [{"role": "user", "content": "hi"}], "tools": [WEATHER_TOOL],
                         "parallel_tool_calls": False})
    assert request["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


def test_sampling_parameters_stop_user_and_dropped_openai_only_parameters() -> None:
    request = translate({"messages": [{"role": "user", "content": "hi"}], "stop": "END", "temperature": 1.7,
                         "top_p": 0.9, "user": "u-42", "n": 1, "logprobs": True, "presence_penalty": 0.5,
                         "seed": 7, "stream": True}, stream=False)
    assert request["stop_sequences"] == ["END"]
    assert request["temperature"] == 1.0  # clamped into Anthropic's range
    assert request["top_p"] == 0.9
    assert request["metadata"] == {"user_id": "u-42"}
    assert set(request) == {"model", "messages", "max_tokens", "stop_sequences", "temperature", "top_p", "metadata"}
    assert translate({"messages": [], "stop": ["a", "b"]}, stream=True)["stop_sequences"] == ["a", "b"]
    assert translate({"messages": []}, stream=True)["stream"] is True


def test_response_format_adds_a_json_instruction() -> None:
    as_object = translate({"messages": [{"role": "system", "content": "Sys."}, {"role": "user", "content": "hi"}],
                           "response_format": {"type": "json_object"}})
    assert as_object["system"] == f"Sys.\n\n{JSON_INSTRUCTION}"
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    with_schema = translate({"messages": [{"role": "user", "content": "hi"}],
                             "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}})
    assert with_schema["system"].startswith(JSON_INSTRUCTION)
    assert orjson.dumps(schema).decode() in with_schema["system"]
    assert "system" not in translate({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "text"}})


def test_n_above_one_is_refused_as_unsupported() -> None:
    with pytest.raises(ProviderError) as info:
        translate({"messages": [{"role": "user", "content": "hi"}], "n": 2})
    assert (info.value.status, info.value.retryable, info.value.kind) == (400, False, "unsupported_by_model")
    assert "n must be 1" in info.value.message


def test_the_client_body_is_not_mutated() -> None:
    body = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
            "tools": [WEATHER_TOOL], "tool_choice": "auto", "parallel_tool_calls": False,
            "response_format": {"type": "json_object"}}
    before = copy.deepcopy(body)
    translate(body)
    assert body == before


# --- answer translation --------------------------------------------------------------------------


def test_text_answer_becomes_a_chat_completion_with_cache_tokens_in_the_prompt() -> None:
    completion = from_anthropic_response({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": " world"}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 10, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5, "output_tokens": 3},
    })
    assert completion["object"] == "chat.completion" and completion["id"] == "msg_1" and completion["model"] == "claude-x"
    assert isinstance(completion["created"], int) and completion["created"] > 1_600_000_000
    assert completion["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hello world"}, "finish_reason": "stop"}]
    assert completion["usage"] == {"prompt_tokens": 115, "completion_tokens": 3, "total_tokens": 118,
                                   "prompt_tokens_details": {"cached_tokens": 100},
                                   "cache_creation_input_tokens": 5}  # billed at the cache-write rate


@pytest.mark.parametrize(("stop_reason", "finish_reason"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
])
def test_finish_reasons(stop_reason: str, finish_reason: str) -> None:
    completion = from_anthropic_response({"type": "message", "content": [{"type": "text", "text": "x"}],
                                          "stop_reason": stop_reason, "usage": {"input_tokens": 1, "output_tokens": 1}})
    assert completion["choices"][0]["finish_reason"] == finish_reason


def test_tool_use_answer_has_no_content_and_json_string_arguments() -> None:
    body = {"model": "claude-test", "max_tokens": 100, "tools": [{"name": "get_weather", "input_schema": {}}],
            "messages": [{"role": "user", "content": "What is the weather like?"}]}
    completion = from_anthropic_response(messages_response(body))
    message = completion["choices"][0]["message"]
    assert message["content"] is None
    [call] = message["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("toolu_") and call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert completion["choices"][0]["finish_reason"] == "tool_calls"


# --- stream translation and the test upstream --------------------------------------------------


def test_test_upstream_echoes_and_counts_words() -> None:
    answer = messages_response({"model": "m", "max_tokens": 100, "system": "be nice",
                                "messages": [{"role": "user", "content": [{"type": "text", "text": "hello there you"}]}]})
    assert answer["content"] == [{"type": "text", "text": "echo: hello there you"}]
    assert answer["usage"]["input_tokens"] == 5 and answer["usage"]["output_tokens"] == 4
    assert answer["stop_reason"] == "end_turn" and answer["type"] == "message" and answer["id"].startswith("msg_")
    truncated = messages_response({"model": "m", "max_tokens": 2, "messages": [{"role": "user", "content": "a b c d"}]})
    assert truncated["content"][0]["text"] == "echo: a" and truncated["stop_reason"] == "max_tokens"
    after_tool = messages_response({"model": "m", "max_tokens": 100, "tools": [{"name": "get_weather", "input_schema": {}}],
                                    "messages": [{"role": "user", "content": "weather?"},
                                                 {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "get_weather", "input": {}}]},
                                                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "sunny weather"}]}]})
    assert after_tool["content"] == [{"type": "text", "text": "echo: sunny weather"}]  # answers, no tool loop


def test_test_upstream_stream_matches_its_answer() -> None:
    for text, tools in (("tell me a story please", None), ("weather today?", [{"name": "get_weather", "input_schema": {}}])):
        body = {"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": text}], "tools": tools}
        answer = messages_response(body)
        events = parse_events(messages_stream_events(body))
        deltas = [e["delta"] for e in events if e["type"] == "content_block_delta"]
        assert [e["type"] for e in events] == ["message_start", "content_block_start", "ping",
                                               *["content_block_delta"] * len(deltas),
                                               "content_block_stop", "message_delta", "message_stop"]
        assert events[0]["message"]["content"] == [] and events[0]["message"]["stop_reason"] is None
        assert len([d for d in deltas if d.get("text") or d.get("partial_json")]) >= 2
        block = answer["content"][0]
        if block["type"] == "text":
            assert "".join(d["text"] for d in deltas) == block["text"]
        else:
            assert deltas[0] == {"type": "input_json_delta", "partial_json": ""}  # as the API opens a tool's input
            assert events[1]["content_block"] == {**block, "input": {}}
            assert orjson.loads("".join(d["partial_json"] for d in deltas)) == block["input"]
        assert events[-2]["delta"]["stop_reason"] == answer["stop_reason"]
        assert events[-2]["usage"]["output_tokens"] == answer["usage"]["output_tokens"]


def test_stream_translation_of_text() -> None:
    body = {"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "one two three"}]}
    chunks = translate_stream(parse_events(messages_stream_events(body)))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" and c["id"].startswith("msg_") and c["model"] == "m" for c in chunks)
    assert len([c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]) == 4
    text, tools, finish = reassemble(chunks)
    assert (text, tools, finish) == ("echo: one two three", {}, "stop")
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def test_stream_translation_of_a_tool_call_after_text() -> None:
    events = [
        {"type": "message_start", "message": {"id": "msg_9", "model": "claude-x", "usage": {"input_tokens": 20, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Checking."}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"city": '}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'}},
        {"type": "content_block_stop", "index": 1},
        {"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}}},
        {"type": "content_block_stop", "index": 2},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 30}},
        {"type": "message_stop"},
    ]
    chunks = translate_stream(events)
    text, tools, finish = reassemble(chunks)
    assert text == "Checking." and finish == "tool_calls"
    assert tools[0]["id"] == "toolu_1" and tools[0]["name"] == "get_weather"
    assert orjson.loads(tools[0]["arguments"]) == {"city": "Paris"}
    assert tools[1]["id"] == "toolu_2" and orjson.loads(tools[1]["arguments"]) == {}  # no input streamed: "{}"
    start = next(c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("tool_calls"))
    assert start["choices"][0]["delta"]["tool_calls"][0] == {
        "index": 0, "id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    assert chunks[-1]["usage"] == {"prompt_tokens": 20, "completion_tokens": 30, "total_tokens": 50}


def test_stream_error_event_is_classified() -> None:
    translator = StreamTranslator("claude-test")
    translator.feed({"type": "message_start", "message": {"id": "m", "usage": {}}})
    with pytest.raises(ProviderError) as info:
        translator.feed({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    assert info.value.retryable and info.value.upstream_status == 529 and "Overloaded" in info.value.message
    with pytest.raises(ProviderError) as info:
        StreamTranslator().feed({"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}})
    assert not info.value.retryable and info.value.status == 400


# --- the provider over HTTP ----------------------------------------------------------------------


class Upstream:
    """A loopback Anthropic: `mode` picks the answer; what it received is kept for assertions."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.headers: dict[str, str] = {}
        self.body: dict[str, Any] = {}
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.headers = {k.lower(): v for k, v in request.headers.items()}
        self.body = await request.json()
        if self.mode == "overloaded":
            return web.json_response({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
                                     status=529, headers={"retry-after": "7"})
        if self.mode == "invalid":
            return web.json_response({"type": "error", "error": {"type": "invalid_request_error",
                                                                 "message": "max_tokens: must be positive"}}, status=400)
        if self.mode == "garbage":
            return web.Response(body=b"{not json", content_type="application/json")
        if not self.body.get("stream"):
            return web.json_response(messages_response(self.body))
        events = messages_stream_events(self.body)
        if self.mode == "truncated":
            events = events[:-2]
        elif self.mode == "error_event":
            events = [*events[:3], b'event: error\ndata: {"type":"error","error":{"type":"api_error","message":"boom"}}\n\n']
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for event in events:
            await response.write(event)
        await response.write_eof()
        return response


@contextlib.asynccontextmanager
async def serve(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Upstream, AnthropicProvider]]:
    monkeypatch.setenv("TEST_ANTHROPIC_KEY", "sk-ant-test-123")
    upstream = Upstream()
    app = web.Application()
    app.router.add_post("/v1/messages", upstream.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    transport = ReqwestTransport()
    provider = AnthropicProvider(ModelConfig(name="claude-test", provider="anthropic", base_url=f"http://127.0.0.1:{port}/",
                                             api_key_env="TEST_ANTHROPIC_KEY"), transport)
    try:
        yield upstream, provider
    finally:
        await transport.aclose()
        await runner.cleanup()


async def collect(provider: AnthropicProvider, body: dict[str, Any]) -> list[dict[str, Any]]:
    return [chunk async for chunk in provider.stream(body)]


async def test_complete_over_http(monkeypatch: pytest.MonkeyPatch) -> None:
    async with serve(monkeypatch) as (upstream, provider):
        completion = await provider.complete({"model": "auto", "messages": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}]})
    assert upstream.headers["x-api-key"] == "sk-ant-test-123"
    assert upstream.headers["anthropic-version"] == "2023-06-01"
    assert upstream.headers["content-type"] == "application/json"
    assert "authorization" not in {k.lower() for k in upstream.headers}
    assert upstream.body == {"model": "claude-test", "max_tokens": 4096, "system": "Be brief.",
                             "messages": [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}]}
    assert completion["object"] == "chat.completion" and completion["model"] == "claude-test"
    assert completion["choices"][0]["message"] == {"role": "assistant", "content": "echo: hello there"}
    assert completion["choices"][0]["finish_reason"] == "stop"
    assert completion["usage"] == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}


async def test_no_key_in_the_environment_sends_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    async with serve(monkeypatch) as (upstream, provider):
        monkeypatch.delenv("TEST_ANTHROPIC_KEY")
        await provider.complete({"messages": [{"role": "user", "content": "hi"}]})
    assert "x-api-key" not in upstream.headers


async def test_complete_tool_call_over_http(monkeypatch: pytest.MonkeyPatch) -> None:
    async with serve(monkeypatch) as (upstream, provider):
        completion = await provider.complete({"messages": [{"role": "user", "content": "What's the weather in Paris?"}],
                                              "tools": [WEATHER_TOOL], "tool_choice": "auto"})
    assert upstream.body["tool_choice"] == {"type": "auto"} and upstream.body["tools"][0]["name"] == "get_weather"
    message = completion["choices"][0]["message"]
    assert message["content"] is None
    assert orjson.loads(message["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    assert completion["choices"][0]["finish_reason"] == "tool_calls"


async def test_stream_text_over_http(monkeypatch: pytest.MonkeyPatch) -> None:
    async with serve(monkeypatch) as (upstream, provider):
        chunks = await collect(provider, {"messages": [{"role": "user", "content": "stream these four words"}],
                                          "max_completion_tokens": 3})
    assert upstream.body["stream"] is True and upstream.body["max_tokens"] == 3
    assert upstream.headers["x-api-key"] == "sk-ant-test-123"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text, tools, finish = reassemble(chunks)
    assert (text, tools, finish) == ("echo: stream these", {}, "length")
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3
    assert all("usage" not in c for c in chunks[:-1])


async def test_stream_tool_call_over_http(monkeypatch: pytest.MonkeyPatch) -> None:
    async with serve(monkeypatch) as (_upstream, provider):
        chunks = await collect(provider, {"messages": [{"role": "user", "content": "weather?"}], "tools": [WEATHER_TOOL]})
    argument_deltas = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("tool_calls")
                       and "id" not in c["choices"][0]["delta"]["tool_calls"][0]]
    assert len(argument_deltas) >= 2  # the arguments really came in pieces
    text, tools, finish = reassemble(chunks)
    assert text == "" and finish == "tool_calls"
    assert list(tools) == [0] and tools[0]["name"] == "get_weather" and tools[0]["id"].startswith("toolu_")
    assert orjson.loads(tools[0]["arguments"]) == {"city": "Paris"}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


@pytest.mark.parametrize("streaming", [False, True])
async def test_overloaded_529_is_retryable_with_retry_after(monkeypatch: pytest.MonkeyPatch, streaming: bool) -> None:
    async with serve(monkeypatch) as (upstream, provider):
        upstream.mode = "overloaded"
        body = {"messages": [{"role": "user", "content": "hi"}]}
        with pytest.raises(ProviderError) as info:
            await (collect(provider, body) if streaming else provider.complete(body))
    error = info.value
    assert (error.retryable, error.status, error.upstream_status, error.retry_after) == (True, 502, 529, 7.0)
    assert "Overloaded" in error.message and "claude-test" in error.message


@pytest.mark.parametrize("streaming", [False, True])
async def test_invalid_request_400_is_not_retryable(monkeypatch: pytest.MonkeyPatch, streaming: bool) -> None:
    async with serve(monkeypatch) as (upstream, provider):
        upstream.mode = "invalid"
        body = {"messages": [{"role": "user", "content": "hi"}]}
        with pytest.raises(ProviderError) as info:
            await (collect(provider, body) if streaming else provider.complete(body))
    error = info.value
    assert (error.retryable, error.status, error.upstream_status, error.kind) == (False, 400, 400, "invalid_request_error")
    assert "max_tokens: must be positive" in error.message and error.retry_after is None


async def test_invalid_json_answer_is_a_bad_upstream_response(monkeypatch: pytest.MonkeyPatch) -> None:
    async with serve(monkeypatch) as (upstream, provider):
        upstream.mode = "garbage"
        with pytest.raises(ProviderError) as info:
            await provider.complete({"messages": [{"role": "user", "content": "hi"}]})
    assert info.value.kind == "bad_upstream_response" and info.value.retryable


async def test_stream_cut_before_message_stop_is_incomplete(monkeypatch: pytest.MonkeyPatch) -> None:
    async with serve(monkeypatch) as (upstream, provider):
        upstream.mode = "truncated"
        received: list[dict[str, Any]] = []
        with pytest.raises(ProviderError) as info:
            async for chunk in provider.stream({"messages": [{"role": "user", "content": "a b c"}]}):
                received.append(chunk)
    assert info.value.kind == "incomplete_stream"
    assert received and all(c["choices"] for c in received)  # no usage chunk was made up


async def test_stream_error_event_over_http(monkeypatch: pytest.MonkeyPatch) -> None:
    async with serve(monkeypatch) as (upstream, provider):
        upstream.mode = "error_event"
        with pytest.raises(ProviderError) as info:
            await collect(provider, {"messages": [{"role": "user", "content": "a b c"}]})
    assert info.value.retryable and info.value.upstream_status == 500 and "boom" in info.value.message
