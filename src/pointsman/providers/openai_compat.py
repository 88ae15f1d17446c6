"""Any OpenAI-compatible chat-completions endpoint: OpenAI, vLLM, Ollama, llama.cpp's server, Groq,
Together, OpenRouter, DeepSeek, Mistral, Fireworks...

The request goes upstream as the client sent it, with only `model` replaced (and usage asked for when
streaming, so every request is costed); the answer comes back as the upstream wrote it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from pointsman.providers.base import ProviderError
from pointsman.providers.http import HttpProvider
from pointsman.providers.sse import sse_events

DEFAULT_BASE_URL = "https://api.openai.com/v1"


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare from LLM APIs; fall back to our own backoff


def error_detail(body: bytes) -> str:
    """The upstream's own error message when it sent one, else the start of its body."""
    try:
        parsed = orjson.loads(body)
        error = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
    except orjson.JSONDecodeError:
        pass
    return body[:300].decode("utf-8", "replace") or "(empty body)"


class OpenAICompatProvider(HttpProvider):
    default_base_url = DEFAULT_BASE_URL
    path = "/chat/completions"

    def _raise_for_status(self, status: int, headers: Any, body: bytes) -> None:
        raise ProviderError.from_status(status, f"{self.config.name}: upstream {status}: {error_detail(body)}",
                                        parse_retry_after(headers.get("retry-after")))

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        payload = orjson.dumps({**body, "model": self.config.upstream_model})
        status, headers, raw = await self._transport.request(self._url, self._headers(), payload, self._timeout)
        if status >= 400:
            self._raise_for_status(status, headers, raw)
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ProviderError(f"{self.config.name}: upstream sent invalid JSON", kind="bad_upstream_response") from exc
        if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
            raise ProviderError(f"{self.config.name}: upstream answer has no choices", kind="bad_upstream_response")
        return answer

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        options = {**(body.get("stream_options") or {}), "include_usage": True}
        payload = orjson.dumps({**body, "model": self.config.upstream_model, "stream": True, "stream_options": options})
        response = await self._transport.stream(self._url, self._headers(), payload, self._timeout)
        try:
            if response.status >= 400:
                self._raise_for_status(response.status, response.headers, await response.read())
            finished = False
            async for _event, data in sse_events(response.lines()):
                if data == b"[DONE]":
                    return
                try:
                    chunk = orjson.loads(data)
                except orjson.JSONDecodeError as exc:
                    raise ProviderError(f"{self.config.name}: upstream sent an invalid stream event", kind="bad_upstream_response") from exc
                if isinstance(chunk, dict) and "error" in chunk:
                    error = chunk["error"]
                    message = error.get("message") if isinstance(error, dict) else str(error)
                    raise ProviderError(f"{self.config.name}: upstream stream error: {message}", kind="upstream_error")
                choices = chunk.get("choices") if isinstance(chunk, dict) else None
                if choices and choices[0].get("finish_reason"):
                    finished = True
                yield chunk
            if finished:  # some servers close without [DONE]; the answer itself is complete
                return
            raise ProviderError(f"{self.config.name}: upstream stream ended without [DONE]", kind="incomplete_stream")
        finally:
            await response.aclose()
