"""The test upstream's HTTP server (aiohttp.web: it can drop a connection, stall or cut a stream)."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import orjson
from aiohttp import web

from tests.upstream.behaviours import Behaviour, chat_chunks, chat_completion, error_body, last_user_text

try:  # the Anthropic side is optional so the OpenAI side works on its own
    from tests.upstream.anthropic_api import messages_response, messages_stream_events
except ImportError:  # pragma: no cover
    messages_response = messages_stream_events = None  # type: ignore[assignment]


class UpstreamState:
    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.scripts: dict[str, collections.deque[str]] = collections.defaultdict(collections.deque)
        self.counts: collections.Counter[str] = collections.Counter()
        self.last_headers: dict[str, str] = {}
        self.last_body: dict[str, Any] = {}

    def behaviour_for(self, model: str) -> Behaviour:
        self.counts[model] += 1
        script = self.scripts.get(model)
        if script:
            return Behaviour.parse(script.popleft())
        return Behaviour.parse(model)


STATE = web.AppKey("state", UpstreamState)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", headers=headers)


async def _before_answer(request: web.Request, behaviour: Behaviour) -> web.StreamResponse | None:
    """Faults shared by both protocols; None means: go on and answer."""
    if behaviour.kind == "slow":
        await asyncio.sleep(behaviour.arg(0, 100) / 1000)
    elif behaviour.kind == "status":
        code = int(behaviour.arg(0, 500))
        headers = {"retry-after": behaviour.args[1]} if len(behaviour.args) > 1 else None
        return _json(error_body(code), status=code, headers=headers)
    elif behaviour.kind == "context":  # the request is longer than the model's window, as OpenAI says it
        window = int(behaviour.arg(0, 8192))
        return _json({"error": {"message": f"This model's maximum context length is {window} tokens. However, your "
                                           f"messages resulted in {window + 100} tokens.", "type": "invalid_request_error",
                                "param": "messages", "code": "context_length_exceeded"}}, status=400)
    elif behaviour.kind == "quote":  # an error that quotes the prompt back, as some providers' 400s do
        body = await request.json()
        quoted = last_user_text(body.get("messages") or [])
        return _json({"error": {"message": f"invalid content: {quoted!r}", "type": "invalid_request_error",
                                "param": "messages", "code": "invalid_content"}}, status=int(behaviour.arg(0, 400)))
    elif behaviour.kind == "reset":
        assert request.transport is not None
        request.transport.abort()
        raise asyncio.CancelledError
    elif behaviour.kind == "malformed":
        return web.Response(body=b'{"choices": [ not json', content_type="application/json")
    elif behaviour.kind == "deep":  # a valid answer carrying a field nested N levels (orjson writes at most 254)
        depth = int(behaviour.arg(0, 300))
        return web.Response(body=b'{"id": "deep", "object": "chat.completion", "created": 0, "model": "deep", "choices": '
                            b'[{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}], '
                            b'"usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}, "extra": ' + b"[" * depth + b"]" * depth + b"}", content_type="application/json")
    elif behaviour.kind == "huge":
        return web.Response(body=b"x" * int(behaviour.arg(0, 40) * 1024 * 1024), content_type="application/json")
    return None


async def _stream(request: web.Request, behaviour: Behaviour, events: list[bytes]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
    await response.prepare(request)
    for i, event in enumerate(events):
        if behaviour.kind == "cutoff" and i == 2:
            assert request.transport is not None
            request.transport.close()
            return response
        await response.write(event)
        if behaviour.kind == "stall" and i == 0:
            await asyncio.sleep(behaviour.arg(0, 5000) / 1000)
    await response.write_eof()
    return response


def _openai_events(body: dict[str, Any], behaviour: Behaviour | None = None) -> list[bytes]:
    return [b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in chat_chunks(body, behaviour)] + [b"data: [DONE]\n\n"]


def _endpoint(answer: Any, events: Any) -> Any:
    """One protocol's endpoint: record the call, show the scripted fault, or answer (JSON or SSE)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        state: UpstreamState = request.app[STATE]
        body = orjson.loads(await request.read())
        state.last_headers = {str(k).lower(): v for k, v in request.headers.items()}
        state.last_body = body
        behaviour = state.behaviour_for(str(body.get("model")))
        early = await _before_answer(request, behaviour)
        if early is not None:
            return early
        if behaviour.kind == "leak-key":  # a misbehaving upstream: its answer quotes the key it was called with
            key = request.headers.get("authorization", "").removeprefix("Bearer ") or request.headers.get("x-api-key", "")
            body = {**body, "messages": [{"role": "user", "content": f"the key is {key} ok"}]}
            behaviour = Behaviour.parse("echo")
        if not body.get("stream"):
            return _json(answer(body, behaviour))
        return await _stream(request, behaviour, events(body, behaviour))

    return handle


chat_completions = _endpoint(chat_completion, _openai_events)
messages = _endpoint(messages_response, messages_stream_events)


async def embeddings(request: web.Request) -> web.Response:
    """OpenAI's embeddings: one 4-dimensional vector per input (its words, characters, and two constants);
    a scripted status fault as for chat."""
    state: UpstreamState = request.app[STATE]
    body = orjson.loads(await request.read())
    state.last_headers = {str(k).lower(): v for k, v in request.headers.items()}
    state.last_body = body
    behaviour = state.behaviour_for(str(body.get("model")))
    early = await _before_answer(request, behaviour)
    if early is not None:
        return early
    inputs = body["input"] if isinstance(body["input"], list) and isinstance(body["input"][0], str) else [body["input"]]
    words = sum(len(str(text).split()) for text in inputs)
    data = [{"object": "embedding", "index": i, "embedding": [float(len(str(t).split())), float(len(str(t))), 0.5, -0.5]}
            for i, t in enumerate(inputs)]
    usage = None if behaviour.kind == "nousage" else {"prompt_tokens": words, "total_tokens": words}
    return _json({"object": "list", "data": data, "model": body.get("model"), "usage": usage})


async def set_script(request: web.Request) -> web.Response:
    """{"model": "m", "behaviours": ["status:500", "echo"]}: the next requests for m, in order."""
    state: UpstreamState = request.app[STATE]
    data = orjson.loads(await request.read())
    state.scripts[data["model"]] = collections.deque(data["behaviours"])
    return _json({"ok": True})


async def stats(request: web.Request) -> web.Response:
    state: UpstreamState = request.app[STATE]
    return _json({"counts": dict(state.counts), "last_headers": state.last_headers, "last_body": state.last_body})


async def reset(request: web.Request) -> web.Response:
    request.app[STATE].clear()  # in place: aiohttp deprecates changing a started application's state
    return _json({"ok": True})


def make_app() -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATE] = UpstreamState()
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/chat/completions", chat_completions)
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/_control/script", set_script)
    app.router.add_get("/_control/stats", stats)
    app.router.add_post("/_control/reset", reset)
    return app
