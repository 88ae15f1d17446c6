"""The admin API for virtual keys, budgets and rate limits (admin key; README, "Virtual keys, budgets and limits"):

* ``POST /admin/keys`` ``{"name", "user", "team", "cohort", "allow_cohort_header", "expires_at", "limits": {...}}``:
  201 with the key's secret, shown this once; ``GET /admin/keys`` (``?include_revoked=1``) lists keys, never secrets;
* ``POST /admin/keys/{id}/rotate`` ``{"grace_s": 0}``: a new secret for the same key; ``DELETE /admin/keys/{id}``
  revokes it (every replica refuses it within ``limits.keys_refresh_s``);
* ``POST /admin/budgets`` ``{"scope": "team", "name": "ops", "model": null, "usd_per_day": 10, ...}`` sets (replaces,
  as ``pointsman budgets set`` does) the limit of that scope, name and model: fields left out are unlimited, at least
  one is needed; the reply shows every limit now in force and, under ``replaced``, the one it replaced (or null),
  and ``warnings`` when it names a model this gateway's pool does not hold;
  ``GET /admin/budgets`` lists limits with their counters' current windows; ``DELETE
  /admin/budgets?scope=team&name=ops[&model=m]`` removes one; ``POST /admin/budgets/reconcile`` sets the USD
  counters from the ledger.

Writes go to the ledger's database in a worker thread, then into this replica's copy at once.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any, cast
from urllib.parse import parse_qs

import msgspec

from pointsman.accounting.keys import METRICS, Limit, Scope
from pointsman.app.admin import read_struct
from pointsman.app.http import Receive, Scope as AsgiScope, Send, header_map, send_json
from pointsman.errors import GatewayError

__all__ = ["PREFIXES", "handle"]

PREFIXES = ("/admin/keys", "/admin/budgets")
_KEY_PATH = re.compile(r"/admin/keys/([^/]+)(/rotate)?")  # any id: a malformed one is an unknown key, not a bad route
_KEY_ID = re.compile(r"vk_[0-9a-f]{12}")
_NO_LIMIT = "give at least one of " + ", ".join(METRICS) + " (DELETE /admin/budgets removes a limit)"


class LimitValues(msgspec.Struct, forbid_unknown_fields=True):
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    usd_per_day: float | None = None
    usd_per_month: float | None = None


class CreateKey(msgspec.Struct, forbid_unknown_fields=True):
    name: str | None = None
    user: str | None = None
    team: str | None = None
    cohort: str | None = None
    allow_cohort_header: bool = False
    expires_at: float | None = None  # unix seconds
    limits: LimitValues | None = None  # on this key


class Rotate(msgspec.Struct, forbid_unknown_fields=True):
    grace_s: float = 0.0  # how long the old secret keeps working

    def __post_init__(self) -> None:
        if not 0 <= self.grace_s <= 30 * 86400:
            raise ValueError("grace_s must be within 0..2592000 (30 days)")


class SetLimit(msgspec.Struct, forbid_unknown_fields=True):
    scope: Scope
    name: str  # the key id, team, cohort or model
    model: str | None = None  # only requests routed to this model; None: every model
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    usd_per_day: float | None = None
    usd_per_month: float | None = None


def _limit(scope: str, name: str, model: str | None, values: LimitValues | SetLimit) -> Limit:
    return Limit(cast(Scope, scope), name, model or "", *(getattr(values, m) for m in METRICS))


def _has_limit(values: LimitValues | SetLimit) -> bool:
    return any(getattr(values, m) is not None for m in METRICS)


def _replace_limit(store: Any, limit: Limit) -> tuple[Limit, Limit | None]:
    """The limit set, and the one it replaced (None: there was none)."""
    previous = next((lim for lim in store.list_limits() if lim.ident == limit.ident), None)
    return store.set_limit(limit), previous


async def _blocking(call: Any, *args: Any) -> Any:
    try:
        return await asyncio.to_thread(call, *args)
    except ValueError as exc:
        raise GatewayError(400, str(exc), code="invalid_request") from None


async def handle(gateway: Any, scope: AsgiScope, receive: Receive, send: Send) -> None:
    gateway._authenticate_admin(header_map(scope))  # before anything else: no admin key, no word on what exists
    path, method = scope["path"].rstrip("/") or "/", scope["method"]
    keys, budgets = gateway.keys, gateway.budgets
    store = keys.store
    if store is None:
        raise GatewayError(503, "the key store is not open yet", code="starting", headers={"retry-after": "1"})
    headers = header_map(scope)
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if path == "/admin/keys":
        if method == "GET":
            everything = query.get("include_revoked") == ["1"]
            await send_json(send, 200, {"object": "list", "data": [
                k.public() for k in keys.keys() if everything or k.revoked is None]})
        elif method == "POST":
            body = await read_struct(gateway, receive, headers, CreateKey)
            if body.expires_at is not None and body.expires_at <= time.time():
                raise GatewayError(400, "expires_at is in the past", code="invalid_request", param="expires_at")
            if body.limits is not None and not _has_limit(body.limits):
                raise GatewayError(400, f"limits: {_NO_LIMIT}", code="invalid_request", param="limits")
            key, secret = await _blocking(lambda: store.create_key(
                name=body.name, user=body.user, team=body.team, cohort=body.cohort,
                allow_cohort_header=body.allow_cohort_header, expires=body.expires_at))
            limit = None
            if body.limits is not None:
                limit = await _blocking(store.set_limit, _limit("key", key.id, None, body.limits))
            await keys.refresh()
            await send_json(send, 201, {**key.public(), "key": secret, "limits": limit.public() if limit else None})
        else:
            _not_allowed(method, path, "GET, POST")
        return
    found = _KEY_PATH.fullmatch(path)
    if found:
        key_id, rotate = found.group(1), found.group(2)
        if rotate and method != "POST":
            _not_allowed(method, path, "POST")
        if not rotate and method not in ("GET", "DELETE"):
            _not_allowed(method, path, "GET, DELETE")
        if not _KEY_ID.fullmatch(key_id):  # no such key can exist: answered like any unknown one, the store unasked
            raise GatewayError(404, f"no active key {key_id}" if rotate or method == "DELETE" else f"no key {key_id}",
                               code="key_not_found")
        if rotate:
            body = await read_struct(gateway, receive, headers, Rotate)
            rotated = await _blocking(store.rotate_key, key_id, body.grace_s)
            if rotated is None:
                raise GatewayError(404, f"no active key {key_id}", code="key_not_found")
            await keys.refresh()
            await send_json(send, 200, {**rotated[0].public(), "key": rotated[1]})
        elif method == "DELETE":
            revoked = await _blocking(store.revoke_key, key_id)
            if revoked is None:
                raise GatewayError(404, f"no active key {key_id}", code="key_not_found")
            await keys.refresh()
            await send_json(send, 200, revoked.public())
        else:  # GET
            key = keys.get(key_id)
            if key is None:
                raise GatewayError(404, f"no key {key_id}", code="key_not_found")
            await send_json(send, 200, key.public())
        return
    if path == "/admin/budgets":
        if method == "GET":
            limits, unavailable = keys.all_limits(), None
            try:
                async with asyncio.timeout(budgets.config.store_timeout_s):
                    data = await budgets.usage(limits)
            except Exception as exc:  # noqa: BLE001 - Redis down: the limits (from the database) without their use
                data, unavailable = [{**lim.public(), "used": None} for lim in limits], f"{type(exc).__name__}: {exc}"
            await send_json(send, 200, {"object": "list", "data": data, "store": budgets.config.store.split("://")[0],
                                        "store_unavailable": unavailable, "store_errors": budgets.store_errors,
                                        "refused": budgets.refused})
        elif method == "POST":
            body = await read_struct(gateway, receive, headers, SetLimit)
            if not body.name:
                raise GatewayError(400, "name: the key id, team, cohort or model the limit is on", code="invalid_request",
                                   param="name")
            if not _has_limit(body):
                raise GatewayError(400, _NO_LIMIT, code="invalid_request")
            limit, previous = await _blocking(_replace_limit, store, _limit(body.scope, body.name, body.model, body))
            await keys.refresh()
            # set all the same (another replica's pool may hold the model), but a typo should not pass in silence
            unknown = [m for m in ((body.name,) if body.scope == "model" else ()) + ((body.model,) if body.model else ())
                       if m not in gateway.pool]
            warnings = [f"model {m!r} is not in this gateway's pool: the limit applies only to requests routed to a "
                        "model of that name" for m in unknown]
            await send_json(send, 200, {**limit.public(), "replaced": previous.public() if previous else None,
                                        "warnings": warnings})
        elif method == "DELETE":
            scope_name, name = query.get("scope", [""])[0], query.get("name", [""])[0]
            if not scope_name or not name:
                raise GatewayError(400, "give ?scope=key|team|cohort|model&name=...[&model=...]", code="invalid_request")
            removed = await _blocking(store.remove_limit, scope_name, name, query.get("model", [""])[0])
            if not removed:
                raise GatewayError(404, f"no limit on {scope_name} {name!r}", code="limit_not_found")
            await keys.refresh()
            await send_json(send, 200, {"object": "limit.removed", "scope": scope_name, "name": name})
        else:
            _not_allowed(method, path, "GET, POST, DELETE")
        return
    if path == "/admin/budgets/reconcile":
        if method != "POST":
            _not_allowed(method, path, "POST")
        await asyncio.to_thread(gateway.ledger.flush)  # this replica's own rows first
        await send_json(send, 200, {"object": "list", "data": await budgets.reconcile(keys.all_limits())})
        return
    raise GatewayError(404, f"no route for {method} {path}", code="not_found")


def _not_allowed(method: str, path: str, allowed: str) -> None:
    raise GatewayError(405, f"{method} is not allowed on {path}; use {allowed}", code="method_not_allowed",
                       headers={"allow": allowed})
