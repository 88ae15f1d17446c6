"""Calling the plan: the chosen model, then its fallbacks; retries with backoff, cooldowns.

Every call is an `Attempt` in the ledger. A streaming request can fall back only until its first
chunk has arrived; after that the client already holds part of one model's answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from pointsman.config.schema import ServerConfig
from pointsman.errors import GatewayError
from pointsman.gateway.pool import Pool, PoolEntry
from pointsman.gateway.resilience import backoff_delay
from pointsman.ledger import Attempt
from pointsman.providers import ProviderError


@dataclass(slots=True)
class DispatchResult:
    entry: PoolEntry
    attempts: list[Attempt]
    upstream_ms: float  # time spent waiting on upstreams (incl. backoff): not the gateway's overhead
    answer: dict[str, Any] | None = None  # non-streaming
    first_chunk: dict[str, Any] | None = None  # streaming
    chunks: AsyncGenerator[dict[str, Any], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _as_gateway_error(error: ProviderError | None, attempts: list[Attempt], ours: int = 0) -> GatewayError:
    gateway_error = _translate(error, attempts, ours)
    gateway_error.attempts = attempts
    return gateway_error


def _translate(error: ProviderError | None, attempts: list[Attempt], ours: int = 0) -> GatewayError:
    if error is None:  # each model's cooldown attempt says why it cools down: the cause, not only the symptom
        why = "; ".join(f"{a.model}: {a.error or a.status}" for a in attempts[ours:]) or "none"
        return GatewayError(503, f"every eligible model is cooling down after repeated failures; try again shortly ({why})",
                            code="all_models_cooling_down")
    headers = {}
    if error.status == 429 and error.retry_after is not None:
        headers["retry-after"] = str(int(error.retry_after + 0.999))
    tried = len(attempts)
    return GatewayError(error.status, f"{_what_failed(attempts[ours:], error)} (after {tried} attempt{'s' if tried != 1 else ''})",
                        code=error.kind, headers=headers)


def _what_failed(attempts: list[Attempt], error: ProviderError) -> str:
    """Each model tried, in order, with its last error: with no network every model fails alike, and naming only
    one (or only its URL) hid that the whole plan had been tried."""
    last_of: dict[str, str] = {}  # a dict keeps the order in which models were first tried
    for attempt in attempts:
        if attempt.status != "ok":
            message = attempt.error or attempt.status
            last_of[attempt.model] = message.removeprefix(f"{attempt.model}: ")  # some provider errors name it already
    if not last_of:
        return error.message
    named = "; ".join(f"{model}: {message}" for model, message in last_of.items())
    return named if len(last_of) == 1 else f"every model tried failed, in order: {named}"


class Dispatcher:
    def __init__(self, pool: Pool, server: ServerConfig) -> None:
        self.pool = pool
        self.last_failure: dict[str, str] = {}  # per model, the error that last counted against it
        self.backoff_base = server.retry_backoff_s
        self.backoff_cap = server.retry_backoff_cap_s
        self.max_retry_after = server.max_retry_after_s

    async def run(self, plan: list[str], body: dict[str, Any], stream: bool,
                  attempts: list[Attempt] | None = None) -> DispatchResult:
        """Call the plan. ``attempts``: a list of the caller's that every attempt is added to as it ends, so that a
        caller that cancels the call (its client left) still knows what was tried."""
        attempts = [] if attempts is None else attempts
        ours = len(attempts)  # the caller's list may hold earlier calls (a judge's, a cascade's): errors name this run's
        last_error: ProviderError | None = None
        upstream_start = time.perf_counter()
        needs_window = 0  # a model refused the request as too long: only larger windows are worth a try
        for name in plan:
            entry = self.pool[name]
            if entry.config.context_window < needs_window:
                attempts.append(Attempt(name, "window_too_small", 0.0, f"a model with a {needs_window - 1}-token window "
                                                                        f"refused the request as too long"))
                continue
            counted = False  # one request counts at most one failure against a model, however often it retried
            for retry in range(entry.config.max_retries + 1):
                if not entry.breaker.allow():
                    why = self.last_failure.get(name)
                    attempts.append(Attempt(name, "cooldown", 0.0, f"cooling down for {entry.breaker.cooldown_remaining():.1f}s"
                                                                   + (f" (last failure: {why})" if why else "")))
                    break
                started = time.perf_counter()
                try:
                    if stream:
                        chunks = entry.provider.stream(body)
                        try:
                            first = await chunks.__anext__()
                        except StopAsyncIteration:
                            raise ProviderError(f"{name}: upstream stream ended before any chunk", kind="incomplete_stream") from None
                        result = DispatchResult(entry, attempts, 0.0, first_chunk=first, chunks=chunks)
                    else:
                        result = DispatchResult(entry, attempts, 0.0, answer=await entry.provider.complete(body))
                except BaseException as error:
                    if not isinstance(error, ProviderError):
                        # not the upstream's doing (a body that cannot be encoded, a cancelled request): no verdict on
                        # the model, but a half-open trial must be given back, or the model stays cooling down for good
                        entry.breaker.release()
                        if isinstance(error, asyncio.CancelledError):
                            attempts.append(Attempt(name, "cancelled", (time.perf_counter() - started) * 1000,
                                                    "cancelled: the client left, or a deadline around the call passed"))
                        raise
                    attempts.append(Attempt(name, error.kind, (time.perf_counter() - started) * 1000, error.message))
                    last_error = error
                    if error.model_specific:
                        if error.kind == "context_length_exceeded":
                            needs_window = max(needs_window, entry.config.context_window + 1)
                        entry.breaker.release()
                        break  # a feature this model lacks, or its configuration: no retry, no health penalty, next model
                    if error.retryable and not counted:
                        entry.breaker.record_failure()
                        self.last_failure[name] = error.message
                        counted = True
                    else:  # the request's own fault (a 4xx), or this request already counted against the model
                        entry.breaker.release()
                    if not error.retryable:
                        raise _as_gateway_error(error, attempts, ours) from None
                    if retry >= entry.config.max_retries:
                        break
                    delay = backoff_delay(retry, error.retry_after, base=self.backoff_base, cap=self.backoff_cap,
                                          max_retry_after=self.max_retry_after)
                    if delay is None:
                        break  # asked to wait longer than is worth it: next model
                    await asyncio.sleep(delay)
                    continue
                entry.breaker.record_success()
                attempts.append(Attempt(name, "ok", (time.perf_counter() - started) * 1000))
                result.upstream_ms = (time.perf_counter() - upstream_start) * 1000
                return result
        raise _as_gateway_error(last_error, attempts, ours)
