"""The cache's HTTP controls (README, "Cache"):

* ``POST /v1/cache/feedback`` (client key): ``{"request_id": "req_...", "verdict": "reject"}`` or
  ``{"entry_id": "<x-pointsman-cache-entry>", "verdict": "reject" | "accept"}``. A reject deletes the entry
  (exact hit, or the fresh answer a request stored) or demotes it (semantic hit: it then needs a closer match;
  deleted after ``max_rejects``). Scoped to the caller's tenant (key + x-pointsman-team): another tenant's
  entry is unknown (404), like a gone one.
* ``POST /admin/cache/invalidate`` (admin key): ``{"entry_id": ...}``, ``{"all": true}``, or filters
  ``key_id`` (the client key's id, as in the ledger), ``team``, ``model`` (all given must match); returns
  how many entries were deleted. With the Redis store every replica drops them (through the stream).
* ``GET /admin/cache/metrics`` (admin key): this replica's counters (hits, misses, rejected candidates by
  check, feedback, stored/not stored) and the store's entries and bytes; with ``cache.verify``, the sampled
  labels, verification spend, and per tenant (the busiest) the threshold and the estimated wrong reuse.

``handle`` is called by the gateway's path routing for the paths in ``PATHS``; it uses the gateway's
cache stage and its two auth helpers, nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, Literal

import msgspec

from pointsman.app.caching import tenant_of
from pointsman.app.http import Receive, Scope, Send, header_map, parse_json_object, read_body, require_method, send_json
from pointsman.errors import GatewayError

log = logging.getLogger("pointsman.cache")

__all__ = ["PATHS", "handle", "read_struct", "MAX_ADMIN_BODY_BYTES"]

PATHS = {"/v1/cache/feedback": "POST", "/admin/cache/invalidate": "POST", "/admin/cache/metrics": "GET"}
MAX_ADMIN_BODY_BYTES = 64 * 1024
MAX_TAG_LENGTH = 128  # as the chat path reads x-pointsman-team (server.MAX_TAG_LENGTH)
_ENTRY_ID = re.compile(r"[0-9a-fA-F]{1,16}")


class FeedbackBody(msgspec.Struct, forbid_unknown_fields=True):
    verdict: Literal["reject", "accept"]
    request_id: str | None = None
    entry_id: str | None = None


class InvalidateBody(msgspec.Struct, forbid_unknown_fields=True):
    entry_id: str | None = None
    key_id: str | None = None
    team: str | None = None
    model: str | None = None
    all: bool = False


def _entry_id(value: str) -> int:
    if not _ENTRY_ID.fullmatch(value) or not 0 < int(value, 16) < 2**63:
        raise GatewayError(400, "entry_id must be the hexadecimal id of the x-pointsman-cache-entry header",
                           code="invalid_request", param="entry_id")
    return int(value, 16)


async def read_struct(gateway: Any, receive: Receive, headers: dict[bytes, bytes], struct: type) -> Any:
    """A small JSON body read within the gateway's time limit and converted to `struct` (400 naming the field)."""
    try:
        async with asyncio.timeout(gateway.body_timeout_s):
            raw = await read_body(receive, headers, MAX_ADMIN_BODY_BYTES)
    except TimeoutError:
        raise GatewayError(408, f"the request body did not arrive within {gateway.body_timeout_s:g} s",
                           code="request_timeout", type="invalid_request_error",
                           headers={"connection": "close"}) from None
    data = parse_json_object(raw)
    try:
        return msgspec.convert(data, struct)
    except msgspec.ValidationError as exc:
        where = re.search(r"at `\$\.(\w+)`|field `(\w+)`", str(exc))
        raise GatewayError(400, f"invalid request: {exc}", code="invalid_request",
                           param=(where.group(1) or where.group(2)) if where else None) from None


