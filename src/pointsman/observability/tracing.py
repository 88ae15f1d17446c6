"""OpenTelemetry spans for one request: a server span per chat request, a child per stage (authenticate, read,
guards, cache, route, limits, answer: whatever `Gateway.stages` holds), per routing tier, per upstream attempt
and per cascade verification.

Imported only when tracing is configured (hooks.py): a gateway without it never imports OpenTelemetry. The
instrumentation wraps what the gateway composed at start-up (its stage list, each policy's tiers, each pool
model's provider, each cascade's verify), as middleware wraps an app: no stage, tier or provider carries
tracing code. Names and attributes follow the GenAI semantic conventions (``chat {model}``,
``gen_ai.request.model``, ``gen_ai.usage.input_tokens``...). The provider is the gateway's own, not the
process-global one, so tests can run several gateways side by side.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from pointsman.ledger.base import LedgerRecord
from pointsman.observability.config import TracingConfig

__all__ = ["Tracing"]

log = logging.getLogger("pointsman.tracing")
_propagator = TraceContextTextMapPropagator()


def _exporter(config: TracingConfig) -> SpanExporter | None:
    if config.exporter == "none":
        return None
    if config.exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # None: the exporter reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, else http://localhost:4318
    endpoint = config.otlp_endpoint
    if endpoint and not endpoint.rstrip("/").endswith("/v1/traces"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"
    return OTLPSpanExporter(endpoint=endpoint)


def stage_name(stage: Any) -> str:
    """`_authenticate_stage` -> authenticate; a bound `stage` method of a class -> the class (Budgets -> budgets)."""
    name = getattr(stage, "__name__", type(stage).__name__)
    if name == "stage" and hasattr(stage, "__self__"):
        name = type(stage.__self__).__name__
    return name.strip("_").removesuffix("_stage").lower()


class Tracing:
    def __init__(self, config: TracingConfig, version: str = "") -> None:
        self.provider = TracerProvider(resource=Resource.create({"service.name": config.service_name,
                                                                 "service.version": version}),
                                       sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)))
        exporter = _exporter(config)
        if exporter is not None:
            self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("pointsman", version)

    def shutdown(self) -> None:
        self.provider.shutdown()

    # -- the request span ------------------------------------------------------------------------------------
    def wrap_chat(self, chat: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        tracer = self.tracer

        @functools.wraps(chat)
        async def traced(scope: dict[str, Any], receive: Any, send: Any, *args: Any, **kwargs: Any) -> None:
            carrier = {}
            for name, value in scope.get("headers", ()):
                if name in (b"traceparent", b"tracestate"):
                    carrier[name.decode()] = value.decode("latin-1")
            parent = _propagator.extract(carrier) if carrier else None
            with tracer.start_as_current_span("chat", context=parent, kind=SpanKind.SERVER,
                                              attributes={"gen_ai.operation.name": "chat"}):
                await chat(scope, receive, send, *args, **kwargs)

        return traced

    @staticmethod
    def finish(record: LedgerRecord, confidence: float | None) -> None:
        """The request span gets the ledger row's decision (called in _chat's finally, inside that span)."""
        span = trace.get_current_span()
        if not span.is_recording():
            return
        span.update_name(f"chat {record.requested_model or 'unknown'}")
        attributes: dict[str, Any] = {
            "gen_ai.request.model": record.requested_model, "pointsman.request_id": record.id,
            "http.response.status_code": record.status, "gen_ai.usage.input_tokens": record.prompt_tokens,
            "gen_ai.usage.output_tokens": record.completion_tokens, "pointsman.cost_usd": record.cost_usd,
            "pointsman.cache_hit": record.cache_hit, "pointsman.attempts": len(record.attempts)}
        for name, value in (("gen_ai.response.model", record.chosen_model), ("pointsman.tier", record.tier),
                            ("pointsman.reason", record.reason), ("pointsman.confidence", confidence)):
            if value is not None:
                attributes[name] = value
        span.set_attributes(attributes)
        if record.status >= 500 or record.error is not None and record.status >= 400:
            span.set_status(Status(StatusCode.ERROR, (record.error or "")[:200]))
            span.set_attribute("error.type", str(record.status))

    # -- children --------------------------------------------------------------------------------------------
    def wrap_stage(self, stage: Callable[[Any], Awaitable[bool]]) -> Callable[[Any], Awaitable[bool]]:
        tracer, name = self.tracer, f"pointsman.stage.{stage_name(stage)}"

        async def traced(ex: Any) -> bool:
            with tracer.start_as_current_span(name) as span:
                answered = await stage(ex)
                span.set_attribute("pointsman.answered", answered)
                return answered

        traced.__name__ = getattr(stage, "__name__", "stage")
        traced.__wrapped__ = stage  # type: ignore[attr-defined]
        return traced

    def wrap_tier(self, tier: Any) -> None:
        decide, tracer, name = tier.decide, self.tracer, f"pointsman.tier.{tier.name}"

        async def traced(ctx: Any, eligible: list[str], tentative: Any) -> Any:
            with tracer.start_as_current_span(name, attributes={"pointsman.eligible": len(eligible)}) as span:
                decision = await decide(ctx, eligible, tentative)
                if decision is not None:
                    span.set_attribute("pointsman.decided_model", decision.model)
                    if decision.confidence is not None:
                        span.set_attribute("pointsman.confidence", float(decision.confidence))
                return decision

        _set(tier, "decide", traced)

    def wrap_verifier(self, cascade: Any) -> None:
        verify, tracer = cascade.verify, self.tracer

        async def traced(ctx: Any, answer: Any, model: str, *args: Any, **kwargs: Any) -> Any:
            with tracer.start_as_current_span("pointsman.verify", attributes={"gen_ai.response.model": model}) as span:
                verdict = await verify(ctx, answer, model, *args, **kwargs)
                span.set_attributes({"pointsman.verifier": verdict.verifier, "pointsman.score": float(verdict.score),
                                     "pointsman.defect": verdict.defect or ""})
                return verdict

        _set(cascade, "verify", traced)

    def wrap_provider(self, name: str, provider: Any) -> None:
        """Each call to the upstream is one attempt: a CLIENT span named as the GenAI conventions name one."""
        complete, stream, tracer = provider.complete, provider.stream, self.tracer
        upstream = provider.config.model or name
        attributes = {"gen_ai.operation.name": "chat", "gen_ai.request.model": upstream,
                      "gen_ai.provider.name": provider.config.provider, "pointsman.model": name}

        async def traced_complete(body: dict[str, Any]) -> dict[str, Any]:
            with tracer.start_as_current_span(f"chat {upstream}", kind=SpanKind.CLIENT, attributes=attributes) as span:
                answer = await complete(body)
                _usage(span, answer.get("usage") if isinstance(answer, dict) else None)
                return answer

        async def traced_stream(body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
            # not made current: a generator's frames run in whoever iterates it; ended when it is closed
            span = tracer.start_span(f"chat {upstream}", context=otel_context.get_current(), kind=SpanKind.CLIENT,
                                     attributes={**attributes, "pointsman.stream": True})
            chunks = 0
            try:
                async for chunk in stream(body):
                    chunks += 1
                    if chunks == 1:
                        span.add_event("first_chunk")
                    if isinstance(chunk, dict) and chunk.get("usage"):
                        _usage(span, chunk["usage"])
                    yield chunk
            except BaseException as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise
            finally:
                span.set_attribute("pointsman.chunks", chunks)
                span.end()

        _set(provider, "complete", traced_complete)
        _set(provider, "stream", traced_stream)


def _usage(span: Any, usage: Any) -> None:
    if isinstance(usage, dict):
        for key, attribute in (("prompt_tokens", "gen_ai.usage.input_tokens"),
                               ("completion_tokens", "gen_ai.usage.output_tokens")):
            if isinstance(usage.get(key), int):
                span.set_attribute(attribute, usage[key])


def _set(target: Any, name: str, value: Any) -> None:
    try:
        setattr(target, name, value)
    except AttributeError:  # a class with __slots__: traced through its caller's span only
        log.debug("cannot trace %s.%s", type(target).__name__, name)
