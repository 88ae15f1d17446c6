"""The learning loop's HTTP side (README, "Learning from your traffic"):

* ``POST /v1/feedback`` (client key): ``{"request_id": "req_...", "score": 0..1}`` or ``{"request_id": ...,
  "verdict": "accept" | "reject"}``, with an optional ``comment``. Only the key that made the request may
  score it (another key's request is unknown: 404). Idempotent per (request, key): sending again replaces
  the score (``"created": false``). Answered with 200 only after the row is committed. A reject (or a score
  below 0.5) also withdraws the answer from the semantic cache.
* ``GET /admin/drift`` (admin key): recent traffic against the deployed router's training prompts
  (learning/drift.py); ``?days=N`` (default 7).

``handle`` is called by the gateway's path routing for ``PATHS``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Literal
from urllib.parse import parse_qs

import msgspec

from pointsman.app.admin import read_struct
from pointsman.app.caching import tenant_of
from pointsman.app.http import Receive, Scope, Send, header_map, require_method, send_json
from pointsman.errors import GatewayError

log = logging.getLogger("pointsman.learning")

__all__ = ["PATHS", "handle"]

PATHS = {"/v1/feedback": "POST", "/admin/drift": "GET"}
MAX_COMMENT_CHARS = 2000
ACCEPT_BELOW = 0.5  # a score under this is a reject, for the cache


class FeedbackBody(msgspec.Struct, forbid_unknown_fields=True):
    request_id: str
    score: float | None = None
    verdict: Literal["accept", "reject"] | None = None
    comment: str | None = None


def _score(body: FeedbackBody) -> float:
    if (body.score is None) == (body.verdict is None):
        raise GatewayError(400, "give either score (0..1) or verdict (accept or reject)", code="invalid_request",
                           param="score")
    if body.score is not None:
        if not 0.0 <= body.score <= 1.0:  # NaN fails too
            raise GatewayError(400, "score must be a number within 0..1", code="invalid_request", param="score")
        return float(body.score)
    return 1.0 if body.verdict == "accept" else 0.0


async def handle(gateway: Any, scope: Scope, receive: Receive, send: Send) -> None:
    path = scope["path"]
    require_method(scope, PATHS[path])
    headers = header_map(scope)
    if path == "/v1/feedback":
        key_id = gateway._authenticate(headers)
        body = await read_struct(gateway, receive, headers, FeedbackBody)
        await _feedback(gateway, send, headers, key_id, body)
    else:
        gateway._authenticate_admin(headers)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        try:
            days = float(query.get("days", ["7"])[0])
        except ValueError:
            days = float("nan")
        if not 0 < days <= 3650:
            raise GatewayError(400, "days must be a number within 0..3650", code="invalid_request", param="days")
        report = await asyncio.to_thread(gateway.drift, days)
        await send_json(send, 200, {"object": "drift", "days": days, **report.as_dict()})


async def _feedback(gateway: Any, send: Send, headers: dict[bytes, bytes], key_id: str | None, body: FeedbackBody) -> None:
    score = _score(body)
    if body.comment is not None and len(body.comment) > MAX_COMMENT_CHARS:
        raise GatewayError(400, f"comment must be at most {MAX_COMMENT_CHARS} characters", code="invalid_request",
                           param="comment")
    store = gateway.outcomes
    owner = await _owner(gateway, body.request_id)
    if owner is None or owner.key_id != key_id:  # another key's request is as unknown as a made-up id
        raise GatewayError(404, f"no request {body.request_id} made with this key (ids are in the "
                           "x-pointsman-request-id header)", code="request_not_found", param="request_id")
    if owner.status != 200:
        raise GatewayError(400, f"request {body.request_id} was not answered (status {owner.status}): there is no "
                           "answer to score", code="request_not_answered", param="request_id")
    try:
        created = await asyncio.to_thread(store.add_feedback, body.request_id, key_id, score, body.comment)
    except Exception as exc:  # noqa: BLE001 - the store is locked or gone: the client must know it was not kept
        log.warning("feedback on %s not stored: %s", body.request_id, exc)
        raise GatewayError(503, f"the feedback store is unavailable ({type(exc).__name__}); try again shortly",
                           code="feedback_unavailable", headers={"retry-after": "1"}) from None
    if score < ACCEPT_BELOW and gateway.caching is not None:
        team = headers.get(b"x-pointsman-team")
        tenant = tenant_of(key_id, team.decode("latin-1")[:128] if team is not None else None)
        try:
            await gateway.caching.cache.feedback(None, False, request_id=body.request_id, tenant=tenant)
        except Exception as exc:  # noqa: BLE001 - the feedback is stored; the cache may keep the answer a while
            log.warning("cache reject for %s failed: %s", body.request_id, exc)
    await send_json(send, 200, {"object": "feedback", "request_id": body.request_id, "model": owner.model,
                                "score": score, "created": created})


async def _owner(gateway: Any, request_id: str) -> Any:
    """The request's ledger row; a request answered a moment ago may still be in a ledger buffer (this
    worker's is flushed; another worker's within its flush interval), so look again for a little while."""
    store = gateway.outcomes
    owner = await asyncio.to_thread(store.owner, request_id)
    if owner is not None:
        return owner
    await asyncio.to_thread(gateway.ledger.flush)
    if request_id.startswith(gateway.id_prefix):  # this worker's: flushed now, so it is there or it is not
        return await asyncio.to_thread(store.owner, request_id)
    deadline = time.monotonic() + 2 * gateway.server.ledger_flush_interval_s + 0.1
    while True:
        owner = await asyncio.to_thread(store.owner, request_id)
        if owner is not None or time.monotonic() > deadline:
            return owner
        await asyncio.sleep(0.05)
