"""Protocol adapters at the edge: a request in another API's shape enters the chat pipeline translated, and its
answer leaves translated back, so every stage (auth, limits, cache, route, cascades, ledger) serves it unchanged.

An adapter (:class:`Adapter`) does three things: turn the parsed body into a chat-completions body (called by the
read stage once the caller is authenticated, so that stored state can be looked up per tenant), turn a JSON answer
or error into its API's shape, and turn the chat stream's chunks into its API's events. :class:`EdgeSend` is the
ASGI ``send`` the pipeline is given: it hands the pipeline's output to the adapter. The pipeline always sends
whole SSE events per body message, so events are split on the blank line that ends each one.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from pointsman.app.http import Send

__all__ = ["Adapter", "EdgeSend", "sse"]


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One named server-sent event, as Anthropic's and the Responses API's streams write them."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class Adapter(Protocol):
    async def request(self, raw: dict[str, Any], ex: Any) -> dict[str, Any]:
        """The client's body (parsed) as a chat-completions body; ``ex`` is the pipeline's Exchange."""

    def started(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """The pipeline's response status and headers (the decision headers), before any body."""

    async def answer(self, status: int, body: dict[str, Any]) -> dict[str, Any]:
        """A whole JSON answer (status 200) or error (4xx/5xx) in the API's shape."""

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        """One chat.completion.chunk as the API's events (possibly none)."""

    def stream_error(self, error: dict[str, Any]) -> bytes:
        """An OpenAI-shaped error that ended the stream, as the API's error event."""

    async def stream_end(self) -> bytes:
        """The events that close the API's stream (after the chat stream's [DONE])."""


class EdgeSend:
    """The pipeline's ``send``, translating what it sends through ``adapter``. JSON answers are held until their
    last body part (their length changes); streams are translated event by event and sent on at once."""

    __slots__ = ("_send", "adapter", "_start", "_stream", "_parts", "status")

    def __init__(self, send: Send, adapter: Adapter) -> None:
        self._send = send
        self.adapter = adapter
        self._start: dict[str, Any] | None = None
        self._stream = False
        self._parts: list[bytes] = []
        self.status = 0

    async def __call__(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            headers = message.get("headers") or []
            self.status = message["status"]
            self._stream = any(k == b"content-type" and v.startswith(b"text/event-stream") for k, v in headers)
            self.adapter.started(self.status, headers)
            if self._stream:
                await self._send(message)
            else:
                self._start = message
            return
        if kind != "http.response.body":
            await self._send(message)
            return
        body: bytes = message.get("body", b"")
        more = bool(message.get("more_body", False))
        if self._stream:
            await self._send({"type": "http.response.body", "body": await self._events(body) if body else b"",
                              "more_body": more})
            return
        self._parts.append(body)
        if more:
            return
        await self._send_json(b"".join(self._parts))

    async def _send_json(self, payload: bytes) -> None:
        assert self._start is not None
        try:
            data = orjson.loads(payload) if payload else {}
        except orjson.JSONDecodeError:
            data = {"error": {"message": payload[:300].decode("utf-8", "replace"), "type": "server_error"}}
        body = orjson.dumps(await self.adapter.answer(self.status, data if isinstance(data, dict) else {}))
        headers = [(k, v) for k, v in self._start.get("headers") or [] if k != b"content-length"]
        await self._send({**self._start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await self._send({"type": "http.response.body", "body": body})

    async def _events(self, body: bytes) -> bytes:
        out: list[bytes] = []
        for event in body.split(b"\n\n"):
            if not event:
                continue
            if not event.startswith(b"data: "):
                out.append(event + b"\n\n")  # a comment (the cost line): clients skip it
                continue
            data = event[6:]
            if data == b"[DONE]":
                out.append(await self.adapter.stream_end())
                continue
            chunk = orjson.loads(data)
            if "error" in chunk and "choices" not in chunk:
                out.append(self.adapter.stream_error(chunk["error"]))
            else:
                out.append(self.adapter.chunk(chunk))
        return b"".join(out)


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None
