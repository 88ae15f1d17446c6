"""`POST /v1/route`: the routing decision for a chat request, without calling any model.

The body is a chat-completions request, as `/v1/chat/completions` takes it; the answer is what the gateway would
do with it: the model and its fallbacks, the tier and reason, each eligible model's predicted quality (when a tier
predicts) and estimated cost, the cascade plan, and the cache's verdict (would it answer from the cache). So a team
that keeps LiteLLM or Envoy as its gateway can use Pointsman as the routing brain (README, "Route-only").

The same stages run as for a chat request up to the decision (authenticate, read and validate, route), so the
decision is the one a chat request would get, session stickiness included (a decision is remembered for its
session as a served one is). The cache is only looked at, not counted nor sampled. No ledger row is written unless
deciding cost something (tier 3's judge): then a row with tier `route-only` holds that cost.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from pointsman.app.caching import tenant_of
from pointsman.app.http import Receive, Scope, Send, encode_headers, send_error, require_method, send_json
from pointsman.app.pipeline import Exchange
from pointsman.core import RouteContext, RouteDecision
from pointsman.errors import GatewayError

__all__ = ["PATHS", "handle", "DEFAULT_OUTPUT_TOKENS"]

PATHS = ("/v1/route", "/route")
DEFAULT_OUTPUT_TOKENS = 256  # the answer length costs are estimated at when the request sets no max_tokens


async def cache_verdict(gateway: Any, ex: Exchange) -> dict[str, Any]:
    """What the cache would do with this request: a hit (exact or semantic, and whose answer) or a miss."""
    caching = gateway.caching
    if caching is None:
        return {"verdict": "disabled"}
    assert ex.raw is not None and ex.ctx is not None
    if not caching.may_cache(ex.raw):
        return {"verdict": "not_cacheable", "why": "sampled request (temperature above 0)"}
    cache = caching.cache
    keys = cache.keys(ex.ctx.body, tenant=tenant_of(ex.record.key_id, ex.record.team), route=ex.request.model)
    if not keys.cacheable:
        return {"verdict": "not_cacheable"}
    hit = await cache.find_exact(keys.exact_key)
    embedder = gateway.cache_embedder
    if hit is None and embedder is not None and keys.query_text and cache.may_hit_semantic(keys.namespace):
        embedding = (await ex.ctx.embedding(embedder, keys.query_text))[0]
        hit = await cache.find_semantic(keys.namespace, embedding, keys.query_text)
    if hit is None:
        return {"verdict": "miss"}
    return {"verdict": "hit", "kind": hit.kind, "model": hit.model, "similarity": round(hit.similarity, 4),
            "p_correct": None if hit.p_correct is None else round(hit.p_correct, 4)}


def candidates(gateway: Any, ctx: RouteContext, decision: RouteDecision) -> list[dict[str, Any]]:
    """Each eligible model with its predicted quality (when the deciding tier predicted) and estimated cost."""
    body = ctx.body
    output = int(body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_OUTPUT_TOKENS)
    prompt = ctx.estimated_tokens - int(body.get("max_completion_tokens") or body.get("max_tokens") or 0)
    scores = decision.scores or {}
    names = gateway.pool.eligible(ctx) if decision.tier != "direct" else [decision.model]
    return [{"model": name, "predicted_quality": scores.get(name),
             "estimated_cost_usd": round(gateway.pool[name].cost(prompt, output), 10)} for name in names]


def cascade_plan(decision: RouteDecision) -> dict[str, Any] | None:
    plan = decision.cascade
    if plan is None:
        return None
    return {"ladder": list(plan.ladder), "predicted_quality": [round(q, 4) for q in plan.quality],
            "relative_cost": [round(c, 4) for c in plan.cost], "threshold": plan.threshold, "lambda": plan.lam,
            "describe": plan.describe(), "reason": plan.reason}


async def handle(gateway: Any, scope: Scope, receive: Receive, send: Send) -> None:
    require_method(scope, "POST")
    ex = gateway.new_exchange(scope, receive, send)
    record = ex.record
    try:
        await gateway._authenticate_stage(ex)
        await gateway._read_stage(ex)
        assert ex.ctx is not None
        verdict = await cache_verdict(gateway, ex)
        ex.decision = decision = await gateway.router.route(ex.request.model, ex.ctx)
        overhead_ms = (time.perf_counter() - ex.started) * 1000
        answer = {
            "object": "route.decision", "request_id": record.id, "model": decision.model, "tier": decision.tier,
            "reason": decision.reason, "fallbacks": decision.fallbacks, "confidence": decision.confidence,
            "candidates": candidates(gateway, ex.ctx, decision), "cascade": cascade_plan(decision), "cache": verdict,
            "session": record.session, "routing_cost_usd": sum(a.cost_usd or 0.0 for a in decision.calls),
            "overhead_ms": round(overhead_ms, 3)}
        record.status = 200
        await send_json(send, 200, answer, encode_headers({"x-pointsman-request-id": record.id,
                                                           "x-pointsman-model": decision.model,
                                                           "x-pointsman-tier": decision.tier,
                                                           "x-pointsman-reason": decision.reason}))
    except GatewayError as error:
        record.status = error.status
        await send_error(send, error, [(b"x-pointsman-request-id", record.id.encode())])
    except msgspec.ValidationError as error:  # the chat endpoint's message, as a 400
        await send_error(send, GatewayError(400, f"invalid request: {error}", code="invalid_request"))
    finally:
        calls = ex.decision.calls if ex.decision is not None else []
        if calls:  # deciding cost something (the judge): that spend is in the ledger
            record.tier, record.reason = "route-only", ex.decision.reason if ex.decision else None
            record.latency_ms = (time.perf_counter() - ex.started) * 1000
            record.attempts = list(calls)
            record.prompt_tokens = sum(a.prompt_tokens or 0 for a in calls)
            record.completion_tokens = sum(a.completion_tokens or 0 for a in calls)
            record.cost_usd = sum(a.cost_usd or 0.0 for a in calls)
            gateway.ledger.record(record)
