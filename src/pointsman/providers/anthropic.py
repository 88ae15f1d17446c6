"""Anthropic's Messages API, translated both ways so the gateway only ever sees OpenAI shapes.

`to_anthropic_request` turns an OpenAI chat-completions body into a Messages request,
`from_anthropic_response` turns a Message into a `chat.completion`, and `StreamTranslator` turns
Messages stream events into `chat.completion.chunk`s. All three are pure; the provider only adds HTTP.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from typing import Any

import orjson

from pointsman.providers.base import ProviderError
from pointsman.providers.http import HttpProvider
from pointsman.text import text_of

DEFAULT_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; OpenAI clients usually omit it

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Anthropic's error `type` in a stream's error event -> the HTTP status it stands for, so that a
# mid-stream error is classified by the same table as an HTTP one.
ERROR_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}

JSON_INSTRUCTION = "Respond with a single valid JSON value only: no prose, no Markdown code fences."


def _invalid(message: str) -> ProviderError:
    return ProviderError(message, status=400, retryable=False, kind="invalid_request_error")


# --- request: OpenAI -> Anthropic -------------------------------------------------------------


def _image_block(part: dict[str, Any]) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise _invalid("image_url part without a url")
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type, _, encoding = header[5:].partition(";")
        if encoding != "base64" or not data:
            raise _invalid("image data URLs must be base64-encoded (data:<type>;base64,...)")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _content_blocks(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []  # Anthropic rejects empty text blocks
    blocks: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "refusal"):  # an assistant's earlier refusal is just text to Anthropic
            text = part.get(kind)
            if text:
                blocks.append({"type": "text", "text": text})
        elif kind == "image_url":
            blocks.append(_image_block(part))
        else:
            raise ProviderError.unsupported(f"content part type {kind!r} is not supported by Anthropic models")
    return blocks


def _tool_use_block(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    arguments = function.get("arguments") or "{}"
    try:
        parsed = orjson.loads(arguments) if isinstance(arguments, str) else arguments
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):  # Anthropic's tool input must be an object
        raise _invalid(f"tool call {call.get('id')!r}: arguments are not a JSON object")
    return {"type": "tool_use", "id": call.get("id"), "name": function.get("name"), "input": parsed}


def _tool_result_block(message: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": message.get("tool_call_id"), "content": text_of(message.get("content"))}


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice == "auto":
        return {"type": "auto"}
    if choice == "none":
        return {"type": "none"}
    if choice == "required":
        return {"type": "any"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    raise _invalid(f"unsupported tool_choice: {choice!r}")


def _json_instruction(response_format: Any) -> str | None:
    # The Messages API has no JSON mode: ask for JSON in the system prompt instead (and give the
    # schema when there is one). Not a guarantee, as it is with OpenAI's strict json_schema.
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "json_object":
        return JSON_INSTRUCTION
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if schema:
            return f"{JSON_INSTRUCTION} It must conform to this JSON Schema: {orjson.dumps(schema).decode()}"
        return JSON_INSTRUCTION
    return None


def to_anthropic_request(body: dict[str, Any], model: str, default_max_tokens: int | None = None,
                         *, stream: bool = False) -> dict[str, Any]:
    """An OpenAI chat-completions body as a Messages request. Does not mutate `body`.

    Parameters without an Anthropic equivalent (logprobs, presence/frequency penalties, seed,
    logit_bias...) are dropped; n>1 is refused, as silently answering once would break the client.
    """
    n = body.get("n")
    if n is not None and n != 1:
        raise ProviderError.unsupported("Anthropic models return one choice per request: n must be 1")

    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in body.get("messages") or ():
        role = message.get("role")
        if role in ("system", "developer"):
            text = text_of(message.get("content"))
            if text:
                system.append(text)
            continue
        if role == "user":
            blocks = _content_blocks(message.get("content"))
        elif role == "assistant":
            blocks = _content_blocks(message.get("content"))
            blocks.extend(_tool_use_block(call) for call in message.get("tool_calls") or ())
        elif role == "tool":
            role, blocks = "user", [_tool_result_block(message)]  # tool results travel in a user turn
        else:
            raise _invalid(f"unsupported message role {role!r}")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:  # Anthropic requires alternating roles
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    instruction = _json_instruction(body.get("response_format"))
    if instruction:
        system.append(instruction)

    request: dict[str, Any] = {
        "model": model,
        "messages": turns,
        "max_tokens": body.get("max_completion_tokens") or body.get("max_tokens") or default_max_tokens or DEFAULT_MAX_TOKENS,
    }
    if system:
        request["system"] = "\n\n".join(system)
    if stream:
        request["stream"] = True
    stop = body.get("stop")
    if stop:
        request["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    temperature = body.get("temperature")
    if temperature is not None:
        request["temperature"] = min(temperature, 1.0)  # OpenAI allows 0..2, Anthropic 0..1
    if body.get("top_p") is not None:
        request["top_p"] = body["top_p"]
    if body.get("user"):
        request["metadata"] = {"user_id": body["user"]}

    tools = [tool["function"] for tool in body.get("tools") or () if tool.get("type") == "function"]
    if tools:
        request["tools"] = [
            {"name": f["name"], **({"description": f["description"]} if f.get("description") else {}),
             "input_schema": f.get("parameters") or {"type": "object", "properties": {}}}
            for f in tools
        ]
        choice = _tool_choice(body.get("tool_choice"))
        if body.get("parallel_tool_calls") is False:
            choice = choice or {"type": "auto"}
            if choice["type"] != "none":
                choice["disable_parallel_tool_use"] = True
        if choice:
            request["tool_choice"] = choice
    return request


# --- answer: Anthropic -> OpenAI ----------------------------------------------------------------


def openai_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """OpenAI counts cached prompt tokens inside prompt_tokens; Anthropic counts them apart."""
    cache_read = usage.get("cache_read_input_tokens") or 0
    cache_write = usage.get("cache_creation_input_tokens") or 0
    prompt = (usage.get("input_tokens") or 0) + cache_read + cache_write
    completion = usage.get("output_tokens") or 0
    result: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if cache_read:
        result["prompt_tokens_details"] = {"cached_tokens": cache_read}
    if cache_write:  # billed above the input rate; OpenAI's usage has no field for it (LiteLLM's name)
        result["cache_creation_input_tokens"] = cache_write
    return result


def from_anthropic_response(answer: dict[str, Any]) -> dict[str, Any]:
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in answer.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            texts.append(block["text"])
        elif kind == "tool_use":
            tool_calls.append({"id": block["id"], "type": "function",
                               "function": {"name": block["name"], "arguments": orjson.dumps(block.get("input") or {}).decode()}})
        # thinking / redacted_thinking blocks have no OpenAI place and are not the answer
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not tool_calls else None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": answer.get("id"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": answer.get("model"),
        "choices": [{"index": 0, "message": message,
                     "finish_reason": FINISH_REASONS.get(answer.get("stop_reason") or "end_turn", "stop")}],
        "usage": openai_usage(answer.get("usage") or {}),
    }


def stream_error(error: Any, label: str) -> ProviderError:
    """A stream's `error` event, classified like the HTTP status it stands for."""
    kind = error.get("type") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else str(error)
    return ProviderError.from_status(ERROR_TYPE_STATUS.get(kind or "", 500), f"{label}: upstream stream error: {kind}: {message}")


