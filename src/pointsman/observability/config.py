"""The `observability:` section of a config (README, "Visibility"). Plain structs, no imports of what they turn
on: config/schema.py reads this module at every start, with or without a tracer installed."""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["ObservabilityConfig", "TracingConfig", "RequestLogConfig"]


class TracingConfig(msgspec.Struct, forbid_unknown_fields=True):
    """OpenTelemetry spans per stage, tier, upstream attempt and verifier, exported over OTLP/HTTP (the `otel`
    extra). Off until `enabled` or an endpoint is set: then nothing of OpenTelemetry is imported."""

    enabled: bool = False  # also on when otlp_endpoint is set
    exporter: Literal["otlp", "console", "none"] = "otlp"  # none: spans made for in-process processors only (tests)
    otlp_endpoint: str | None = None  # e.g. http://localhost:4318; None: OTEL_EXPORTER_OTLP_ENDPOINT, else that
    service_name: str = "pointsman"
    sample_ratio: float = 1.0  # of requests traced (parent-based: a caller's sampled traceparent is kept)


class RequestLogConfig(msgspec.Struct, forbid_unknown_fields=True):
    """One JSON line per chat request: the ledger row's fields, without the prompt unless `prompts` is on."""

    enabled: bool = False
    path: str | None = None  # a file to append to; None: standard error
    prompts: bool = False  # include the routing text (the last user message and its context): prompt text on disk


class ObservabilityConfig(msgspec.Struct, forbid_unknown_fields=True):
    metrics: bool = True  # GET /metrics (Prometheus text format)
    metrics_need_admin_key: bool = False  # /metrics open, as /health is (labels name no key, user or team)
    tracing: TracingConfig = msgspec.field(default_factory=TracingConfig)
    request_log: RequestLogConfig = msgspec.field(default_factory=RequestLogConfig)
    dashboard: bool = True  # GET /admin/dashboard (admin key): spend, routing mix, cache, latency, feedback, drift