async def handle(gateway: Any, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer one request to a path of ``PATHS`` (raises GatewayError for the gateway to send)."""
    path = scope["path"]
    require_method(scope, PATHS[path])
    headers = header_map(scope)
    key_id = None
    if path == "/v1/cache/feedback":
        key_id = gateway._authenticate(headers)
    else:
        gateway._authenticate_admin(headers)
    stage = gateway.caching
    if stage is None:
        raise GatewayError(404, "the cache is disabled (server.cache.enabled: false)", code="cache_disabled")
    try:
        await _serve(gateway, stage, path, receive, send, headers, key_id)
    except GatewayError:
        raise
    except Exception as exc:  # noqa: BLE001 - the store (Redis) is down or hangs: an OpenAI-shaped 503, not a 500
        log.warning("cache store unavailable for %s: %s", path, exc)
        raise GatewayError(503, f"the cache store is unavailable ({type(exc).__name__}); try again shortly",
                           code="cache_unavailable", headers={"retry-after": "5"}) from None


async def _serve(gateway: Any, stage: Any, path: str, receive: Receive, send: Send, headers: dict[bytes, bytes],
                 key_id: str | None) -> None:
    cache = stage.cache
    if path == "/admin/cache/metrics":
        verifier = stage.verifier  # verification sampling and the online bound (None when cache.verify.share is 0)
        await send_json(send, 200, {"object": "cache.metrics", "store": stage.config.store.split("://")[0],
                                    **cache.stats(), "store_errors": stage.store_errors,
                                    "verify": verifier.snapshot() if verifier is not None else None})
    elif path == "/v1/cache/feedback":
        body = await read_struct(gateway, receive, headers, FeedbackBody)
        if (body.request_id is None) == (body.entry_id is None):
            raise GatewayError(400, "give either request_id (the x-pointsman-request-id of the answer) or entry_id "
                               "(its x-pointsman-cache-entry)", code="invalid_request", param="request_id")
        team = headers.get(b"x-pointsman-team")
        tenant = tenant_of(key_id, team.decode("latin-1")[:MAX_TAG_LENGTH] if team is not None else None)
        entry_id = _entry_id(body.entry_id) if body.entry_id is not None else None
        done = await cache.feedback(entry_id, body.verdict == "accept", request_id=body.request_id, tenant=tenant)
        if done is None:
            named = f"request {body.request_id}" if body.request_id is not None else f"entry {body.entry_id}"
            raise GatewayError(404, f"no cached answer for {named}: unknown, expired, already rejected, or not "
                               "this key's and team's", code="cache_entry_not_found",
                               param="request_id" if body.request_id is not None else "entry_id")
        eid, action = done
        await send_json(send, 200, {"object": "cache.feedback", "entry_id": f"{eid:x}", "verdict": body.verdict,
                                    "action": action})
    else:  # /admin/cache/invalidate
        body = await read_struct(gateway, receive, headers, InvalidateBody)
        filters = {"tenant_key": body.key_id, "team": body.team, "model": body.model}
        given = [name for name, value in (("entry_id", body.entry_id), ("key_id", body.key_id), ("team", body.team),
                                          ("model", body.model)) if value is not None]
        if body.all and given:
            raise GatewayError(400, f"`all` deletes everything: do not combine it with {', '.join(given)}",
                               code="invalid_request", param="all")
        if body.entry_id is not None and len(given) > 1:
            raise GatewayError(400, "entry_id names one entry: do not combine it with filters",
                               code="invalid_request", param="entry_id")
        if body.entry_id is not None:
            n = await cache.invalidate(entry_id=_entry_id(body.entry_id))
            if n == 0:
                raise GatewayError(404, f"no cache entry {body.entry_id}", code="cache_entry_not_found", param="entry_id")
        elif given:
            n = await cache.invalidate(**filters)
        elif body.all:
            n = await cache.invalidate(all=True)
        else:
            raise GatewayError(400, "say what to invalidate: entry_id, any of key_id, team and model, or all: true",
                               code="invalid_request")
        await send_json(send, 200, {"object": "cache.invalidation", "invalidated": n})
