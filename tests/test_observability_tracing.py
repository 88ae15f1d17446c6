"""OpenTelemetry spans per stage, tier, upstream attempt and verifier (issue 21), caught by the SDK's in-memory
exporter; and with tracing off, OpenTelemetry is never imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel extra: pip install -e '.[otel]' (the test extra has it)")
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind  # noqa: E402

from tests.conftest import API_KEY_ENV, UPSTREAM_SECRET, model  # noqa: E402

HELLO = [{"role": "user", "content": "hello"}]
ROOT = Path(__file__).resolve().parents[1]


def traced_gateway(make_gateway, upstream):
    both = {"capabilities": ["json", "tools"]}
    gw = make_gateway({
        "models": [model("cheap", upstream, "echo", prices={"input": 0.5, "output": 1.5}, **both),
                   model("strong", upstream, "echo", prices={"input": 10, "output": 30}, **both),
                   model("refuser", upstream, "refuse", **both),
                   model("flaky", upstream, "status:503", max_retries=0, fallbacks=["cheap"], **both)],
        "policies": {"auto": {"default": "cheap", "sticky_s": 60, "rules": [{"when": {"keywords": ["hard"]}, "route": "strong"}]},
                     "casc": {"default": "refuser", "cascade": {"mode": "always", "models": ["refuser", "strong"],
                                                                "verifiers": ["refusal"], "threshold": 0.5}}},
        "observability": {"tracing": {"enabled": True, "exporter": "none"}}})
    exporter = InMemorySpanExporter()
    gw.gateway.visibility.tracing.provider.add_span_processor(SimpleSpanProcessor(exporter))
    return gw, exporter


def finished(exporter, requests: int = 1) -> list:
    """The spans once `requests` request spans have ended (a request's span ends after its answer is sent)."""
    deadline = time.monotonic() + 5
    while True:
        spans = exporter.get_finished_spans()
        if sum(s.kind == SpanKind.SERVER for s in spans) >= requests or time.monotonic() > deadline:
            return spans
        time.sleep(0.01)


def by_trace(spans) -> dict[int, list]:
    traces: dict[int, list] = {}
    for span in spans:
        traces.setdefault(span.context.trace_id, []).append(span)
    return traces


def children(spans, parent) -> list:
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def test_a_request_is_a_tree_of_stage_tier_and_upstream_spans(make_gateway, upstream):
    gw, exporter = traced_gateway(make_gateway, upstream)
    parent_trace = "0af7651916cd43dd8448eb211c80319c"
    answer = httpx.post(f"{gw.base_url}/chat/completions", json={"model": "auto", "messages": HELLO},
                        headers={"traceparent": f"00-{parent_trace}-b7ad6b7169203331-01"})
    assert answer.status_code == 200
    spans = finished(exporter)
    (trace_id, request), = by_trace(spans).items()
    assert f"{trace_id:032x}" == parent_trace  # the caller's trace goes on
    root = next(s for s in request if s.kind == SpanKind.SERVER)
    assert root.name == "chat auto" and root.attributes["gen_ai.response.model"] == "cheap"
    assert root.attributes["pointsman.request_id"] == answer.headers["x-pointsman-request-id"]
    assert root.attributes["gen_ai.usage.input_tokens"] > 0 and root.attributes["pointsman.tier"] == "default"
    stages = [s.name for s in sorted(children(request, root), key=lambda s: s.start_time)]
    assert stages == ["pointsman.stage.authenticate", "pointsman.stage.read", "pointsman.stage.cache",
                      "pointsman.stage.route", "pointsman.stage.limits", "pointsman.stage.answer"]
    route = next(s for s in request if s.name == "pointsman.stage.route")
    assert [s.name for s in children(request, route)] == ["pointsman.tier.rules", "pointsman.tier.sticky"]
    answer_stage = next(s for s in request if s.name == "pointsman.stage.answer")
    (call,) = children(request, answer_stage)
    assert call.kind == SpanKind.CLIENT and call.name == "chat echo" and call.attributes["pointsman.model"] == "cheap"
    assert call.attributes["gen_ai.usage.output_tokens"] > 0


def test_fallbacks_streams_and_the_verifier_have_spans(make_gateway, upstream):
    gw, exporter = traced_gateway(make_gateway, upstream)
    assert httpx.post(f"{gw.base_url}/chat/completions", json={"model": "flaky", "messages": HELLO}).status_code == 200
    failed, fallback = sorted((s for s in finished(exporter) if s.kind == SpanKind.CLIENT),
                              key=lambda s: s.start_time)
    assert failed.attributes["pointsman.model"] == "flaky" and not failed.status.is_ok
    assert fallback.attributes["pointsman.model"] == "cheap" and fallback.status.is_ok
    exporter.clear()

    assert httpx.post(f"{gw.base_url}/chat/completions", json={"model": "router/casc", "messages": HELLO}).status_code == 200
    spans = finished(exporter)
    verify = [s for s in spans if s.name == "pointsman.verify"]
    assert len(verify) == 1 and verify[0].attributes["pointsman.defect"] == "refusal"
    assert [s.attributes["pointsman.model"] for s in sorted((s for s in spans if s.kind == SpanKind.CLIENT),
                                                            key=lambda s: s.start_time)] == ["refuser", "strong"]
    exporter.clear()

    with httpx.stream("POST", f"{gw.base_url}/chat/completions",
                      json={"model": "auto", "messages": HELLO, "stream": True}) as streamed:
        streamed.read()
    (call,) = [s for s in finished(exporter) if s.kind == SpanKind.CLIENT]
    assert call.attributes["pointsman.stream"] is True and call.attributes["pointsman.chunks"] >= 2
    assert [e.name for e in call.events] == ["first_chunk"]


def test_tracing_off_never_imports_opentelemetry(upstream, tmp_path):
    script = textwrap.dedent(f"""
        import os, sys, httpx
        os.environ[{API_KEY_ENV!r}] = {UPSTREAM_SECRET!r}
        from tests.servers import GatewayServer
        from pathlib import Path
        gw = GatewayServer({{"models": [{{"name": "cheap", "provider": "openai", "base_url": "{upstream.url}/v1",
                                        "model": "echo", "api_key_env": {API_KEY_ENV!r}}}]}},
                           Path({str(tmp_path / 'ledger.db')!r})).start()
        assert httpx.post(gw.base_url + "/chat/completions",
                          json={{"model": "cheap", "messages": [{{"role": "user", "content": "hi"}}]}}).status_code == 200
        gw.stop()
        loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
        print("LOADED", loaded)
        sys.exit(1 if loaded else 0)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "LOADED []" in done.stdout
