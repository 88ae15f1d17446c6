"""The dashboard's paths, behind the admin key: ``GET /admin/dashboard`` (the page; ``?days=N``, default 30),
``/admin/dashboard/data`` (the same numbers as JSON) and its two static scripts.

A browser cannot send a bearer token when it navigates, so the admin key is also taken as the password of HTTP
Basic authentication (any user name); a 401 asks the browser for it.
"""

from __future__ import annotations

import asyncio
import base64
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

import orjson

from pointsman.app.http import Scope, Send, header_map, send_bytes
from pointsman.errors import GatewayError
from pointsman.observability.dashboard.data import collect
from pointsman.observability.dashboard.page import CSP, render

__all__ = ["handle"]

PREFIX = "/admin/dashboard"
STATIC = {f"{PREFIX}/chart.umd.min.js": "chart.umd.min.js", f"{PREFIX}/dashboard.js": "dashboard.js"}
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                    (b"cache-control", b"no-store")]


@cache
def _static(name: str) -> bytes:
    return resources.files("pointsman.observability.dashboard").joinpath("static", name).read_bytes()


def _as_bearer(headers: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """Basic credentials (user:admin-key) read as the bearer token the admin check expects."""
    value = headers.get(b"authorization", b"")
    scheme, _, token = value.partition(b" ")
    if scheme.lower() == b"basic":
        try:
            password = base64.b64decode(token.strip(), validate=True).partition(b":")[2]
        except ValueError:
            password = b""
        headers = {**headers, b"authorization": b"Bearer " + password}
    return headers


def _authenticate(gateway: Any, scope: Scope) -> None:
    try:
        gateway._authenticate_admin(_as_bearer(header_map(scope)))
    except GatewayError as error:
        if error.status == 401 and gateway.admin_key:  # ask the browser for the key (any user name)
            error.headers = {**error.headers, "www-authenticate": 'Basic realm="pointsman admin", charset="UTF-8"'}
        raise


def _days(scope: Scope) -> int:
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    raw = query.get("days", ["30"])[-1]
    if not raw.isdigit() or not 1 <= int(raw) <= 3650:
        raise GatewayError(400, "days must be a whole number within 1..3650", code="invalid_request", param="days")
    return int(raw)


async def handle(gateway: Any, scope: Scope, send: Send) -> None:
    path = scope["path"]
    _authenticate(gateway, scope)
    if not gateway.config.observability.dashboard:
        raise GatewayError(404, "the dashboard is off (observability.dashboard: false)", code="dashboard_disabled")
    if path in STATIC:
        await send_bytes(send, 200, _static(STATIC[path]), [(b"content-type", b"text/javascript; charset=utf-8"),
                                                           (b"x-content-type-options", b"nosniff"),
                                                           (b"cache-control", b"private, max-age=3600")])
        return
    days = _days(scope)
    data = await asyncio.to_thread(collect, gateway, days)
    if path == f"{PREFIX}/data":
        await send_bytes(send, 200, orjson.dumps(data), [(b"content-type", b"application/json"), *SECURITY_HEADERS])
        return
    await send_bytes(send, 200, render(data, PREFIX), [(b"content-type", b"text/html; charset=utf-8"),
                                                      (b"content-security-policy", CSP.encode()), *SECURITY_HEADERS])
