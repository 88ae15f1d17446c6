"""What may be cached, how a streamed answer is assembled, and how a hit is replayed as SSE.

Never cached: errors, non-200 answers, refusals, truncated answers (``finish_reason`` "length" or
"content_filter"), several choices, empty answers, and tool-call answers unless the policy says the
tools are free of side effects. A stream is cached only once it ended normally (a finish reason seen,
no error event, the client still there): :class:`StreamRecorder` collects it on the way through.
"""

from __future__ import annotations

import time
from array import array
from typing import Any

import orjson

from pointsman.text import is_refusal

__all__ = ["is_refusal", "uncacheable_reason", "StreamRecorder", "replay_as_sse", "completion_body"]

def uncacheable_reason(answer: Any, tools_side_effect_free: bool = False, status: int = 200) -> str | None:
    """None if the chat.completion ``answer`` may be cached, else why not."""
    if status != 200:
        return f"status {status}"
    if not isinstance(answer, dict):
        return "not a JSON object"
    if answer.get("error") is not None:
        return "error"
    choices = answer.get("choices")
    if not isinstance(choices, list) or len(choices) != 1:
        return "not exactly one choice"
    choice = choices[0]
    if not isinstance(choice, dict):
        return "malformed choice"
    finish = choice.get("finish_reason")
    if finish not in ("stop", "tool_calls", "function_call", "end_turn", None) or finish is None:
        return f"finish_reason {finish}"
    message = choice.get("message") or {}
    if message.get("refusal"):
        return "refusal"
    tool_calls = message.get("tool_calls") or message.get("function_call")
    if tool_calls and not tools_side_effect_free:
        return "tool calls with side effects"
    content = message.get("content")
    if not tool_calls and not (isinstance(content, str) and content.strip()):
        return "empty answer"
    if isinstance(content, str) and is_refusal(content):
        return "refusal"
    return None


class StreamRecorder:
    """Collects a relayed stream's chunks; :meth:`answer` is then the equivalent chat.completion.

    Feed every upstream chunk (dict) as it is relayed. Call :meth:`error` if the stream broke, and
    :meth:`answer` at the end: None unless the stream finished cleanly.
    """

    __slots__ = ("pieces", "_role", "_finish", "_usage", "_tool_calls", "_meta", "_broken", "_refusal", "_bytes",
                 "max_bytes")

    def __init__(self, max_bytes: int = 1 << 20) -> None:
        self.pieces: list[str] = []
        self._role = "assistant"
        self._finish: str | None = None
        self._usage: Any = None
        self._tool_calls: dict[int, dict[str, Any]] = {}
        self._meta: dict[str, Any] = {}
        self._broken = False
        self._refusal: list[str] = []
        self._bytes = 0
        self.max_bytes = max_bytes

    def feed(self, chunk: dict[str, Any]) -> None:
        if self._broken:
            return
        if chunk.get("error") is not None:
            self._broken = True
            return
        if not self._meta:
            self._meta = {k: chunk[k] for k in ("id", "model", "created", "system_fingerprint") if k in chunk}
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        choices = chunk.get("choices") or ()
        for choice in choices:
            if choice.get("index", 0) != 0:
                self._broken = True  # n > 1: not cacheable
                return
            delta = choice.get("delta") or {}
            if delta.get("role"):
                self._role = delta["role"]
            text = delta.get("content")
            if text:
                self.pieces.append(text)
                self._bytes += len(text)
                if self._bytes > self.max_bytes:
                    self._broken = True
            if delta.get("refusal"):
                self._refusal.append(delta["refusal"])
            for call in delta.get("tool_calls") or ():
                slot = self._tool_calls.setdefault(int(call.get("index", 0)), {
                    "id": None, "type": "function", "function": {"name": "", "arguments": ""}})
                if call.get("id"):
                    slot["id"] = call["id"]
                if call.get("type"):
                    slot["type"] = call["type"]
                fn = call.get("function") or {}
                if fn.get("name"):
                    slot["function"]["name"] += fn["name"]
                if fn.get("arguments"):
                    slot["function"]["arguments"] += fn["arguments"]
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]

    def error(self) -> None:
        self._broken = True

    @property
    def complete(self) -> bool:
        return not self._broken and self._finish is not None

    def answer(self) -> dict[str, Any] | None:
        """The assembled chat.completion, or None if the stream did not end cleanly."""
        if not self.complete:
            return None
        message: dict[str, Any] = {"role": self._role, "content": "".join(self.pieces) if self.pieces else None}
        if self._refusal:
            message["refusal"] = "".join(self._refusal)
        if self._tool_calls:
            message["tool_calls"] = [self._tool_calls[i] for i in sorted(self._tool_calls)]
        out = {"id": self._meta.get("id", ""), "object": "chat.completion",
               "created": self._meta.get("created", int(time.time())), "model": self._meta.get("model", ""),
               "choices": [{"index": 0, "message": message, "finish_reason": self._finish, "logprobs": None}]}
        if self._usage:
            out["usage"] = self._usage
        if "system_fingerprint" in self._meta:
            out["system_fingerprint"] = self._meta["system_fingerprint"]
        return out


