"""OpenAI's Responses API (`POST /v1/responses`, `GET`/`DELETE /v1/responses/{id}`): what `client.responses`,
Codex CLI and OpenAI's agent SDKs speak.

A Responses request (instructions, input items: messages, function calls and their outputs) is translated into a
chat-completions body at the edge (app/edge.py) and routed like any chat request; the answer comes back as a
Response object, a stream as the API's typed events (``response.created`` ... ``response.completed``, each with its
``sequence_number``). With ``store`` (the API's default) the response and the conversation up to it are kept in the
ledger's database (ledger/conversations.py), per tenant, so that ``previous_response_id`` continues it and ``GET``
returns it. Built-in tools (web search, file search, computer use) and input files have no chat equivalent and are
refused with a 400.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Any

from pointsman.app.caching import tenant_of
from pointsman.app.edge import EdgeSend, header, sse
from pointsman.app.http import Receive, Scope, Send, require_method, send_json
from pointsman.app.pipeline import Exchange
from pointsman.errors import GatewayError
from pointsman.ledger import LedgerRecord
from pointsman.ledger.conversations import ConversationStore
from pointsman.text import text_of

__all__ = ["PREFIX", "ResponsesAdapter", "handle", "to_chat_request", "to_response", "ResponseStream"]

PREFIX = "/v1/responses"
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}

_stores: weakref.WeakKeyDictionary[Any, ConversationStore] = weakref.WeakKeyDictionary()


async def store_of(gateway: Any) -> ConversationStore:
    """The gateway's store of responses, opened (its table made) on first use: most gateways never store one."""
    store = _stores.get(gateway)
    if store is None:
        store = await asyncio.to_thread(ConversationStore, gateway.server.ledger_url)
        if gateway in _stores:  # another request opened it meanwhile
            store.close()
            return _stores[gateway]
        _stores[gateway] = store
        weakref.finalize(gateway, store.close)
    return store


async def purge(gateway: Any, before: float) -> int:
    """Delete the responses stored before ``before`` (the gateway's hourly upkeep, server.responses_retention_days);
    0 where this gateway never opened the store."""
    store = _stores.get(gateway)
    return 0 if store is None else await asyncio.to_thread(store.purge, before)


def _invalid(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, code="invalid_request", param=param, type="invalid_request_error")


# --- request: Responses -> chat completions -------------------------------------------------------------------


