"""The spend reports over HTTP (admin key): ``GET /admin/spend`` (``group_by=cohort,model``),
``/admin/spend/hidden`` (``group=cohort|team|key``, ``factor``, ``min_requests``, ``strong``),
``/admin/spend/savings`` (``baseline=<model>``, ``group``), ``/admin/spend/contracts`` and ``/admin/spend/sessions``
(``limit``, ``session``: per-session cost, issue 22); each takes ``since`` and
``until`` (days, both included). Answers are the JSON of accounting/reports.py.

``handle`` is called by the gateway's path routing for the paths in ``PATHS``.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs

from pointsman.accounting.reports import Pricing, SpendReader, run_report
from pointsman.app.http import Receive, Scope, Send, header_map, require_method, send_json
from pointsman.errors import GatewayError

__all__ = ["PATHS", "handle"]

PATHS = {"/admin/spend": "spend", "/admin/spend/hidden": "hidden", "/admin/spend/savings": "savings",
         "/admin/spend/contracts": "contracts", "/admin/spend/sessions": "sessions"}


def _report(gateway: Any, kind: str, options: dict[str, str]) -> dict[str, Any]:
    gateway.ledger.flush()  # this replica's last rows count too
    pricing = Pricing(gateway.config.models, {name: entry.price for name, entry in gateway.pool.entries.items()})
    with SpendReader(gateway.server.ledger_url) as reader:
        return run_report(reader, kind, options, pricing)


async def handle(gateway: Any, scope: Scope, receive: Receive, send: Send) -> None:
    path = scope["path"]
    require_method(scope, "GET")
    gateway._authenticate_admin(header_map(scope))
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    options = {name: values[-1] for name, values in query.items()}
    try:
        report = await asyncio.to_thread(_report, gateway, PATHS[path], options)
    except ValueError as exc:
        raise GatewayError(400, str(exc), code="invalid_request") from None
    await send_json(send, 200, report)
