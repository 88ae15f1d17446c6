"""Anthropic's Messages API in (`POST /v1/messages`, `POST /v1/messages/count_tokens`): what the `anthropic` SDK,
Claude Code (`ANTHROPIC_BASE_URL`) and other Anthropic-speaking agents send.

A Messages request is translated into a chat-completions body at the edge (app/edge.py) and goes through the same
stages as any chat request: any pool model may answer it, whatever protocol that model's upstream speaks, with the
same decision headers, ledger row, cache, cascades and limits. The answer comes back as a Message, a stream as
Anthropic's events, an error in Anthropic's shape. The translation functions are pure, the mirror image of
providers/anthropic.py (which speaks Messages to an upstream for the chat side).

What has no chat-completions equivalent is refused with a 400 (server tools, documents) or dropped where
dropping changes nothing the client relies on (``cache_control``, ``top_k``, ``thinking``: the answer then has
no thinking blocks).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from pointsman.app.edge import EdgeSend, header, sse
from pointsman.app.http import Receive, Scope, Send, header_map, parse_json_object, read_body, send_error, require_method, send_json
from pointsman.errors import GatewayError
from pointsman.text import text_of

__all__ = ["PATHS", "MessagesAdapter", "handle", "to_chat_request", "to_message", "MessageStream", "count_tokens"]

PATHS = ("/v1/messages", "/v1/messages/count_tokens")

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
                "content_filter": "refusal"}
# the HTTP status of a gateway error -> Anthropic's error type (https://docs.anthropic.com/en/api/errors)
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 405: "invalid_request_error", 408: "timeout_error", 413: "request_too_large",
               429: "rate_limit_error", 431: "invalid_request_error", 500: "api_error", 502: "api_error",
               503: "overloaded_error", 504: "timeout_error", 529: "overloaded_error"}


def _invalid(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, code="invalid_request", param=param, type="invalid_request_error")


# --- request: Messages -> chat completions -----------------------------------------------------------------


def _image_part(block: dict[str, Any]) -> dict[str, Any]:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        return {"type": "image_url", "image_url": {"url": f"data:{source.get('media_type')};base64,{source.get('data')}"}}
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    raise _invalid(f"image source type {source.get('type')!r} is not supported (base64 or url)")


def _tool_result_text(content: Any) -> str:
    if isinstance(content, str) or content is None:
        return content or ""
    parts = []
    for block in content:
        if isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif isinstance(block, dict) and block.get("type") == "image":
            parts.append("[image]")  # a chat tool message carries text only
    return "\n".join(parts)


def _turns(message: dict[str, Any], index: int) -> list[dict[str, Any]]:
    """One Messages turn as chat messages: tool results become `tool` messages (before the user's other content),
    tool_use blocks an assistant's tool_calls."""
    role = message.get("role")
    if role not in ("user", "assistant"):
        raise _invalid(f"messages.{index}.role: must be user or assistant", f"messages.{index}.role")
    content = message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise _invalid(f"messages.{index}.content: a string or a list of content blocks", f"messages.{index}.content")
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif kind == "image":
            parts.append(_image_part(block))
        elif kind == "tool_use" and role == "assistant":
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": block.get("name"), "arguments": orjson.dumps(block.get("input") or {}).decode()}})
        elif kind == "tool_result" and role == "user":
            text = _tool_result_text(block.get("content"))
            results.append({"role": "tool", "tool_call_id": block.get("tool_use_id"),
                            "content": f"Error: {text}" if block.get("is_error") else text})
        elif kind in ("thinking", "redacted_thinking"):
            continue  # an earlier turn's reasoning: not part of what another model is shown
        else:
            raise _invalid(f"messages.{index}.content: block type {kind!r} is not supported by this gateway",
                           f"messages.{index}.content")
    out: list[dict[str, Any]] = list(results)
    if role == "assistant":
        text = "".join(p["text"] for p in parts if p["type"] == "text")
        if text or calls:
            turn: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                turn["tool_calls"] = calls
            out.append(turn)
    elif parts:
        all_text = all(p["type"] == "text" for p in parts)
        out.append({"role": "user", "content": "".join(p["text"] for p in parts) if all_text and len(parts) == 1 else parts})
    return out


def _tools(tools: Any) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind not in (None, "custom") or not isinstance(tool, dict):
            raise _invalid(f"tools.{i}: server tool {kind!r} is not supported by this gateway (custom tools only)",
                           f"tools.{i}")
        function: dict[str, Any] = {"name": tool.get("name"),
                                    "parameters": tool.get("input_schema") or {"type": "object", "properties": {}}}
        if tool.get("description"):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: dict[str, Any], body: dict[str, Any]) -> None:
    kind = choice.get("type")
    if kind == "auto":
        body["tool_choice"] = "auto"
    elif kind == "any":
        body["tool_choice"] = "required"
    elif kind == "none":
        body["tool_choice"] = "none"
    elif kind == "tool":
        body["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    else:
        raise _invalid(f"tool_choice.type {kind!r} is not one of auto, any, tool, none", "tool_choice")
    if choice.get("disable_parallel_tool_use"):
        body["parallel_tool_calls"] = False


def to_chat_request(request: dict[str, Any]) -> dict[str, Any]:
    """A Messages request as a chat-completions body (pure; raises GatewayError 400 on what cannot be served)."""
    model, messages, max_tokens = request.get("model"), request.get("messages"), request.get("max_tokens")
    if not isinstance(model, str) or not model:
        raise _invalid("model: a string is required", "model")
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages: at least one message is required", "messages")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise _invalid("max_tokens: a positive integer is required", "max_tokens")
    chat: list[dict[str, Any]] = []
    system = request.get("system")
    if system:
        text = system if isinstance(system, str) else text_of(system)
        chat.append({"role": "system", "content": text})
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _invalid(f"messages.{index}: must be an object", f"messages.{index}")
        chat.extend(_turns(message, index))
    body: dict[str, Any] = {"model": model, "messages": chat, "max_tokens": max_tokens}
    for name in ("temperature", "top_p"):
        if request.get(name) is not None:
            body[name] = request[name]
    if request.get("stop_sequences"):
        body["stop"] = request["stop_sequences"]
    user = (request.get("metadata") or {}).get("user_id") if isinstance(request.get("metadata"), dict) else None
    if isinstance(user, str):
        body["user"] = user[:256]
    if request.get("tools"):
        if not isinstance(request["tools"], list):
            raise _invalid("tools: must be a list", "tools")
        body["tools"] = _tools(request["tools"])
        if isinstance(request.get("tool_choice"), dict):
            _tool_choice(request["tool_choice"], body)
    if request.get("stream"):
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}  # the usage goes into message_delta
    return body