def _parts(content: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _invalid(f"{where}: a string or a list of content parts", where)
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "refusal":
            parts.append({"type": "text", "text": str(part.get("refusal", ""))})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            image: dict[str, Any] = {"url": part["image_url"]}
            if part.get("detail"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise _invalid(f"{where}[{i}]: content type {kind!r} is not supported by this gateway", f"{where}[{i}]")
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def input_messages(items: Any) -> list[dict[str, Any]]:
    """Input items as chat messages: messages, function calls (an assistant's tool_calls) and their outputs."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not isinstance(items, list):
        raise _invalid("input: a string or a list of input items", "input")
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise _invalid(f"input[{i}]: must be an object", f"input[{i}]")
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise _invalid(f"input[{i}].role: one of user, assistant, system, developer", f"input[{i}].role")
            content = _parts(item.get("content"), f"input[{i}].content")
            if role == "assistant":
                content = text_of(content)
            messages.append({"role": "system" if role == "developer" else role, "content": content})
        elif kind == "function_call":
            call = {"id": item.get("call_id"), "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments") or "{}"}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and (last.get("tool_calls") or not last.get("content")):
                last.setdefault("tool_calls", []).append(call)  # parallel calls: one assistant turn
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"),
                             "content": output if isinstance(output, str) else text_of(_parts(output, f"input[{i}].output"))})
        elif kind == "reasoning":
            continue  # an earlier turn's reasoning: not shown to another model
        else:
            raise _invalid(f"input[{i}]: item type {kind!r} is not supported by this gateway", f"input[{i}].type")
    return messages


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _invalid("tools: must be a list", "tools")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise _invalid(f"tools[{i}]: built-in tool {kind!r} is not supported by this gateway (function tools only)",
                           f"tools[{i}].type")
        function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if tool.get(k) is not None}
        out.append({"type": "function", "function": function})
    return out


def _response_format(text: Any) -> dict[str, Any] | None:
    fmt = text.get("format") if isinstance(text, dict) else None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_schema":
        assert isinstance(fmt, dict)
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if fmt.get(k) is not None}
        return {"type": "json_schema", "json_schema": schema}
    if kind == "json_object":
        return {"type": "json_object"}
    return None


def to_chat_request(request: dict[str, Any], history: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the chat body, the conversation without instructions: history then this input). Pure."""
    model = request.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model: a string is required", "model")
    conversation = [*history, *input_messages(request.get("input", []))]
    if not conversation:
        raise _invalid("input: at least one input item is required", "input")
    instructions = request.get("instructions")
    messages = ([{"role": "system", "content": instructions}] if isinstance(instructions, str) and instructions else [])
    body: dict[str, Any] = {"model": model, "messages": [*messages, *conversation]}
    if request.get("max_output_tokens") is not None:
        body["max_tokens"] = request["max_output_tokens"]
    for name in ("temperature", "top_p", "parallel_tool_calls", "user"):
        if request.get(name) is not None:
            body[name] = request[name]
    if request.get("tools"):
        body["tools"] = _tools(request["tools"])
        choice = request.get("tool_choice")
        if isinstance(choice, str):
            body["tool_choice"] = choice
        elif isinstance(choice, dict) and choice.get("type") == "function":
            body["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
        elif choice is not None:
            raise _invalid(f"tool_choice {choice!r} is not supported by this gateway", "tool_choice")
    response_format = _response_format(request.get("text"))
    if response_format is not None:
        body["response_format"] = response_format
    if request.get("stream"):
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}  # the usage goes into response.completed
    return body, conversation


# --- answer: chat completion -> Response -----------------------------------------------------------------------


def usage_of(usage: Any) -> dict[str, Any] | None:
    if not isinstance(usage, dict):
        return None
    prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    details = usage.get("prompt_tokens_details") if isinstance(usage.get("prompt_tokens_details"), dict) else {}
    out_details = usage.get("completion_tokens_details") if isinstance(usage.get("completion_tokens_details"), dict) else {}
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": int((details or {}).get("cached_tokens") or 0)},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": int((out_details or {}).get("reasoning_tokens") or 0)},
            "total_tokens": prompt + completion}


def skeleton(request: dict[str, Any], response_id: str, model: str, created: int) -> dict[str, Any]:
    """The Response object's fields that echo the request."""
    return {"id": response_id, "object": "response", "created_at": created, "status": "in_progress", "model": model,
            "output": [], "error": None, "incomplete_details": None, "instructions": request.get("instructions"),
            "max_output_tokens": request.get("max_output_tokens"), "metadata": request.get("metadata") or {},
            "parallel_tool_calls": request.get("parallel_tool_calls", True),
            "previous_response_id": request.get("previous_response_id"), "reasoning": {"effort": None, "summary": None},
            "store": request.get("store", True), "temperature": request.get("temperature", 1.0),
            "text": request.get("text") or {"format": {"type": "text"}}, "tool_choice": request.get("tool_choice", "auto"),
            "tools": request.get("tools") or [], "top_p": request.get("top_p", 1.0), "truncation": "disabled",
            "usage": None, "user": request.get("user")}


def _finish(response: dict[str, Any], finish_reason: str | None) -> None:
    reason = INCOMPLETE.get(finish_reason or "")
    response["status"] = "incomplete" if reason else "completed"
    response["incomplete_details"] = {"reason": reason} if reason else None


