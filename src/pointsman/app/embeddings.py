"""`POST /v1/embeddings`: passed through to a pool model of `kind: embedding` (providers/embeddings.py).

Nothing is routed by quality (an embedding model is chosen for its vector space, which a client's index depends
on): the model named is called, or with `model: "auto"` the cheapest embedding model of the pool. The call goes
through the dispatcher (retries, breaker, attempts), the budgets and rate limits apply as to a chat request, and
each request is a ledger row with its tokens and cost, as a chat request is.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from pointsman.accounting.prices import TokenUsage, read_usage
from pointsman.app.http import (JSON_HEADERS, ClientDisconnected, Receive, Scope, Send, encode_headers, require_method,
                                 send_bytes, send_error)
from pointsman.core import RouteContext, RouteDecision
from pointsman.errors import GatewayError

log = logging.getLogger("pointsman")

__all__ = ["PATHS", "handle", "embedding_models"]

PATHS = ("/v1/embeddings", "/embeddings")


def embedding_models(pool: Any) -> list[str]:
    """The pool's embedding models, cheapest first."""
    return [name for name in pool.by_price if pool[name].config.kind == "embedding"]


def _texts(value: Any) -> tuple[str, int]:
    """(the input's text, its token ids counted): what a request without usage is estimated from."""
    if isinstance(value, str):
        return value, 0
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return "\n".join(value), 0
        if all(isinstance(v, int) for v in value):
            return "", len(value)
        if all(isinstance(v, list) and all(isinstance(t, int) for t in v) for v in value):
            return "", sum(len(v) for v in value)
    raise GatewayError(400, "input: a string, a list of strings, or token ids (a list of integers, or of lists of "
                            "integers), not empty", code="invalid_request", param="input")


def _choose(pool: Any, requested: Any) -> RouteDecision:
    if not isinstance(requested, str) or not requested:
        raise GatewayError(400, "model: a string is required", code="invalid_request", param="model")
    models = embedding_models(pool)
    if requested in models:
        return RouteDecision(model=requested, tier="direct", reason="model named by the client")
    if requested == "auto" and models:
        return RouteDecision(model=models[0], tier="default", reason="cheapest embedding model")
    raise GatewayError(404, f"The model `{requested}` is not an embedding model of this gateway's pool (kind: "
                            f"embedding): {', '.join(models) or 'it has none'}", code="model_not_found", param="model")


async def handle(gateway: Any, scope: Scope, receive: Receive, send: Send) -> None:
    require_method(scope, "POST")
    ex = gateway.new_exchange(scope, receive, send)
    record = ex.record
    try:
        await gateway._authenticate_stage(ex)
        raw = await gateway.read_json(ex)
        record.requested_model = str(raw.get("model") or "")[:256]
        text, token_ids = _texts(raw.get("input"))
        ex.decision = decision = _choose(gateway.pool, raw.get("model"))
        record.tier, record.reason = decision.tier, decision.reason
        # the budgets stage reads a chat request: the input as one user message, one output token
        ex.raw = {"model": decision.model, "messages": [{"role": "user", "content": text or "x" * (4 * token_ids)}],
                  "max_tokens": 1}
        ex.ctx = RouteContext(ex.raw, tenant=f"{record.key_id or ''}|{record.team or ''}")
        await gateway.budgets.stage(ex)
        result = await gateway.dispatcher.run([decision.model], raw, stream=False)
        answer = result.answer
        assert answer is not None
        tokens = read_usage(answer.get("usage"))
        if tokens is None:  # some servers report no usage: estimated, and the row says so
            tokens, record.cost_estimated = TokenUsage((len(text) + 3) // 4 + token_ids, 0), True
        record.chosen_model, record.attempts = result.entry.name, result.attempts
        record.prompt_tokens, record.cached_tokens = tokens.prompt, tokens.cached
        record.cost_usd = result.entry.cost_of(tokens, record.ts)
        record.overhead_ms = (time.perf_counter() - ex.started) * 1000 - result.upstream_ms
        record.status = 200
        headers = encode_headers({"x-pointsman-request-id": record.id, "x-pointsman-model": result.entry.name,
                                  "x-pointsman-tier": decision.tier, "x-pointsman-reason": decision.reason,
                                  "x-pointsman-cost-usd": f"{record.cost_usd:.8f}",
                                  "x-pointsman-overhead-ms": f"{record.overhead_ms:.3f}",
                                  "x-pointsman-attempts": str(len(result.attempts))})
        payload = orjson.dumps(answer)
        await send_bytes(send, 200, gateway.redactor.body(payload) if gateway.redactor else payload, [*JSON_HEADERS, *headers])
    except GatewayError as error:
        error.message = gateway._redact(error.message) or ""
        record.status, record.error = error.status, error.message
        if error.attempts:
            record.attempts = error.attempts
        await send_error(send, error, [(b"x-pointsman-request-id", record.id.encode())])
    except orjson.JSONEncodeError:  # the provider re-encodes the body: orjson reads 1024 levels, writes 254
        record.status, record.error = 400, "request JSON is nested too deeply to forward"
        await send_error(send, GatewayError(400, "request JSON is nested too deeply to forward (at most 254 levels)",
                                            code="invalid_json"), [(b"x-pointsman-request-id", record.id.encode())])
    except ClientDisconnected:
        record.status, record.error = 499, "client disconnected before the request was read"
    except Exception:  # noqa: BLE001 - the client gets a clean 500 and the row, the log gets the traceback
        log.exception("unexpected error in embeddings request %s", record.id)
        record.status, record.error = 500, "internal error"
        await send_error(send, GatewayError(500, f"internal gateway error (request {record.id})", code="internal_error"))
    finally:
        record.latency_ms = (time.perf_counter() - ex.started) * 1000
        if record.status != 401 and record.status != 0:
            gateway.ledger.record(record)
        for release in ex.after:
            await release()
