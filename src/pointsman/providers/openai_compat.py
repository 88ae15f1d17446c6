"""Any OpenAI-compatible chat-completions endpoint: OpenAI, vLLM, Ollama, llama.cpp's server, Groq,
Together, OpenRouter, DeepSeek, Mistral, Fireworks...

The request goes upstream as the client sent it, with only `model` replaced (and usage asked for when
streaming, so every request is costed); the answer comes back as the upstream wrote it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import orjson

from pointsman.providers.base import ProviderError
from pointsman.providers.http import HttpProvider

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAICompatProvider(HttpProvider):
    default_base_url = DEFAULT_BASE_URL
    path = "/chat/completions"

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        answer = await self.post_json(orjson.dumps({**body, "model": self.config.upstream_model}))
        if not isinstance(answer.get("choices"), list):
            raise self.bad_answer("an answer without choices")
        return answer

    async def stream(self, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        options = {**(body.get("stream_options") or {}), "include_usage": True}
        payload = orjson.dumps({**body, "model": self.config.upstream_model, "stream": True, "stream_options": options})
        finished = False
        events = self.post_events(payload)
        try:
            async for data in events:
                if data == b"[DONE]":
                    return
                try:
                    chunk = orjson.loads(data)
                except orjson.JSONDecodeError as exc:
                    raise self.bad_answer("an invalid stream event") from exc
                if isinstance(chunk, dict) and "error" in chunk:
                    error = chunk["error"]
                    message = error.get("message") if isinstance(error, dict) else str(error)
                    raise ProviderError(f"{self.config.name}: upstream stream error: {message}", kind="upstream_error")
                choices = chunk.get("choices") if isinstance(chunk, dict) else None
                if choices and choices[0].get("finish_reason"):
                    finished = True
                yield chunk
        finally:
            await events.aclose()  # release the connection now, also when returning early
        if not finished:  # some servers close without [DONE]; an answer with its finish_reason is complete
            raise ProviderError(f"{self.config.name}: upstream stream ended without [DONE]", kind="incomplete_stream")