def to_response(answer: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """A chat completion as a Response object, on the request's skeleton (pure)."""
    choice = (answer.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    suffix = base["id"].removeprefix("resp_")
    output: list[dict[str, Any]] = []
    text = text_of(message.get("content"))
    if text or not message.get("tool_calls"):
        output.append({"type": "message", "id": f"msg_{suffix}", "status": "completed", "role": "assistant",
                       "content": [{"type": "output_text", "text": text, "annotations": []}]})
    for i, call in enumerate(message.get("tool_calls") or ()):
        function = call.get("function") or {}
        output.append({"type": "function_call", "id": f"fc_{suffix}_{i}", "call_id": call.get("id"),
                       "name": function.get("name"), "arguments": function.get("arguments") or "", "status": "completed"})
    response = {**base, "output": output, "usage": usage_of(answer.get("usage"))}
    _finish(response, choice.get("finish_reason"))
    return response


def assistant_message(response: dict[str, Any]) -> dict[str, Any]:
    """A Response's output as the chat assistant message a later turn continues from."""
    text = "".join(part.get("text", "") for item in response["output"] if item["type"] == "message"
                   for part in item["content"])
    calls = [{"id": item["call_id"], "type": "function", "function": {"name": item["name"], "arguments": item["arguments"]}}
             for item in response["output"] if item["type"] == "function_call"]
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls
    return message


class ResponseStream:
    """chat.completion.chunks in, the Responses API's typed events out."""

    def __init__(self, base: dict[str, Any]) -> None:
        self.base = base
        self.suffix = base["id"].removeprefix("resp_")
        self.seq = 0
        self.started = False
        self.output: list[dict[str, Any]] = []
        self.text: dict[str, Any] | None = None  # the message item being written
        self.tools: dict[int, dict[str, Any]] = {}  # chat tool_calls index -> its function_call item
        self.finish_reason: str | None = None
        self.usage: Any = None

    def _event(self, kind: str, **data: Any) -> bytes:
        self.seq += 1
        return sse(kind, {"type": kind, "sequence_number": self.seq, **data})

    def _start(self) -> bytes:
        self.started = True
        return self._event("response.created", response=self.base) + self._event("response.in_progress", response=self.base)

    def _add(self, item: dict[str, Any]) -> bytes:
        self.output.append(item)
        return self._event("response.output_item.added", output_index=len(self.output) - 1, item=dict(item))

    def _close_text(self) -> bytes:
        item = self.text
        if item is None:
            return b""
        self.text = None
        index = self.output.index(item)
        part = item["content"][0]
        item["status"] = "completed"
        return (self._event("response.output_text.done", item_id=item["id"], output_index=index, content_index=0,
                            text=part["text"], logprobs=[])
                + self._event("response.content_part.done", item_id=item["id"], output_index=index, content_index=0,
                              part=dict(part))
                + self._event("response.output_item.done", output_index=index, item=item))

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        out = b"" if self.started else self._start()
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:
                if self.text is None:
                    item: dict[str, Any] = {"type": "message", "id": f"msg_{self.suffix}_{len(self.output)}", "status": "in_progress",
                            "role": "assistant", "content": []}
                    out += self._add(item)
                    part = {"type": "output_text", "text": "", "annotations": []}
                    out += self._event("response.content_part.added", item_id=item["id"], output_index=len(self.output) - 1,
                                       content_index=0, part=dict(part))
                    item["content"].append(part)
                    self.text = item
                self.text["content"][0]["text"] += content
                out += self._event("response.output_text.delta", item_id=self.text["id"],
                                   output_index=self.output.index(self.text), content_index=0, delta=content, logprobs=[])
            for call in delta.get("tool_calls") or ():
                index = call.get("index", 0)
                function = call.get("function") or {}
                tool = self.tools.get(index)
                if tool is None:
                    out += self._close_text()
                    tool = self.tools[index] = {"type": "function_call", "id": f"fc_{self.suffix}_{index}",
                                                "call_id": call.get("id"), "name": function.get("name"),
                                                "arguments": "", "status": "in_progress"}
                    out += self._add(tool)
                if function.get("arguments"):
                    tool["arguments"] += function["arguments"]
                    out += self._event("response.function_call_arguments.delta", item_id=tool["id"],
                                       output_index=self.output.index(tool), delta=function["arguments"])
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return out

    def final(self) -> dict[str, Any]:
        response = {**self.base, "output": self.output, "usage": usage_of(self.usage)}
        _finish(response, self.finish_reason)
        return response

    def end(self) -> tuple[bytes, dict[str, Any]]:
        """(the closing events, the final Response object)."""
        out = (b"" if self.started else self._start()) + self._close_text()
        for item in self.tools.values():
            index = self.output.index(item)
            item["status"] = "completed"
            out += self._event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                               name=item["name"], arguments=item["arguments"])
            out += self._event("response.output_item.done", output_index=index, item=item)
        response = self.final()
        kind = "response.completed" if response["status"] == "completed" else "response.incomplete"
        return out + self._event(kind, response=response), response

    def error(self, error: dict[str, Any]) -> bytes:
        response = {**self.final(), "status": "failed",
                    "error": {"code": "server_error", "message": str(error.get("message") or "upstream stream failed")}}
        return (b"" if self.started else self._start()) + self._event("response.failed", response=response)


class ResponsesAdapter:
    """The edge adapter (app/edge.py) for one POST /v1/responses."""

    def __init__(self, gateway: Any) -> None:
        self.gateway = gateway
        self.request_body: dict[str, Any] = {}
        self.base: dict[str, Any] = {}
        self.conversation: list[dict[str, Any]] = []
        self.tenant = ""
        self.request_id = ""
        self.stream: ResponseStream | None = None

    async def request(self, raw: dict[str, Any], ex: Any) -> dict[str, Any]:
        record = ex.record
        self.request_body, self.request_id = raw, record.id
        self.tenant = tenant_of(record.key_id, record.team)
        previous = raw.get("previous_response_id")
        history: list[dict[str, Any]] = []
        if previous is not None:
            store = await store_of(self.gateway)
            found = await asyncio.to_thread(store.get, str(previous), self.tenant)
            if found is None:
                raise GatewayError(404, f"Previous response with id '{previous}' not found.", code="previous_response_not_found",
                                   param="previous_response_id")
            history = found[1]
        body, self.conversation = to_chat_request(raw, history)
        self.base = skeleton(raw, "resp_" + record.id.removeprefix("req_"), str(raw.get("model")), int(time.time()))
        return body

    def started(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        model = header(headers, b"x-pointsman-model")
        if model and self.base:
            self.base["model"] = model  # the pool model that answered

    async def _store(self, response: dict[str, Any]) -> None:
        """Committed before the client has the answer: its next turn may reach another replica."""
        if not self.request_body.get("store", True):
            return
        store = await store_of(self.gateway)
        await asyncio.to_thread(store.put, response["id"], self.tenant, self.request_id, response,
                                [*self.conversation, assistant_message(response)])

    async def answer(self, status: int, body: dict[str, Any]) -> dict[str, Any]:
        if status >= 400 or not self.base:
            return body  # errors are OpenAI-shaped already
        response = to_response(body, self.base)
        await self._store(response)
        return response

    def _stream(self) -> ResponseStream:
        if self.stream is None:
            self.stream = ResponseStream(self.base)
        return self.stream

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        return self._stream().chunk(chunk)

    def stream_error(self, error: dict[str, Any]) -> bytes:
        return self._stream().error(error)

    async def stream_end(self) -> bytes:
        events, response = self._stream().end()
        await self._store(response)
        return events


async def _tenant(gateway: Any, scope: Scope) -> str:
    """The caller's tenant, authenticated as a chat request is (the key, and its team or x-pointsman-team)."""
    ex = Exchange(scope, None, None, time.perf_counter(), LedgerRecord(id="", ts=time.time(), requested_model="", status=0))
    await gateway._authenticate_stage(ex)
    return tenant_of(ex.record.key_id, ex.record.team)


async def handle(gateway: Any, scope: Scope, receive: Receive, send: Send) -> None:
    path, method = scope["path"], scope["method"]
    if path == PREFIX:
        require_method(scope, "POST")
        adapter = ResponsesAdapter(gateway)
        await gateway._chat(scope, receive, EdgeSend(send, adapter), adapter)
        return
    response_id = path[len(PREFIX) + 1:]
    if not response_id or "/" in response_id:
        raise GatewayError(404, f"no route for {method} {path}", code="not_found")
    require_method(scope, "GET", "DELETE")
    tenant = await _tenant(gateway, scope)
    store = await store_of(gateway)
    if method == "GET":
        found = await asyncio.to_thread(store.get, response_id, tenant)
        if found is None:
            raise GatewayError(404, f"Response with id '{response_id}' not found.", code="not_found")
        await send_json(send, 200, found[0])
        return
    if not await asyncio.to_thread(store.delete, response_id, tenant):
        raise GatewayError(404, f"Response with id '{response_id}' not found.", code="not_found")
    await send_json(send, 200, {"id": response_id, "object": "response.deleted", "deleted": True})

