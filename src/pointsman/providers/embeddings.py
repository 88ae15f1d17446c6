"""OpenAI's embeddings endpoint (`POST {base_url}/embeddings`): OpenAI, vLLM, Ollama, TEI, Mistral... A pool model
of `kind: embedding` gets this provider; the gateway passes `POST /v1/embeddings` through to it (app/embeddings.py)
with only `model` replaced, through the dispatcher (retries, breaker, attempts) like any upstream call."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import orjson

from pointsman.providers.base import ProviderError
from pointsman.providers.http import HttpProvider
from pointsman.providers.openai_compat import DEFAULT_BASE_URL
from pointsman.text import text_of


class OpenAIEmbeddingsProvider(HttpProvider):
    default_base_url = DEFAULT_BASE_URL
    path = "/embeddings"

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        if "input" not in body:  # a chat body (the health probe's): embed its text
            body = {"input": " ".join(text_of(m.get("content"), " ") for m in body.get("messages") or ()) or "ping"}
        answer = await self.post_json(orjson.dumps({**body, "model": self.config.upstream_model}))
        if not isinstance(answer.get("data"), list):
            raise self.bad_answer("an embeddings answer without data")
        return answer

    async def stream(self, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        raise ProviderError.unsupported(f"{self.config.name} is an embedding model: it does not answer chat requests")
        yield {}  # pragma: no cover - makes this an async generator
