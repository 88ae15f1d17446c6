"""Small raw-ASGI helpers: the gateway speaks ASGI directly, so no framework sits on the hot path."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson

from pointsman.errors import GatewayError

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]


def header_map(scope: Scope) -> dict[bytes, bytes]:
    """ASGI gives header names lower-cased; a repeated header keeps its last value."""
    return dict(scope["headers"])


def encode_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1", "replace")) for k, v in headers.items()]


async def read_body(receive: Receive, headers: dict[bytes, bytes], limit: int) -> bytes:
    declared = headers.get(b"content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise GatewayError(413, f"request body too large: {int(declared)} bytes, the limit is {limit}",
                                   code="request_too_large")
        except ValueError:
            raise GatewayError(400, "invalid content-length header", code="invalid_request") from None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise GatewayError(413, f"request body too large: over {limit} bytes", code="request_too_large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class ClientDisconnected(Exception):
    """The client went away before we answered."""


async def send_bytes(send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]] = JSON_HEADERS) -> None:
    # An explicit content-length spares the server chunked framing.
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, data: Any, extra: Iterable[tuple[bytes, bytes]] = ()) -> None:
    await send_bytes(send, status, orjson.dumps(data), [*JSON_HEADERS, *extra])


async def send_error(send: Send, error: GatewayError, extra: Iterable[tuple[bytes, bytes]] = ()) -> None:
    await send_bytes(send, error.status, error.body(), [*JSON_HEADERS, *encode_headers(error.headers), *extra])


def require_method(scope: Scope, *allowed: str) -> None:
    """A 405 naming the methods the path takes (and its ``allow`` header) unless the request uses one of them."""
    if scope["method"] not in allowed:
        raise GatewayError(405, f"{scope['method']} is not allowed on {scope['path']}; use {' or '.join(allowed)}",
                           code="method_not_allowed", headers={"allow": ", ".join(allowed)})


def parse_json_object(body: bytes) -> dict[str, Any]:
    """A request body that must be one JSON object; a clear 400 otherwise."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise GatewayError(400, "request body must be a JSON object", code="invalid_json")
    return data


def sse_event(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"
