"""Visibility: Prometheus metrics (metrics.py), OpenTelemetry traces (tracing.py), a JSON line per request
(request_log.py), the admin dashboard (dashboard/) and the prompt-log audit (audit.py); hooks.py joins them to
the gateway."""
