"""The chat-completions request as the gateway validates it.

Only what the gateway must understand is typed here; every other field passes through to the
upstream untouched (providers add parameters faster than any schema could follow).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class Message(msgspec.Struct):
    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class FunctionDef(msgspec.Struct):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(msgspec.Struct):
    type: Literal["function"]
    function: FunctionDef


class StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class ChatRequest(msgspec.Struct):
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    messages: Annotated[list[Message], msgspec.Meta(min_length=1)]
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    tools: list[Tool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=128)] | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    max_completion_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    stop: str | list[str] | None = None
    presence_penalty: Annotated[float, msgspec.Meta(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, msgspec.Meta(ge=-2, le=2)] | None = None
    seed: int | None = None
    user: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, msgspec.Meta(ge=0, le=20)] | None = None


_INT_FIELDS = ("n", "max_tokens", "max_completion_tokens", "seed", "top_logprobs")  # ChatRequest's integers
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what orjson reads as an integer: past it, a JSON integer is a float


def validate_chat_request(raw: object) -> ChatRequest:
    """Raise msgspec.ValidationError with a message naming the field (e.g. `$.messages[0].role`)."""
    if isinstance(raw, dict):
        for name in _INT_FIELDS:
            value = raw.get(name)
            if isinstance(value, float) and value.is_integer() and not _INT_MIN <= value <= _INT_MAX:
                raise msgspec.ValidationError(f"integer out of range: {name} must be at most {_INT_MAX} - at `$.{name}`"
                                              if value > 0 else f"integer out of range - at `$.{name}`")
    request = msgspec.convert(raw, ChatRequest)
    for i, message in enumerate(request.messages):
        if message.role == "tool" and message.tool_call_id is None:
            raise msgspec.ValidationError(f"a tool message needs tool_call_id - at `$.messages[{i}].tool_call_id`")
        if isinstance(message.content, list):
            for j, part in enumerate(message.content):
                if part.get("type") == "text" and not isinstance(part.get("text"), str):
                    raise msgspec.ValidationError(f"a text part's text must be a string - at `$.messages[{i}].content[{j}].text`")
    if request.response_format is not None and request.response_format.get("type") not in ("text", "json_object", "json_schema"):
        raise msgspec.ValidationError("response_format.type must be one of text, json_object, json_schema - at `$.response_format.type`")
    if isinstance(request.stop, list) and len(request.stop) > 16:
        raise msgspec.ValidationError("at most 16 stop sequences - at `$.stop`")
    return request
