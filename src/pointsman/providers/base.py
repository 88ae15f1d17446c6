"""The provider contract: turn an OpenAI-format chat request into an answer from one upstream model.

Every provider speaks OpenAI's chat-completions shapes on the gateway side, whatever its upstream
speaks, so the rest of the gateway never sees a provider's own format:
- `complete(body)` returns an OpenAI `chat.completion` dict;
- `stream(body)` yields OpenAI `chat.completion.chunk` dicts and ends with one that carries `usage`.
Failures are raised as `ProviderError`; whether they are worth retrying is decided here, once.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator
from typing import Any

from pointsman.config.schema import ModelConfig

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


# How providers say a request does not fit the model's context window (OpenAI and compatible servers, Anthropic,
# vLLM, Mistral, Groq): a 4xx whose message matches is a model-specific refusal, not the request's fault.
CONTEXT_EXCEEDED = re.compile(r"context[_ ]length|context window|maximum context|prompt is too long|"
                              r"too many (?:input )?tokens|exceeds? the (?:model'?s? )?(?:max(?:imum)? )?(?:context|token limit)",
                              re.IGNORECASE)


class ProviderError(Exception):
    """An upstream failure, already classified.

    status: the HTTP status the gateway should answer with if this is the last word (e.g. 502, 504, or
    the upstream's 400 for a request the upstream rejects as invalid).
    retryable: whether another try (same or next model) may succeed.
    retry_after: seconds the upstream asked us to wait, if it said.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 502,
        retryable: bool = True,
        retry_after: float | None = None,
        kind: str = "upstream_error",
        upstream_status: int | None = None,
        model_specific: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.kind = kind
        self.upstream_status = upstream_status
        self.model_specific = model_specific  # only this model cannot: the next one may

    @classmethod
    def unsupported(cls, message: str, kind: str = "unsupported_by_model") -> ProviderError:
        """This model cannot take this request (a feature it lacks, a window too small): another model
        may, so the dispatcher moves on without retrying and without counting it against the model's health."""
        return cls(message, status=400, retryable=False, kind=kind, model_specific=True)

    @classmethod
    def from_status(cls, upstream_status: int, detail: str, retry_after: float | None = None) -> ProviderError:
        """Map an upstream HTTP error status onto what the gateway does and answers."""
        if upstream_status in RETRYABLE_STATUS:
            status = 429 if upstream_status == 429 else 504 if upstream_status in (408, 504) else 502
            return cls(detail, status=status, retryable=True, retry_after=retry_after,
                       kind="rate_limited" if upstream_status == 429 else "upstream_error",
                       upstream_status=upstream_status)
        # A model configured wrongly (our key for the provider is refused, the upstream does not know the model id):
        # the client can do nothing and a retry would be refused the same way; another model may work, and the
        # model's health is not in question, so no cooldown either (model_specific).
        if upstream_status in (401, 403):
            return cls(f"provider rejected the gateway's credentials: {detail}", status=502, retryable=False,
                       kind="upstream_auth_error", upstream_status=upstream_status, model_specific=True)
        if upstream_status == 404:
            return cls(f"upstream does not know the model: {detail}", status=502, retryable=False,
                       kind="upstream_model_not_found", upstream_status=upstream_status, model_specific=True)
        if 400 <= upstream_status < 500 and CONTEXT_EXCEEDED.search(detail):
            # too long for this model's window: a model with a larger one may take it (the dispatcher skips smaller)
            return cls(detail, status=400, retryable=False, kind="context_length_exceeded",
                       upstream_status=upstream_status, model_specific=True)
        # Other 4xx: the request itself is refused; another model would likely refuse it too.
        return cls(detail, status=400 if 400 <= upstream_status < 500 else 502, retryable=False,
                   kind="invalid_request_error" if upstream_status < 500 else "upstream_error",
                   upstream_status=upstream_status)


class Provider(ABC):
    """One upstream model. Subclasses live one per file in this folder and register in PROVIDERS."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config

    @property
    def api_key(self) -> str | None:
        """Read at call time so a rotated key in the environment takes effect; never stored or logged."""
        env = self.config.api_key_env
        return os.environ.get(env) if env else None

    @abstractmethod
    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """Answer a non-streaming request. `body` is the client's OpenAI request; do not mutate it."""

    @abstractmethod
    def stream(self, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """Yield OpenAI chunk dicts; the last one carries `usage`. Errors before the first chunk let
        the gateway fall back; errors after it end the client's stream with an error event. An async generator:
        the gateway closes it (`aclose`) when it stops reading early."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections or loaded weights."""