# --- answer: chat completion -> Message --------------------------------------------------------------------


def _usage(usage: Any) -> dict[str, Any]:
    """Anthropic counts cached input apart from input_tokens; OpenAI's prompt_tokens include it."""
    usage = usage if isinstance(usage, dict) else {}
    prompt = int(usage.get("prompt_tokens") or 0)
    details = usage.get("prompt_tokens_details")
    cached = int((details or {}).get("cached_tokens") or 0) if isinstance(details, dict) else 0
    written = int(usage.get("cache_creation_input_tokens") or 0)
    return {"input_tokens": max(prompt - cached - written, 0), "output_tokens": int(usage.get("completion_tokens") or 0),
            "cache_creation_input_tokens": written, "cache_read_input_tokens": cached}


def _tool_input(arguments: Any) -> Any:
    try:
        parsed = orjson.loads(arguments) if isinstance(arguments, str) and arguments else {}
    except orjson.JSONDecodeError:
        return {"_raw_arguments": arguments}  # a model's malformed arguments: kept, not dropped
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def to_message(answer: dict[str, Any], message_id: str, model: str) -> dict[str, Any]:
    """A chat completion as a Message (pure)."""
    choice = (answer.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    blocks: list[dict[str, Any]] = []
    text = text_of(message.get("content"))
    if text:
        blocks.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        blocks.append({"type": "tool_use", "id": call.get("id"), "name": function.get("name"),
                       "input": _tool_input(function.get("arguments"))})
    return {"id": message_id, "type": "message", "role": "assistant", "model": model, "content": blocks,
            "stop_reason": STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"), "stop_sequence": None,
            "usage": _usage(answer.get("usage"))}


def error_body(status: int, body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI-shaped error as Anthropic's ({"type": "error", "error": {"type", "message"}})."""
    error = body.get("error")
    message = str(error.get("message") or "error") if isinstance(error, dict) else "error"
    return {"type": "error", "error": {"type": ERROR_TYPES.get(status, "api_error" if status >= 500 else
                                                                "invalid_request_error"), "message": message}}


class MessageStream:
    """chat.completion.chunks in, Anthropic's stream events out: message_start, a content block per text run or
    tool call (start, deltas, stop), message_delta with the stop reason and usage, message_stop."""

    def __init__(self, message_id: str, model: str) -> None:
        self.message_id, self.model = message_id, model
        self.started = False
        self.block = -1  # index of the open content block, -1 when none is open
        self.open_kind: str | None = None  # "text" or "tool"
        self.tools: dict[int, int] = {}  # chat tool_calls index -> content block index
        self.stop_reason = "end_turn"
        self.usage: dict[str, Any] = {}

    def _start(self) -> bytes:
        self.started = True
        message: dict[str, Any] = {"id": self.message_id, "type": "message", "role": "assistant", "model": self.model,
                                   "content": [],
                   "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}
        return sse("message_start", {"type": "message_start", "message": message}) + sse("ping", {"type": "ping"})

    def _close(self) -> bytes:
        if self.open_kind is None:
            return b""
        self.open_kind = None
        return sse("content_block_stop", {"type": "content_block_stop", "index": self.block})

    def _open(self, kind: str, content_block: dict[str, Any]) -> bytes:
        out = self._close()
        self.block += 1
        self.open_kind = kind
        return out + sse("content_block_start", {"type": "content_block_start", "index": self.block,
                                                 "content_block": content_block})

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        out = b"" if self.started else self._start()
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:
                if self.open_kind != "text":
                    out += self._open("text", {"type": "text", "text": ""})
                out += sse("content_block_delta", {"type": "content_block_delta", "index": self.block,
                                                   "delta": {"type": "text_delta", "text": content}})
            for call in delta.get("tool_calls") or ():
                index = call.get("index", 0)
                function = call.get("function") or {}
                if index not in self.tools:
                    out += self._open("tool", {"type": "tool_use", "id": call.get("id"), "name": function.get("name"),
                                               "input": {}})
                    self.tools[index] = self.block
                if function.get("arguments"):
                    out += sse("content_block_delta", {"type": "content_block_delta", "index": self.tools[index],
                                                       "delta": {"type": "input_json_delta",
                                                                 "partial_json": function["arguments"]}})
            if choice.get("finish_reason"):
                self.stop_reason = STOP_REASONS.get(choice["finish_reason"], "end_turn")
        return out

    def end(self) -> bytes:
        out = (b"" if self.started else self._start()) + self._close()
        usage = _usage(self.usage)
        delta = {"type": "message_delta", "delta": {"stop_reason": self.stop_reason, "stop_sequence": None},
                 "usage": usage}
        return out + sse("message_delta", delta) + sse("message_stop", {"type": "message_stop"})

    @staticmethod
    def error(error: dict[str, Any]) -> bytes:
        message = str(error.get("message") or "upstream stream failed")
        return sse("error", {"type": "error", "error": {"type": "api_error", "message": message}})


class MessagesAdapter:
    """The edge adapter (app/edge.py) for one /v1/messages request."""

    def __init__(self) -> None:
        self.message_id = "msg_"
        self.model = ""
        self.stream: MessageStream | None = None

    async def request(self, raw: dict[str, Any], ex: Any) -> dict[str, Any]:
        self.message_id = "msg_" + ex.record.id.removeprefix("req_")  # the ledger row's id, recognisable
        self.model = str(raw.get("model") or "")
        return to_chat_request(raw)

    def started(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        # the pool model that answered names the Message's model (the client asked for "auto" or a policy)
        self.model = header(headers, b"x-pointsman-model") or self.model

    async def answer(self, status: int, body: dict[str, Any]) -> dict[str, Any]:
        if status >= 400:
            return error_body(status, body)
        return to_message(body, self.message_id, self.model)

    def _stream(self) -> MessageStream:
        if self.stream is None:
            self.stream = MessageStream(self.message_id, self.model)
        return self.stream

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        return self._stream().chunk(chunk)

    def stream_error(self, error: dict[str, Any]) -> bytes:
        return MessageStream.error(error)

    async def stream_end(self) -> bytes:
        return self._stream().end()


def count_tokens(request: dict[str, Any]) -> int:
    """An estimate of a request's input tokens, about four characters a token (the gateway's estimate wherever a
    provider reports no usage); no model is called, so it holds for whichever model answers."""
    chat = to_chat_request({**request, "max_tokens": 1})
    chars = sum(len(text_of(m.get("content"), " ")) + sum(len(orjson.dumps(c)) for c in m.get("tool_calls") or ())
                for m in chat["messages"])
    chars += sum(len(orjson.dumps(t)) for t in chat.get("tools") or ())
    return (chars + 3) // 4 + 3 * len(chat["messages"])


async def handle(gateway: Any, scope: Scope, receive: Receive, send: Send) -> None:
    """POST /v1/messages through the chat pipeline; POST /v1/messages/count_tokens answered here."""
    adapter = MessagesAdapter()
    edge = EdgeSend(send, adapter)
    try:
        require_method(scope, "POST")
        if scope["path"] == "/v1/messages":
            await gateway._chat(scope, receive, edge, adapter)
            return
        headers = header_map(scope)
        gateway._authenticate(headers)
        started = time.perf_counter()
        raw = parse_json_object(await read_body(receive, headers, gateway.server.max_body_bytes))
        tokens = count_tokens(raw)
        await send_json(send, 200, {"input_tokens": tokens},
                        [(b"x-pointsman-overhead-ms", f"{(time.perf_counter() - started) * 1000:.3f}".encode())])
    except GatewayError as error:
        await send_error(edge, error)
