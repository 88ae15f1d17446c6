"""Prometheus metrics, read off each request's ledger row once it is recorded (hooks.py): what a stage decided
is on the row, so no stage carries metric code of its own.

Names follow OpenTelemetry's GenAI semantic conventions where one exists, as an OTLP-to-Prometheus bridge
writes them (dots to underscores, the unit appended): ``gen_ai_server_request_duration_seconds``,
``gen_ai_server_time_to_first_token_seconds``, ``gen_ai_client_operation_duration_seconds`` (each upstream
attempt: the gateway is the upstream's client), ``gen_ai_client_token_usage``; the rest are ``pointsman_*``.

Every label comes from a closed set: pool model names (anything else is ``other``), the configured tiers,
HTTP statuses, attempt statuses and verdicts the code writes. No key, user, team or cohort label: per-key
spend is the ledger's (LiteLLM's per-key labels grew without bound).

With ``serve --workers N`` the CLI sets PROMETHEUS_MULTIPROC_DIR before anything imports prometheus_client:
each worker then writes its values to memory-mapped files there and ``/metrics``, whichever worker answers,
adds them all up (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from pointsman.ledger.base import LedgerRecord
from pointsman.ledger.rollup import escalated
from pointsman.observability.metrics_env import MULTIPROC_ENV

__all__ = ["CONTENT_TYPE", "MULTIPROC_ENV", "Metrics", "count_guard_action", "multiprocess"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
OTHER = "other"
# the tiers every gateway can report, besides those its policies name (routing/tiers.py, learning/, cache)
BUILTIN_TIERS = ("rules", "sticky", "semantic", "judge", "default", "direct", "cache", "shadow", "shadow-judge")
# attempt statuses the dispatcher and providers write (ProviderError kinds); any other is `other`
ATTEMPT_STATUSES = ("ok", "timeout", "rate_limited", "cooldown", "cancelled", "window_too_small", "upstream_error",
                    "connection_error", "connect_error", "bad_upstream_response", "incomplete_stream",
                    "context_length_exceeded", "upstream_auth_error", "upstream_model_not_found", "invalid_request_error",
                    "unsupported_by_model", "local_model_unavailable")
VERDICTS = ("accepted", "escalated", "final")
BREAKER_STATES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}
MAX_GUARD_SERIES = 64  # distinct (guard, action) pairs kept; past that they count as other/other

# OpenTelemetry's advised bucket boundaries for these instruments (GenAI semantic conventions)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class Metrics:
    """The gateway's instruments. Single process: in a registry of their own (two gateways in one test process
    do not add up). Multiprocess: in the shared directory, read back by :meth:`exposition`."""

    def __init__(self, models: Iterable[str], tiers: Iterable[str] = ()) -> None:
        self.models = frozenset(models)
        self.tiers = frozenset((*BUILTIN_TIERS, *tiers))
        self.shared = multiprocess()
        self.registry = None if self.shared else CollectorRegistry(auto_describe=False)
        registry: Any = self.registry
        self._children: dict[tuple[Any, ...], Any] = {}
        self._guard_pairs: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        def histogram(name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, labels, buckets=buckets, registry=registry)

        self.requests = counter("pointsman_requests", "chat requests answered or refused, by HTTP status and tier",
                                ("status", "tier"))
        self.duration = histogram("gen_ai_server_request_duration_seconds", "whole chat request, arrival to last byte",
                                  ("gen_ai_operation_name", "gen_ai_response_model", "status"), DURATION_BUCKETS)
        self.overhead = histogram("pointsman_added_latency_seconds", "the gateway's own time in an answered request "
                                  "(latency less the upstream's)", ("tier",), OVERHEAD_BUCKETS)
        self.ttft = histogram("gen_ai_server_time_to_first_token_seconds", "streamed requests: arrival to first chunk",
                              ("gen_ai_operation_name", "gen_ai_response_model"), TTFT_BUCKETS)
        self.upstream = histogram("gen_ai_client_operation_duration_seconds", "each upstream attempt (retries, fallbacks, "
                                  "judge and cascade calls included)", ("gen_ai_operation_name", "gen_ai_request_model",
                                                                         "status"), DURATION_BUCKETS)
        self.tokens = histogram("gen_ai_client_token_usage", "tokens per request, as the ledger row counts them",
                                ("gen_ai_operation_name", "gen_ai_token_type", "gen_ai_response_model"), TOKEN_BUCKETS)
        self.cost = counter("pointsman_cost_usd", "spend in USD, as the ledger row prices it", ("gen_ai_response_model",))
        self.cache = counter("pointsman_cache_lookups", "cacheable requests: a hit by kind (exact, semantic) or a miss",
                             ("result",))
        self.decisions = counter("pointsman_route_decisions", "routed requests by deciding tier and chosen model",
                                 ("tier", "gen_ai_response_model"))
        self.escalations = counter("pointsman_cascade_escalations", "cascades that called a stronger model",
                                   ("gen_ai_response_model",))
        self.verdicts = counter("pointsman_verifier_verdicts", "cascade verifier verdicts on an answer", ("verdict", "defect"))
        self.guards = counter("pointsman_guard_actions", "what the guards did (count_guard_action)", ("guard", "action"))
        self.budget = counter("pointsman_budget_rejections", "requests refused by a budget or rate limit (429)", ("limit",))
        self.confidence = histogram("pointsman_router_confidence", "the semantic tier's confidence in its choice",
                                    ("tier",), CONFIDENCE_BUCKETS)
        self.breaker = Gauge("pointsman_breaker_state", "per model: 0 closed, 1 half-open, 2 open (the worst worker's)",
                             ("gen_ai_request_model",), registry=registry, multiprocess_mode="max")
        self.recorded = 0

    # -- labels from closed sets ----------------------------------------------------------------------------
    def model(self, name: str | None) -> str:
        if not name:
            return "none"
        return name if name in self.models else OTHER

    def tier(self, tier: str | None) -> str:
        if not tier:
            return "none"
        base = tier.split("+", 1)[0]
        return base if base in self.tiers else OTHER

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered: labels() takes a lock and builds a tuple each call."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # -- one request ---------------------------------------------------------------------------------------
    def observe(self, record: LedgerRecord, confidence: float | None = None, cache_miss: bool = False) -> None:
        child = self._child
        status = str(record.status)
        tier = self.tier(record.tier)
        model = self.model(record.chosen_model)
        self.recorded += 1
        child(self.requests, status, tier).inc()
        child(self.duration, "chat", model, status).observe(record.latency_ms / 1000)
        if record.status == 200:
            child(self.overhead, tier).observe(max(record.overhead_ms, 0.0) / 1000)
            if record.cache_hit:
                child(self.cache, (record.reason or "").split(" ", 1)[0] or OTHER).inc()
            else:
                child(self.decisions, tier, model).inc()
        if cache_miss and not record.cache_hit:
            child(self.cache, "miss").inc()
        if record.ttft_ms is not None:
            child(self.ttft, "chat", model).observe(record.ttft_ms / 1000)
        if record.prompt_tokens or record.completion_tokens:
            child(self.tokens, "chat", "input", model).observe(record.prompt_tokens)
            child(self.tokens, "chat", "output", model).observe(record.completion_tokens)
        if record.cost_usd:
            child(self.cost, model).inc(record.cost_usd)
        if confidence is not None:
            child(self.confidence, tier).observe(confidence)
        if record.attempts:
            self._attempts(record)

    def _attempts(self, record: LedgerRecord) -> None:
        child = self._child
        for attempt in record.attempts:
            name = self.model(attempt.model)
            status = attempt.status if attempt.status in ATTEMPT_STATUSES else OTHER
            if status not in ("cooldown", "window_too_small"):  # no call was made
                child(self.upstream, "chat", name, status).observe(attempt.latency_ms / 1000)
            if attempt.verdict:
                verdict, _, defect = attempt.verdict.partition(":")
                child(self.verdicts, verdict if verdict in VERDICTS else OTHER, defect[:32] if defect else "none").inc()
        if escalated(record.tier, record.attempts):
            child(self.escalations, self.model(record.chosen_model)).inc()

    def breakers(self, states: Iterable[tuple[str, str]]) -> None:
        """(model, breaker state) for the models this worker knows: set on every scrape and after a failed call."""
        for name, state in states:
            self._child(self.breaker, self.model(name)).set(BREAKER_STATES.get(state, 2.0))

    def budget_rejection(self, limit: str | None) -> None:
        self._child(self.budget, limit or OTHER).inc()

    def guard_action(self, guard: str, action: str) -> None:
        pair = (guard[:32], action[:32])
        if pair not in self._guard_pairs:
            with self._lock:
                if len(self._guard_pairs) >= MAX_GUARD_SERIES:
                    pair = (OTHER, OTHER)
                self._guard_pairs.add(pair)
        self._child(self.guards, *pair).inc()

    # -- the scrape ----------------------------------------------------------------------------------------
    def exposition(self) -> bytes:
        if self.registry is not None:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess as mp

        registry = CollectorRegistry(auto_describe=False)
        mp.MultiProcessCollector(registry)
        return generate_latest(registry)


_current: Metrics | None = None  # the gateway's of this process, for code that has no gateway at hand (guards)


def activate(metrics: Metrics | None) -> None:
    global _current
    _current = metrics


def count_guard_action(guard: str, action: str) -> None:
    """What a guard did (``count_guard_action("pii", "redacted")``), for ``pointsman_guard_actions_total``.
    A no-op when metrics are off. ``guard`` and ``action`` must come from the guard's code, never from a
    request: past 64 distinct pairs they count as other/other."""
    if _current is not None:
        _current.guard_action(guard, action)