class StreamTranslator:
    """Anthropic stream events in, OpenAI chunks out; `done` once message_stop has been seen."""

    def __init__(self, label: str = "anthropic") -> None:
        self.done = False
        self._label = label  # names the model in errors
        self._id: str | None = None
        self._model: str | None = None
        self._created = int(time.time())
        self._usage: dict[str, Any] = {}
        self._finish_reason = "stop"
        self._tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool_calls index
        self._tool_has_arguments: dict[int, bool] = {}

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {"id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self._model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}

    def _tool_delta(self, index: int, arguments: str) -> dict[str, Any]:
        return self._chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]})

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        if kind == "content_block_delta":  # by far the most frequent: first
            delta = event["delta"]
            if delta.get("type") == "text_delta":
                return [self._chunk({"content": delta["text"]})]
            if delta.get("type") == "input_json_delta":
                block = event["index"]
                partial = delta.get("partial_json")
                if block not in self._tools or not partial:
                    return []
                self._tool_has_arguments[block] = True
                return [self._tool_delta(self._tools[block], partial)]
            return []  # thinking, signature and citation deltas
        if kind == "message_start":
            message = event.get("message") or {}
            self._id, self._model = message.get("id"), message.get("model")
            self._usage.update(message.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block, content = event["index"], event["content_block"]
            if content.get("type") == "tool_use":
                index = self._tools[block] = len(self._tools)
                arguments = orjson.dumps(content["input"]).decode() if content.get("input") else ""
                self._tool_has_arguments[block] = bool(arguments)
                return [self._chunk({"tool_calls": [{"index": index, "id": content["id"], "type": "function",
                                                     "function": {"name": content["name"], "arguments": arguments}}]})]
            if content.get("type") == "text" and content.get("text"):
                return [self._chunk({"content": content["text"]})]
            return []
        if kind == "content_block_stop":
            block = event.get("index")
            if block in self._tools and not self._tool_has_arguments[block]:
                # A tool without parameters may stream no input at all; "" is not valid JSON.
                return [self._tool_delta(self._tools[block], "{}")]
            return []
        if kind == "message_delta":
            reason = (event.get("delta") or {}).get("stop_reason")
            if reason:
                self._finish_reason = FINISH_REASONS.get(reason, "stop")
            # Counts here are cumulative: they replace those of message_start.
            self._usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
            return []
        if kind == "message_stop":
            self.done = True
            usage_chunk: dict[str, Any] = {"id": self._id, "object": "chat.completion.chunk", "created": self._created,
                                           "model": self._model, "choices": [], "usage": openai_usage(self._usage)}
            return [self._chunk({}, self._finish_reason), usage_chunk]
        if kind == "error":
            raise stream_error(event.get("error"), self._label)
        return []  # ping and event types added after this was written


# --- the provider ---------------------------------------------------------------------------------


class AnthropicProvider(HttpProvider):
    default_base_url = DEFAULT_BASE_URL
    path = "/v1/messages"
    protocol_headers = {"anthropic-version": ANTHROPIC_VERSION}

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"x-api-key": key}

    def _payload(self, body: dict[str, Any], stream: bool) -> bytes:
        return orjson.dumps(to_anthropic_request(body, self.config.upstream_model, self.config.max_output_tokens, stream=stream))

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        answer = await self.post_json(self._payload(body, stream=False))
        if answer.get("type") != "message":
            raise self.bad_answer("an answer that is not a message")
        try:
            return from_anthropic_response(answer)
        except (KeyError, TypeError, AttributeError) as exc:
            raise self.bad_answer(f"a malformed message ({type(exc).__name__}: {exc})") from exc

    async def stream(self, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        translator = StreamTranslator(self.config.name)
        events = self.post_events(self._payload(body, stream=True))
        try:
            async for data in events:
                try:
                    chunks = translator.feed(orjson.loads(data))
                except orjson.JSONDecodeError as exc:
                    raise self.bad_answer("an invalid stream event") from exc
                except (KeyError, TypeError, AttributeError) as exc:
                    raise self.bad_answer(f"a malformed stream event ({type(exc).__name__}: {exc})") from exc
                for chunk in chunks:
                    yield chunk
                if translator.done:
                    return
        finally:
            await events.aclose()  # release the connection now, also when returning early
        raise ProviderError(f"{self.config.name}: upstream stream ended before message_stop", kind="incomplete_stream")
