"""What every HTTP provider shares: its endpoint URL, timeouts, headers and how it sends its key."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import orjson

from pointsman.config.schema import ModelConfig
from pointsman.providers.base import Provider, ProviderError
from pointsman.providers.sse import sse_events
from pointsman.providers.transport import Timeout, Transport


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


class HttpProvider(Provider):
    default_base_url: str
    path: str  # appended to the base URL
    protocol_headers: dict[str, str] = {}

    def __init__(self, config: ModelConfig, transport: Transport) -> None:
        super().__init__(config)
        self._transport = transport
        self._url = (config.base_url or self.default_base_url).rstrip("/") + self.path
        self._timeout = Timeout(connect=config.connect_timeout_s, read=config.timeout_s)
        # config.headers last, so a pool entry can pin an API version or add a beta flag.
        self._static_headers = {"content-type": "application/json", **self.protocol_headers, **config.headers}

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"}

    def _headers(self) -> dict[str, str]:
        key = self.api_key
        return {**self._static_headers, **self.auth_headers(key)} if key else self._static_headers

    def bad_answer(self, what: str) -> ProviderError:
        return ProviderError(f"{self.config.name}: upstream sent {what}", kind="bad_upstream_response")

    def _status_error(self, status: int, headers: Any, body: bytes) -> ProviderError:
        detail = f"{self.config.name}: upstream {status}: {error_detail(body)}"
        if status in (401, 403):  # say where the key comes from: the fix is in the gateway's environment
            env = self.config.api_key_env
            detail += (f" (the key is read from ${env}, which is not set)" if env and not self.api_key else
                       f" (the key is read from ${env})" if env else " (the model has no api_key_env in the config)")
        return ProviderError.from_status(status, detail, parse_retry_after(headers.get("retry-after")))

    async def post_json(self, payload: bytes) -> dict[str, Any]:
        """POST and return the parsed JSON object; statuses and garbage come out as ProviderError."""
        status, headers, raw = await self._transport.request(self._url, self._headers(), payload, self._timeout)
        if status >= 400:
            raise self._status_error(status, headers, raw)
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise self.bad_answer("invalid JSON") from exc
        if not isinstance(answer, dict):
            raise self.bad_answer("an answer that is not a JSON object")
        return answer

    async def post_events(self, payload: bytes) -> AsyncGenerator[bytes, None]:
        """POST and yield each server-sent event's data; the connection is released however it ends."""
        response = await self._transport.stream(self._url, self._headers(), payload, self._timeout)
        try:
            if response.status >= 400:
                raise self._status_error(response.status, response.headers, await response.read())
            async for _event, data in sse_events(response.lines()):
                yield data
        finally:
            await response.aclose()
