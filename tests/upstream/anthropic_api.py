"""A deterministic stand-in for Anthropic's Messages API (`POST /v1/messages`), in its exact shapes.

The answer depends only on the request: given tools and a last user turn whose text has the word
"weather", a tool_use of the first tool with {"city": "Paris"}; otherwise "echo: <last user text>".
Token counts are whitespace word counts (at least 1); `max_tokens` truncates the text as upstream would.
Stdlib and orjson only, so any test server can import it.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson

_WEATHER = re.compile(r"\bweather\b", re.IGNORECASE)


def _texts(content: Any, *, tool_results: bool) -> list[str]:
    """Text of Anthropic message content (a string or blocks); tool_result text only if asked."""
    if isinstance(content, str):
        return [content]
    texts: list[str] = []
    for block in content or ():
        if block.get("type") == "text":
            texts.append(block.get("text", ""))
        elif tool_results and block.get("type") == "tool_result":
            texts.extend(_texts(block.get("content"), tool_results=False))
    return texts


def _words(text: str) -> int:
    return max(1, len(text.split()))


def _ids(body: dict[str, Any]) -> tuple[str, str]:
    digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"msg_01{digest[:22]}", f"toolu_01{digest[22:44]}"


def messages_response(body: dict[str, Any], behaviour: Any = None) -> dict[str, Any]:
    """The non-streaming Message for `body` (an Anthropic Messages request)."""
    messages = body.get("messages") or []
    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), {"content": ""})
    content = last_user.get("content")
    user_text = " ".join(_texts(content, tool_results=False))
    answered_tool = not isinstance(content, str) and any(b.get("type") == "tool_result" for b in content or ())
    if not user_text:  # a turn of tool results only: echo what the tools said
        user_text = " ".join(_texts(content, tool_results=True))

    system = body.get("system") or ""
    prompt_text = " ".join([*_texts(system, tool_results=False),
                            *(t for m in messages for t in _texts(m.get("content"), tool_results=True))])
    message_id, tool_id = _ids(body)
    tools = body.get("tools") or []

    if tools and not answered_tool and _WEATHER.search(user_text):
        tool_input = {"city": "Paris"}
        blocks: list[dict[str, Any]] = [{"type": "tool_use", "id": tool_id, "name": tools[0]["name"], "input": tool_input}]
        stop_reason, output_tokens = "tool_use", _words(orjson.dumps(tool_input).decode())
    else:
        words = f"echo: {user_text}".split(" ")
        max_tokens = body.get("max_tokens")
        stop_reason = "end_turn"
        if isinstance(max_tokens, int) and len(words) > max_tokens:
            words, stop_reason = words[:max_tokens], "max_tokens"
        text = " ".join(words)
        blocks = [{"type": "text", "text": text}]
        output_tokens = _words(text)

    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "claude-test"),
        "content": blocks,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": _words(prompt_text), "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0, "output_tokens": output_tokens},
    }


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _json_parts(text: str) -> list[str]:
    """Tool input JSON in 2+ pieces, cut at thirds, as the API streams it in arbitrary fragments."""
    cuts = sorted({0, len(text) // 3, 2 * len(text) // 3, len(text)})
    parts = [text[a:b] for a, b in zip(cuts, cuts[1:], strict=False) if b > a]
    return parts if len(parts) > 1 else [text[:1], text[1:]]


def messages_stream_events(body: dict[str, Any], behaviour: Any = None) -> list[bytes]:
    """The same answer as `messages_response(body)`, as the SSE events of a streamed Message."""
    answer = messages_response(body)
    usage = answer["usage"]
    start = {**answer, "content": [], "stop_reason": None, "stop_sequence": None, "usage": {**usage, "output_tokens": 1}}
    events = [_event("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(answer["content"]):
        if block["type"] == "text":
            events.append(_event("content_block_start", {"type": "content_block_start", "index": index,
                                                         "content_block": {"type": "text", "text": ""}}))
            if index == 0:
                events.append(_event("ping", {"type": "ping"}))
            words = block["text"].split(" ")
            for i, word in enumerate(words):
                events.append(_event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                             "delta": {"type": "text_delta", "text": word if i == 0 else " " + word}}))
        else:
            events.append(_event("content_block_start", {"type": "content_block_start", "index": index,
                                                         "content_block": {**block, "input": {}}}))
            if index == 0:
                events.append(_event("ping", {"type": "ping"}))
            # The API opens a tool's input with an empty fragment, then sends the JSON in pieces.
            for part in ["", *_json_parts(orjson.dumps(block["input"]).decode())]:
                events.append(_event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                             "delta": {"type": "input_json_delta", "partial_json": part}}))
        events.append(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(_event("message_delta", {"type": "message_delta",
                                           "delta": {"stop_reason": answer["stop_reason"], "stop_sequence": None},
                                           "usage": {"output_tokens": usage["output_tokens"]}}))
    events.append(_event("message_stop", {"type": "message_stop"}))
    return events