def _split_text(text: str, size: int = 24) -> list[str]:
    """Pieces for replaying a whole answer as a stream: word boundaries, about ``size`` characters each."""
    if not text:
        return []
    out, start = [], 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            space = text.rfind(" ", start + 1, end + 1)
            if space > start:
                end = space
        out.append(text[start:end])
        start = end
    return out


def _event(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def completion_body(answer: bytes, request_id: str | None = None, created: int | None = None) -> bytes:
    """The cached chat.completion for a non-streamed hit, with a fresh id/created when given."""
    if request_id is None and created is None:
        return answer
    obj = orjson.loads(answer)
    if request_id is not None:
        obj["id"] = request_id
    if created is not None:
        obj["created"] = created
    return orjson.dumps(obj)


def replay_as_sse(entry_or_answer: Any, include_usage: bool = False, request_id: str | None = None,
                  created: int | None = None, pieces: list[str] | array | None = None) -> list[bytes]:
    """OpenAI chat.completion.chunk SSE events replaying a cached answer, ``data: [DONE]`` last.

    Accepts a :class:`~pointsman.cache.base.CacheEntry` (its stored pieces keep the original chunking)
    or a chat.completion (dict or JSON bytes). Order: a role chunk, content (or tool-call) chunks, a
    chunk with the finish reason, a usage chunk (``choices: []``) if ``include_usage``, ``[DONE]``.
    """
    if hasattr(entry_or_answer, "answer") and hasattr(entry_or_answer, "exact_key"):
        pieces = pieces if pieces is not None else entry_or_answer.pieces
        answer = entry_or_answer.answer
    else:
        answer = entry_or_answer
    if isinstance(answer, bytes | str):
        answer = orjson.loads(answer)
    choice = answer["choices"][0]
    message = choice.get("message") or {}
    content = message.get("content") or ""
    if isinstance(pieces, array):  # the stored chunking: the deltas' lengths
        cut, texts = 0, []
        for n in pieces:
            texts.append(content[cut:cut + n])
            cut += n
        pieces = texts if cut == len(content) else None
    if pieces is None or "".join(pieces) != content:
        pieces = _split_text(content)
    base = {"id": request_id or answer.get("id") or "", "object": "chat.completion.chunk",
            "created": int(created if created is not None else answer.get("created") or time.time()),
            "model": answer.get("model", "")}
    if answer.get("system_fingerprint"):
        base["system_fingerprint"] = answer["system_fingerprint"]
    usage_null = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _event({**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
                       **usage_null})

    events = [chunk({"role": message.get("role", "assistant"), "content": ""})]
    events.extend(chunk({"content": p}) for p in pieces)
    for i, call in enumerate(message.get("tool_calls") or ()):
        fn = call.get("function") or {}
        events.append(chunk({"tool_calls": [{"index": i, "id": call.get("id"), "type": call.get("type", "function"),
                                             "function": {"name": fn.get("name", ""), "arguments": ""}}]}))
        args = fn.get("arguments") or ""
        for piece in _split_text(args, 64):
            events.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}))
    events.append(chunk({}, choice.get("finish_reason") or "stop"))
    if include_usage:
        events.append(_event({**base, "choices": [], "usage": answer.get("usage") or
                              {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}))
    events.append(b"data: [DONE]\n\n")
    return events
