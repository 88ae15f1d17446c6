"""Where visibility meets the gateway: built once in `Gateway.__init__`, called once per request from `_chat`'s
`finally` (after the ledger row is recorded), and answering its own paths.

* metrics: read off the finished ledger row (`Metrics.observe`), plus the budget stage's 429s, counted by
  wrapping that stage (a refused request's row does not say which limit refused it);
* traces: when configured, the gateway's stage list, tiers, providers and cascade verifiers are wrapped in
  spans (tracing.py); when not, nothing of OpenTelemetry is imported and nothing is wrapped;
* the JSON request log (request_log.py), opt-in;
* ``GET /metrics`` and the dashboard's paths (dashboard/http.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pointsman import __version__
from pointsman.app.http import Receive, Scope, Send, header_map, require_method, send_bytes
from pointsman.errors import GatewayError
from pointsman.observability import metrics as metrics_module
from pointsman.observability.metrics import CONTENT_TYPE, Metrics
from pointsman.observability.request_log import RequestLog

if TYPE_CHECKING:
    from pointsman.app.pipeline import Exchange
    from pointsman.observability.tracing import Tracing

__all__ = ["PATHS", "Visibility", "handle"]

log = logging.getLogger("pointsman.observability")

METRICS_PATH = "/metrics"
DASHBOARD_PREFIX = "/admin/dashboard"
PATHS = frozenset({METRICS_PATH, DASHBOARD_PREFIX, f"{DASHBOARD_PREFIX}/chart.umd.min.js", f"{DASHBOARD_PREFIX}/dashboard.js",
                   f"{DASHBOARD_PREFIX}/data"})


class Visibility:
    def __init__(self, gateway: Any) -> None:
        config = gateway.config.observability
        self.config = config
        self.pool = gateway.pool
        self.metrics: Metrics | None = None
        if config.metrics:
            tiers = {tier.name for policy in gateway.router.policies.values() for tier in policy.tiers}
            self.metrics = Metrics(gateway.pool.entries, tiers)
        metrics_module.activate(self.metrics)
        self.tracing: Tracing | None = None
        if config.tracing.enabled or config.tracing.otlp_endpoint:
            from pointsman.observability.tracing import Tracing

            self.tracing = Tracing(config.tracing, __version__)
        self.request_log = RequestLog(config.request_log, gateway.redactor) if config.request_log.enabled else None
        self._install(gateway)

    # -- composed once, at start-up ---------------------------------------------------------------------------
    def _install(self, gateway: Any) -> None:
        stages = list(gateway.stages)
        if self.metrics is not None:
            stages = [self._count_rejections(s) if s == gateway.budgets.stage else s for s in stages]
        if self.tracing is not None:
            tracing = self.tracing
            stages = [tracing.wrap_stage(s) for s in stages]
            gateway._chat = tracing.wrap_chat(gateway._chat)
            for name, entry in gateway.pool.entries.items():
                tracing.wrap_provider(name, entry.provider)
            self._trace_policies(gateway.router)
            reload = gateway.router.reload

            def reload_traced() -> list[str]:  # a reload compiles new tiers: trace those too
                reloaded = reload()
                self._trace_policies(gateway.router)
                return reloaded

            gateway.router.reload = reload_traced
        gateway.stages = stages

    def _trace_policies(self, router: Any) -> None:
        assert self.tracing is not None
        for policy in router.policies.values():
            for tier in policy.tiers:
                if not getattr(tier.decide, "_pointsman_traced", False):
                    self.tracing.wrap_tier(tier)
                    _mark(tier.decide)
            cascade = policy.cascade
            if cascade is not None and not getattr(cascade.verify, "_pointsman_traced", False):
                self.tracing.wrap_verifier(cascade)
                _mark(cascade.verify)

    def _count_rejections(self, stage: Callable[[Any], Awaitable[bool]]) -> Callable[[Any], Awaitable[bool]]:
        metrics = self.metrics
        assert metrics is not None

        async def limits(ex: Any) -> bool:
            try:
                return await stage(ex)
            except GatewayError as error:
                if error.status == 429:
                    metrics.budget_rejection(error.param)
                raise

        limits.__name__ = "limits_stage"
        return limits

    # -- once per request ---------------------------------------------------------------------------------------
    def record(self, ex: Exchange) -> None:
        """The request is over and its ledger row recorded: count it, describe its span, log its line. Never raises
        (visibility must not fail a request that was served)."""
        record = ex.record
        confidence = ex.decision.confidence if ex.decision is not None else None
        try:
            if self.metrics is not None:
                self.metrics.observe(record, confidence, cache_miss=ex.ticket is not None)
                if record.attempts and any(a.status != "ok" for a in record.attempts):
                    self.metrics.breakers((a.model, self.pool[a.model].breaker.state) for a in record.attempts
                                          if a.model in self.pool)
            if self.tracing is not None:
                self.tracing.finish(record, confidence)
            if self.request_log is not None:
                self.request_log.write(record, ex.ctx.routing_text if ex.ctx is not None else None, confidence)
        except Exception:  # noqa: BLE001 - logged; the request was answered
            log.exception("visibility for request %s failed", record.id)

    def close(self) -> None:
        if self.tracing is not None:
            self.tracing.shutdown()
        if self.request_log is not None:
            self.request_log.close()

    def scrape(self) -> bytes:
        assert self.metrics is not None
        self.metrics.breakers((name, entry.breaker.state) for name, entry in self.pool.entries.items())
        return self.metrics.exposition()


def _mark(function: Any) -> None:
    try:
        function._pointsman_traced = True
    except AttributeError:  # a bound method of a class we could not wrap
        pass


async def handle(gateway: Any, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer one request to a path of ``PATHS`` (raises GatewayError for the gateway to send)."""
    path = scope["path"]
    require_method(scope, "GET")
    visibility: Visibility = gateway.visibility
    if path == METRICS_PATH:
        if visibility.metrics is None:
            raise GatewayError(404, "metrics are off (observability.metrics: false)", code="metrics_disabled")
        if visibility.config.metrics_need_admin_key:
            gateway._authenticate_admin(header_map(scope))
        await send_bytes(send, 200, visibility.scrape(), [(b"content-type", CONTENT_TYPE.encode())])
        return
    from pointsman.observability.dashboard import http as dashboard

    await dashboard.handle(gateway, scope, send)
