"""The gateway's ASGI application: parse, validate, authenticate, route, dispatch, answer, record.

One request's path (see README "Architecture"): body read with a size limit → JSON parsed once →
validated → key checked → policy routes (decision) → dispatcher calls the plan → answer or SSE
stream → one ledger record, written later by the ledger's thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import os
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import msgspec
import orjson

from pointsman import __version__
from pointsman.accounting.prices import TokenUsage, answer_chars, estimate_usage, read_usage
from pointsman.app.http import (
    JSON_HEADERS,
    SSE_DONE,
    SSE_HEADERS,
    ClientDisconnected,
    Receive,
    Scope,
    Send,
    encode_headers,
    header_map,
    parse_json_object,
    read_body,
    require_method,
    send_bytes,
    send_error,
    send_json,
    sse_event,
)
from pointsman.accounting.directory import KeyDirectory
from pointsman.accounting.keys import key_store_from_url
from pointsman.accounting.limits import Budgets
from pointsman.app import accounts as accounts_api
from pointsman.app.openapi import build_openapi
from pointsman.app.pipeline import Exchange, Stage
from pointsman.app.protocol import MAX_HEADER_BYTES, MAX_HEADER_COUNT
from pointsman.app.secrets import Redactor, url_secrets
from pointsman.app.protocol import configure as configure_protocol
from pointsman.app.schema import validate_chat_request
from pointsman.app import admin as cache_admin
from pointsman.accounting import api as spend_api
from pointsman.app import feedback as learning_api
from pointsman.app import embeddings as embeddings_api
from pointsman.app import messages as messages_api
from pointsman.app import responses as responses_api
from pointsman.app import route_only
from pointsman.observability import hooks as visibility
from pointsman.app.caching import CacheStage, CacheTicket, tenant_of
from pointsman.cache import StreamRecorder
from pointsman.cache.answers import replay_as_sse
from pointsman.cascade.runner import CascadeOutcome
from pointsman.config.schema import Config
from pointsman.embed.registry import Embedders
from pointsman.errors import GatewayError
from pointsman.gateway.dispatch import Dispatcher, DispatchResult
from pointsman.gateway.pool import Pool
from pointsman.learning.shadow import ShadowSampler
from pointsman.learning.store import OutcomeStore, outcome_store_from_url
from pointsman.ledger import Attempt, BatchLedger, LedgerRecord, sink_from_url, without_password
from pointsman.providers import ProviderError
from pointsman.providers.transport import ReqwestTransport, Transport
from pointsman.core import RouteContext, RouteDecision
from pointsman.guards.chain import Guards
from pointsman.routing.policy import PolicyRouter, needs_embeddings
from pointsman.routing.sticky import conversation_session
from pointsman.text import text_of

log = logging.getLogger("pointsman")
request_log = logging.getLogger("pointsman.requests")

# The single-method paths, so another method gets a 405 with `allow` rather than a 404.
METHODS_OF = {"/v1/models": "GET", "/models": "GET", "/openapi.json": "GET", "/health": "GET",
              "/admin/router/reload": "POST", "/admin/models": "GET"}
TAG_HEADERS = {b"x-pointsman-user": "user", b"x-pointsman-team": "team", b"x-pointsman-cohort": "cohort"}
MAX_TAG_LENGTH = 128
# Limits uvicorn (httptools) does not set: it takes any header size and waits for a body forever.
BODY_TIMEOUT_S = 30.0  # the whole request body must arrive within this (slowloris)


_ID_PREFIX = "req_" + os.urandom(6).hex()  # unique per process; a counter makes each id unique within it
_ids = itertools.count(1)


def _request_id() -> str:
    return f"{_ID_PREFIX}{next(_ids):08x}"


def _key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _request_lines_to_console() -> None:
    """Request lines reach the console whatever the log level (once per process)."""
    if request_log.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    request_log.addHandler(handler)
    request_log.setLevel(logging.INFO)
    request_log.propagate = False


def _add_routing_calls(record: LedgerRecord, calls: list[Attempt]) -> None:
    """The calls made to decide (tier 3's judge) go first in the row's attempts, and into its tokens and cost."""
    if record.attempts[:1] and record.attempts[0] is calls[0]:
        return  # already added
    record.attempts = [*calls, *record.attempts]
    record.prompt_tokens += sum(a.prompt_tokens or 0 for a in calls)
    record.completion_tokens += sum(a.completion_tokens or 0 for a in calls)
    record.cost_usd += sum(a.cost_usd or 0.0 for a in calls)


_PARAM = re.compile(r"at `\$\.?([^`]*)`")


def _param_of(error: Exception) -> str | None:
    """The offending field of a validation error ("messages[0].role"), as OpenAI's `param` names it."""
    match = _PARAM.search(str(error))
    return match.group(1) or None if match else None


def _answer_text(answer: dict[str, Any]) -> str:
    choices = answer.get("choices") or [{}]
    message = choices[0].get("message") if isinstance(choices[0], dict) else None
    return text_of(message.get("content"), "") if isinstance(message, dict) else ""


def _delta_text(chunk: dict[str, Any]) -> str:
    choices = chunk.get("choices") or ()
    delta = choices[0].get("delta") if choices and isinstance(choices[0], dict) else None
    content = delta.get("content") if isinstance(delta, dict) else None
    return content if isinstance(content, str) else ""


ADMIN_DISABLED = ("the admin API is disabled: no admin key is configured. Enable it with `server.admin_key_env: NAME` "
                  "in the config or `pointsman serve --admin-key-env NAME`, NAME being an environment variable that "
                  "holds the key, then send `Authorization: Bearer <that key>`")


def _estimated_tokens(chars: int) -> int:
    return (chars + 3) // 4


def _delta_chars(chunk: dict[str, Any]) -> int:
    """Characters of answer text (content, tool-call arguments) one stream chunk carries."""
    total = 0
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict):
            content = delta.get("content")
            total += len(content) if isinstance(content, str) else 0
            for call in delta.get("tool_calls") or ():
                arguments = (call.get("function") or {}).get("arguments") if isinstance(call, dict) else None
                total += len(arguments) if isinstance(arguments, str) else 0
    return total


def _encode_answer(answer: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(answer)
    except orjson.JSONEncodeError:  # orjson reads 1024 levels but writes 254: the upstream's answer is at fault
        raise GatewayError(502, "the upstream's answer is nested too deeply to relay (at most 254 levels)",
                           code="bad_upstream_response") from None


def _decision_headers(request_id: str, decision: RouteDecision, model: str, cost: float | None, overhead_ms: float,
                      attempts: int, cascade: CascadeOutcome | None = None) -> list[tuple[bytes, bytes]]:
    headers = {
        "x-pointsman-request-id": request_id,
        "x-pointsman-model": model,
        "x-pointsman-tier": decision.tier,
        "x-pointsman-reason": decision.reason,
        "x-pointsman-overhead-ms": f"{overhead_ms:.3f}",
        "x-pointsman-attempts": str(attempts),
    }
    if cost is not None:
        headers["x-pointsman-cost-usd"] = f"{cost:.8f}"
    else:  # streaming: the cost is known at the end; it is in the ledger and the stream's last comment
        headers["x-pointsman-cost-usd"] = "pending"
    if decision.scores:
        headers["x-pointsman-scores"] = ",".join(f"{m}={s:.3f}" for m, s in decision.scores.items())
    if decision.confidence is not None:
        headers["x-pointsman-confidence"] = f"{decision.confidence:.3f}"
    if cascade is not None:
        # each verified answer as model:score:verdict, then how the answer was sent
        sent = "streamed live" if cascade.result is None else "held until accepted"
        headers["x-pointsman-cascade"] = f"{cascade.header()}; {sent}" if cascade.steps else sent
    return encode_headers(headers)


KNOB_HEADERS = {b"x-pointsman-lambda": ("lambda", 0.0, 1e6), b"x-pointsman-floor": ("floor", 0.0, 1.0),
                b"x-pointsman-cascade-threshold": ("cascade_threshold", 0.0, 1.0)}
CASCADE_MODES = ("off", "always", "route")


def _knob_overrides(headers: dict[bytes, bytes]) -> dict[str, float]:
    """The cost-quality knob, per request: x-pointsman-lambda or x-pointsman-floor."""
    overrides: dict[str, float] = {}
    for header, (name, low, high) in KNOB_HEADERS.items():
        raw = headers.get(header)
        if raw is None:
            continue
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not low <= value <= high:
            raise GatewayError(400, f"{header.decode()} must be a number within {low:g}..{high:g}", code="invalid_header")
        overrides[name] = value
    return overrides


def _cascade_mode(headers: dict[bytes, bytes]) -> str | None:
    """x-pointsman-cascade: off | always | route, for this request only."""
    raw = headers.get(b"x-pointsman-cascade")
    if raw is None:
        return None
    mode = raw.decode("latin-1").strip().lower()
    if mode not in CASCADE_MODES:
        raise GatewayError(400, f"x-pointsman-cascade must be one of {', '.join(CASCADE_MODES)}", code="invalid_header")
    return mode


def _session(headers: dict[bytes, bytes]) -> str | None:
    raw = headers.get(b"x-pointsman-session")
    return raw.decode("latin-1")[:128] if raw else None


class Gateway:
    """An ASGI app. `transport` is the network seam (tests may hand in their own)."""

    def __init__(self, config: Config, transport: Transport | None = None) -> None:
        self.config = config
        self.server = config.server
        self.transport: Transport = transport or ReqwestTransport()
        self.pool = Pool(config, self.transport)
        configure_protocol(self.server.header_timeout_s)
        # One embedder per encoder for the whole gateway, made only when a stage needs it: tier 2 asks for
        # its artefact's (the static table by default), the semantic cache for its own (cache.encoder:
        # MiniLM fine-tuned on duplicates by default), the verifier for MiniLM.
        semantic_cache = self.server.cache.enabled and self.server.cache.semantic
        self.in_flight = 0  # HTTP requests being handled (streams until their last chunk)
        # the one request in flight has a short text embedded on the event loop: no other request's I/O waits for
        # it there; with none in flight the text is background work (a deferred store) and goes to the worker
        self.embedders = (Embedders(inline_when=lambda: self.in_flight == 1)
                          if needs_embeddings(config) or semantic_cache or config.guards.injection.action != "off"
                          or config.guards.injection.overrides else None)
        self.router = PolicyRouter(config, self.pool, self.embedders)
        self.cache_embedder = self.embedders.get(self.server.cache.encoder) if semantic_cache and self.embedders is not None else None
        self.caching = (CacheStage(self.server.cache, getattr(self.cache_embedder, "model_id", ""))
                        if self.server.cache.enabled else None)
        self.dispatcher = Dispatcher(self.pool, self.server)
        self.ledger = BatchLedger(sink_from_url(self.server.ledger_url), flush_interval_s=self.server.ledger_flush_interval_s,
                                  batch_size=self.server.ledger_batch_size)
        self.redactor = Redactor([*(secret for entry in self.pool.entries.values()
                                    for secret in (entry.provider.api_key, *url_secrets(entry.config.base_url))),
                                  *url_secrets(self.server.ledger_url)])  # a database password in an error
        if self.caching is not None:  # cache.verify: sampled hits checked upstream, thresholds per tenant
            self.caching.attach_verifier(self.dispatcher, self.ledger, self.pool, self.cache_embedder, self.redactor.body)
        self.client_keys = self._keys(self.server.api_keys_env, "server.api_keys_env")
        self.admin_key = self._keys([self.server.admin_key_env], "server.admin_key_env") if self.server.admin_key_env else set()
        self._models_body = orjson.dumps({"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": self._owner(name)} for name in self.router.model_ids()]})
        self._openapi_body = orjson.dumps(build_openapi(model_ids=self.router.model_ids(), version=__version__,
                                                        client_auth=bool(self.client_keys or self.admin_key),
                                                        max_body_bytes=self.server.max_body_bytes))
        self.body_timeout_s = BODY_TIMEOUT_S
        self.learning = config.learning
        self.id_prefix = _ID_PREFIX  # request ids this process gave out start with it
        self.outcomes: OutcomeStore | None = None  # feedback and shadow rows (learning/store.py), opened at start
        self._background: list[asyncio.Task[None]] = []
        self.shadow = (ShadowSampler(config.learning.shadow, self.pool, self.dispatcher, self.ledger, lambda: self.outcomes)
                       if config.learning.shadow.share > 0 else None)
        self.unauthenticated = 0  # chat requests refused for a missing or wrong key (GET /admin/models)
        # virtual keys and limits, copied from the ledger's database; budgets and rate limits (accounting/)
        self.keys = KeyDirectory(lambda: key_store_from_url(self.server.ledger_url), self.server.limits.keys_refresh_s)
        self.budgets = Budgets(self.server.limits, self.keys, self.pool)
        # the gateway's own calls (gateway/own_calls.py) count against their model's limits like a client's
        if self.shadow is not None:
            self.shadow.budgets = self.budgets
        if self.caching is not None and self.caching.verifier is not None:
            self.caching.verifier.budgets = self.budgets
        # the request path (app/pipeline.py): a new concern is one more stage in this list
        # limits after route: per-model limits and the worst-case price need the routed model (accounting/limits.py)
        # guards (guards/chain.py): compliance, injection and PII before the cache; what the upstream may see after route
        self.guards = Guards(config.guards, self.pool, self.router.resolve, self.embedders, self.router.static_window())
        self.stages: list[Stage] = [self._authenticate_stage, self._read_stage, *self.guards.before_cache, self._cache_stage,
                                    self._route_stage, *self.guards.after_route, self.budgets.stage, self._answer_stage]
        # metrics, traces and the JSON request log (observability/hooks.py); wraps the stages when tracing is on
        self.visibility = visibility.Visibility(self)
        if self.server.log_requests:
            _request_lines_to_console()
        self._started = False

    @staticmethod
    def _keys(env_names: list[str], setting: str) -> set[str]:
        keys = {os.environ[name] for name in env_names if os.environ.get(name)}
        if env_names and not keys:
            raise ValueError(f"{setting} names {env_names}, but none of these environment variables is set")
        return keys

    def _owner(self, name: str) -> str:
        return self.pool[name].config.provider if name in self.pool else "pointsman-router"

    # -- lifecycle -------------------------------------------------------------------------------
    async def startup(self) -> None:
        if not self._started:
            try:
                self.ledger.start()
            except Exception as exc:  # start-up fails with one line that names the ledger, not the driver's alone
                raise RuntimeError(f"cannot open the ledger {without_password(self.server.ledger_url)}: {exc}") from None
            self.outcomes = outcome_store_from_url(self.server.ledger_url)
            await self.keys.start()
            await self.budgets.start()
            self._background = [asyncio.create_task(self._purge_old_outcomes(), name="pointsman-purge")]
            if self.learning.reload_check_s > 0 and self.router.routes_deployed():
                self._background.append(asyncio.create_task(self._watch_deployed(), name="pointsman-router-watch"))
            if self.caching is not None:
                await self.caching.cache.start()
            if self.embedders is not None:
                await self.embedders.warmup()  # load the models now, not on the first request
            self._started = True

    async def shutdown(self) -> None:
        if self._started:
            for task in self._background:
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)
            if self.shadow is not None:
                await self.shadow.close()
            await self.pool.aclose()
            await self.transport.aclose()
            if self.embedders is not None:
                await self.embedders.close()
            if self.caching is not None:
                await self.caching.cache.close()
            await self.budgets.close()
            await self.keys.close()
            self.ledger.close()  # flushes: a clean shutdown loses no record
            self.visibility.close()
            if self.outcomes is not None:
                self.outcomes.close()
            self._started = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            self.in_flight += 1
            try:
                await self._http(scope, receive, send)
            finally:
                self.in_flight -= 1
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # noqa: BLE001 - reported to the server, which exits
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- routing of paths --------------------------------------------------------------------------
    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        method = scope["method"]
        try:
            headers = scope["headers"]
            if len(headers) > MAX_HEADER_COUNT or sum(len(k) + len(v) for k, v in headers) > MAX_HEADER_BYTES:
                raise GatewayError(431, f"request headers too large: at most {MAX_HEADER_COUNT} headers, {MAX_HEADER_BYTES} bytes",
                                   code="request_header_fields_too_large", type="invalid_request_error")
            if path in ("/v1/chat/completions", "/chat/completions"):
                require_method(scope, "POST")
                await self._chat(scope, receive, send)
            elif path in ("/v1/models", "/models") and method == "GET":
                self._authenticate(header_map(scope))
                await send_bytes(send, 200, self._models_body)
            elif path == "/openapi.json" and method == "GET":
                self._authenticate(header_map(scope))  # it lists the pool's models: as closed as /v1/models
                await send_bytes(send, 200, self._openapi_body)
            elif path == "/health" and method == "GET":
                if parse_qs(scope.get("query_string", b"").decode("latin-1")).get("models") == ["1"]:  # the admin's probe
                    self._authenticate_admin(header_map(scope))
                    from pointsman.gateway.health import probe_models

                    probes = await probe_models(self.pool)
                    for row in probes:
                        row["message"] = self._redact(row.get("message"))
                    await send_json(send, 200, {"status": "ok" if all(p["ok"] for p in probes) else "degraded",
                                                "version": __version__, "models": probes})
                else:
                    await send_json(send, 200, {"status": "ok", "version": __version__, "models": len(self.pool.entries)})
            elif path == "/admin/router/reload" and method == "POST":
                self._authenticate_admin(header_map(scope))
                try:
                    reloaded = self.router.reload()
                except (ValueError, OSError) as exc:
                    raise GatewayError(400, f"router reload failed, the previous routers stay: {exc}", code="reload_failed") from None
                if self.embedders is not None:
                    await self.embedders.warmup()  # a router trained on another encoder: load it off the loop now
                await send_json(send, 200, {"reloaded": reloaded})
            elif path in messages_api.PATHS:  # the Anthropic Messages API, translated at the edge (app/messages.py)
                await messages_api.handle(self, scope, receive, send)
            elif path.startswith(responses_api.PREFIX):  # the OpenAI Responses API (app/responses.py)
                await responses_api.handle(self, scope, receive, send)
            elif path in embeddings_api.PATHS:  # /v1/embeddings, passed through (app/embeddings.py)
                await embeddings_api.handle(self, scope, receive, send)
            elif path in route_only.PATHS:  # /v1/route: the decision without a model call (app/route_only.py)
                await route_only.handle(self, scope, receive, send)
            elif path in learning_api.PATHS:  # /v1/feedback, /admin/drift
                await learning_api.handle(self, scope, receive, send)
            elif path.startswith(accounts_api.PREFIXES):  # /admin/keys..., /admin/budgets...
                await accounts_api.handle(self, scope, receive, send)
            elif path in cache_admin.PATHS:  # /v1/cache/feedback, /admin/cache/invalidate, /admin/cache/metrics
                await cache_admin.handle(self, scope, receive, send)
            elif path in visibility.PATHS:  # /metrics, /admin/dashboard (observability/)
                await visibility.handle(self, scope, receive, send)
            elif path in spend_api.PATHS:  # /admin/spend, /admin/spend/hidden, /savings, /contracts
                await spend_api.handle(self, scope, receive, send)
            elif path == "/admin/models" and method == "GET":
                self._authenticate_admin(header_map(scope))
                await send_json(send, 200, {"data": [
                    {"id": e.name, "provider": e.config.provider, "breaker": e.breaker.state,
                     "consecutive_failures": e.breaker.failures, "cooldown_remaining_s": round(e.breaker.cooldown_remaining(), 3)}
                    for e in self.pool.entries.values()], "unauthenticated_requests": self.unauthenticated})
            elif path in METHODS_OF:
                require_method(scope, METHODS_OF[path])
            else:
                raise GatewayError(404, f"no route for {method} {path}", code="not_found")
        except GatewayError as error:
            await send_error(send, error)
        except ClientDisconnected:
            pass

    # -- the learning loop's upkeep ------------------------------------------------------------------------
    async def _watch_deployed(self) -> None:
        """Swap in a router `pointsman promote` or `rollback` deployed (no restart; every worker and replica
        sharing the routers directory notices)."""
        seen = self.router.deployed_stamp()
        while True:
            await asyncio.sleep(self.learning.reload_check_s)
            stamp = self.router.deployed_stamp()
            if stamp == seen:
                continue
            seen = stamp
            try:
                reloaded = await asyncio.to_thread(self.router.reload)
                if self.embedders is not None:
                    await self.embedders.warmup()
                log.info("deployed router changed: reloaded policies %s", ", ".join(reloaded))
            except (ValueError, OSError) as exc:
                log.error("the newly deployed router could not be loaded, the previous one stays: %s", exc)

    async def _purge_old_outcomes(self) -> None:
        """Stored prompts, feedback and shadow rows older than learning.retention_days, and stored Responses API
        conversations older than server.responses_retention_days, are deleted (hourly)."""
        from pointsman.app import responses

        while True:
            assert self.outcomes is not None
            now = time.time()
            try:
                await asyncio.to_thread(self.outcomes.purge, now - self.learning.retention_days * 86400)
                await responses.purge(self, now - self.server.responses_retention_days * 86400)
            except Exception as exc:  # noqa: BLE001 - retried in an hour; serving goes on
                log.warning("purging old learning rows or stored responses failed: %s", exc)
            await asyncio.sleep(3600)

    def drift(self, days: float) -> Any:
        """Recent traffic against the deployed router of the default policy (GET /admin/drift); blocking."""
        from pointsman.learning.drift import traffic_drift

        predictor = self.router.default_predictor()
        if predictor is None:
            raise GatewayError(404, "no policy routes with a trained router (semantic tier): nothing to drift from",
                               code="no_router")
        try:
            return traffic_drift(self.server.ledger_url, predictor, since=time.time() - days * 86400,
                                 unseen_share_limit=self.learning.drift_unseen_share,
                                 task_shift_limit=self.learning.drift_task_shift)
        except ValueError as exc:
            raise GatewayError(409, str(exc), code="no_training_summary") from None

    # -- auth ------------------------------------------------------------------------------------------
    @staticmethod
    def _bearer(headers: dict[bytes, bytes]) -> str | None:
        value = headers.get(b"authorization")
        if value is not None:
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
        api_key = headers.get(b"x-api-key")
        return api_key.decode("latin-1") if api_key else None

    def _authenticate(self, headers: dict[bytes, bytes]) -> str | None:
        """The caller's key id (a hash of a configured key, or a virtual key's id), or None when the gateway has no
        keys at all."""
        if not self.client_keys and not self.admin_key and not self.keys.closed:
            return None
        key = self._bearer(headers)
        if key is None:
            raise GatewayError(401, "missing API key: send `Authorization: Bearer <key>`", code="missing_api_key")
        if key in self.client_keys or key in self.admin_key:
            return _key_id(key)
        return self.keys.authenticate(key).id  # a virtual key (401 unknown, revoked, expired)

    def _authenticate_admin(self, headers: dict[bytes, bytes]) -> None:
        key = self._bearer(headers)
        if not self.admin_key:  # said with or without a key sent: asking for a key that cannot exist misleads
            raise GatewayError(401 if key is None else 403, ADMIN_DISABLED, code="admin_disabled")
        if key is None:
            raise GatewayError(401, "missing admin key: send `Authorization: Bearer <admin key>`, the value of the "
                                    "variable server.admin_key_env names", code="missing_api_key")
        if key not in self.admin_key:
            raise GatewayError(403, "this key is not the admin key (the value of the variable server.admin_key_env "
                                    "names): it may not use the admin API", code="forbidden")

    # -- chat completions --------------------------------------------------------------------------------
    async def _chat(self, scope: Scope, receive: Receive, send: Send, adapter: Any = None) -> None:
        """Run the stages (app/pipeline.py) under one failure policy: errors become OpenAI-shaped answers and
        every request, answered or not, becomes a ledger row. ``adapter``: another API's request, translated at
        the edge (app/edge.py; ``send`` then translates the answers back)."""
        ex = self.new_exchange(scope, receive, send, adapter)
        record, started = ex.record, ex.started
        try:
            for stage in self.stages:
                if await stage(ex):
                    break
        except GatewayError as error:
            error.message = ex.guard.scrub(self._redact(error.message)) or ""
            record.status, record.error = error.status, error.message
            if error.attempts or not record.attempts:  # an error after the upstream answered keeps that paid call
                record.attempts = error.attempts
            await send_error(send, error, [(b"x-pointsman-request-id", record.id.encode())])
        except msgspec.ValidationError as error:
            record.status, record.error = 400, f"invalid request: {error}"
            await send_error(send, GatewayError(400, f"invalid request: {error}", code="invalid_request",
                                                param=_param_of(error)),
                             [(b"x-pointsman-request-id", record.id.encode())])
        except ClientDisconnected:
            record.status, record.error = 499, "client disconnected before the request was read"
        except ClientLeft:  # the upstream call was cancelled with it: nothing more is paid for
            record.status, record.error = 499, "client disconnected before the answer"
        except Exception:  # noqa: BLE001 - the client gets a clean 500, the log gets the traceback
            log.exception("unexpected error in request %s", record.id)
            record.status, record.error = 500, "internal error"
            if record.ttft_ms is None:
                await send_error(send, GatewayError(500, f"internal gateway error (request {record.id})", code="internal_error"))
            else:  # the stream had begun: end it rather than leave the client waiting
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            record.latency_ms = (time.perf_counter() - started) * 1000
            if record.error is not None or len(record.attempts) > 1:
                record.error = self._redact(record.error)
                for attempt in record.attempts:
                    attempt.error = self._redact(attempt.error)
            if ex.guard.scrubbers:  # the request's personal data never reaches the ledger or a log (guards/pii.py)
                record.error = ex.guard.scrub(record.error)
                for attempt in record.attempts:
                    attempt.error = ex.guard.scrub(attempt.error)
            if ex.guard.notes:  # what the guards found: in the row as in the x-pointsman-guards header
                record.reason = "; ".join(filter(None, [record.reason, "guards: " + ex.guard.header()]))
            if ex.decision is not None and ex.decision.calls:  # an error after deciding: the judge's calls still count
                _add_routing_calls(record, ex.decision.calls)
            if record.status == 401 and record.key_id is None:
                self.unauthenticated += 1  # counted, not stored: rows before authentication would let anyone fill the disk
            else:
                self.ledger.record(record)
            self.visibility.record(ex)  # metrics, the request's span, the JSON line: from the row just recorded
            for release in ex.after:  # a budget reservation settled to the row's cost
                await release()
            if ex.answer_parts and record.status == 200 and self.shadow is not None and ex.ctx is not None:
                self.shadow.schedule(ex.raw or {}, ex.ctx, record, "".join(ex.answer_parts))
            if self.server.log_requests:
                request_log.info("%s %d %s -> %s (%s) %.0f ms $%.6f%s", record.id, record.status, record.requested_model or "-",
                                 record.chosen_model or "-", record.tier or "-", record.latency_ms, record.cost_usd,
                                 f" {record.error[:120]}" if record.error else "")

    # -- the stages ----------------------------------------------------------------------------------------
    async def _authenticate_stage(self, ex: Exchange) -> bool:
        """The client's key, and the accounting tags it sent."""
        ex.headers = header_map(ex.scope)
        ex.record.key_id = self._authenticate(ex.headers)
        for header, field in TAG_HEADERS.items():
            value = ex.headers.get(header)
            if value is not None:
                setattr(ex.record, field, value.decode("latin-1")[:MAX_TAG_LENGTH])
        virtual = self.keys.get(ex.record.key_id)
        if virtual is not None:  # its team and cohort are the key's: a header cannot spend another team's budget
            self.keys.identify(virtual, ex.record)
        return False

    @staticmethod
    def new_exchange(scope: Scope, receive: Receive, send: Send, adapter: Any = None) -> Exchange:
        """A request on its way, on any path: its id (one sequence for every path), its arrival, an empty row."""
        return Exchange(scope, receive, send, time.perf_counter(),
                        LedgerRecord(id=_request_id(), ts=time.time(), requested_model="", status=0), adapter=adapter)

    async def read_json(self, ex: Exchange) -> dict[str, Any]:
        """The request's JSON object body, within the body's time and size limits."""
        try:
            async with asyncio.timeout(self.body_timeout_s):
                body = await read_body(ex.receive, ex.headers, self.server.max_body_bytes)
        except TimeoutError:
            raise GatewayError(408, f"the request body did not arrive within {self.body_timeout_s:g} s", code="request_timeout",
                               type="invalid_request_error", headers={"connection": "close"}) from None
        return parse_json_object(body)

    async def _read_stage(self, ex: Exchange) -> bool:
        """The body, within its time and size limits, parsed once and validated; the route context."""
        ex.raw = raw = await self.read_json(ex)
        if ex.adapter is not None:  # /v1/messages, /v1/responses: into a chat body, once the caller is known
            ex.raw = raw = await ex.adapter.request(raw, ex)
        ex.request = request = validate_chat_request(raw)
        record = ex.record
        record.requested_model = request.model
        record.stream = bool(request.stream)
        if record.user is None and request.user:
            record.user = request.user[:MAX_TAG_LENGTH]
        # no x-pointsman-session: an agent's conversation is recognised by its first messages (routing/sticky.py)
        record.session = _session(ex.headers) or conversation_session(raw)
        ex.ctx = RouteContext(raw, _knob_overrides(ex.headers), record.session, _cascade_mode(ex.headers),
                              tenant=tenant_of(record.key_id, record.team))
        ex.include_usage = bool(request.stream_options and request.stream_options.include_usage)
        return False

    async def _cache_stage(self, ex: Exchange) -> bool:
        """An earlier answer, when the cache has one; else where this answer will be stored."""
        if self.caching is None or ex.raw is None or not self.caching.may_cache(ex.raw) or (ex.ctx and ex.ctx.sensitive):
            return False
        assert ex.ctx is not None
        # Tenants never share answers: the key's hash, and within it the team.
        found = await self.caching.lookup(ex.headers, ex.ctx, tenant_of(ex.record.key_id, ex.record.team),
                                          ex.request.model, self.cache_embedder, ex.record.id)
        if isinstance(found, CacheTicket):
            ex.ticket = found
            return False
        if found is None:
            return False
        await self._serve_hit(ex.send, found, ex.request, ex.record, ex.started, ex.include_usage)
        return True

    async def _route_stage(self, ex: Exchange) -> bool:
        """Which model answers (routing/policy.py), and why."""
        assert ex.ctx is not None
        # a guard may have decided already (guards.injection's route action)
        ex.decision = decision = ex.decision or await self.router.route(ex.request.model, ex.ctx)
        ex.record.tier, ex.record.reason = decision.tier, decision.reason
        if self.learning.store_prompts:  # what `pointsman train --from-ledger` learns from, with the feedback
            ex.record.prompt = ex.guard.scrub(ex.ctx.routing_text)
        if self.shadow is not None and self.shadow.wants(ex.ctx, decision.tier):
            ex.answer_parts = []  # the answer's text is kept for the judge
        return False

    async def _answer_stage(self, ex: Exchange) -> bool:
        """The upstream call: a cascade, a stream, or a plain answer."""
        decision, raw = ex.decision, ex.raw
        assert decision is not None and raw is not None and ex.ctx is not None
        plan = [decision.model, *decision.fallbacks]
        if decision.cascade is not None:
            await self._cascade(ex.send, ex.receive, raw, ex.ctx, decision, ex.record, ex.started, ex.include_usage, ex.ticket,
                                ex.answer_parts)
        elif ex.request.stream:
            await self._stream(ex.send, ex.receive, ex.ctx, plan, decision, ex.record, ex.started, ex.include_usage, ex.ticket,
                               capture=ex.answer_parts)
        else:
            await self._complete(ex.send, ex.receive, raw, plan, decision, ex.record, ex.started, ex.ticket, ex.answer_parts,
                                 ctx=ex.ctx)
        return True

    # -- cache -------------------------------------------------------------------------------------------
    async def _serve_hit(self, send: Send, hit: Any, request: Any, record: LedgerRecord, started: float,
                         include_usage: bool) -> None:
        record.cache_hit, record.status = True, 200
        record.chosen_model, record.tier = hit.model, "cache"
        record.reason = f"{hit.kind} hit, similarity {hit.similarity:.3f}"
        record.overhead_ms = (time.perf_counter() - started) * 1000
        headers = encode_headers({"x-pointsman-request-id": record.id, "x-pointsman-model": hit.model,
                                  "x-pointsman-tier": "cache", "x-pointsman-reason": record.reason,
                                  "x-pointsman-cost-usd": "0", "x-pointsman-attempts": "0",
                                  "x-pointsman-overhead-ms": f"{record.overhead_ms:.3f}", **hit.headers()})
        if request.stream:
            record.ttft_ms = record.overhead_ms
            await send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *headers]})
            await send({"type": "http.response.body", "body": b"".join(hit.sse(include_usage, record.id)), "more_body": False})
        else:
            await send_bytes(send, 200, hit.body(record.id), [*JSON_HEADERS, *headers])

    def _redacted(self, answer: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        """(the answer, its encoding), without the secrets an upstream may have put into it: what the client and
        the cache get."""
        payload = _encode_answer(answer)
        if not self.redactor:
            return answer, payload
        clean = self.redactor.body(payload)
        return (answer, payload) if clean == payload else (orjson.loads(clean), clean)

    def _redact(self, text: str | None) -> str | None:
        """Provider keys and URL credentials an upstream echoed back reach neither clients nor the ledger."""
        return self.redactor.text(text)

    async def _dispatch(self, plan: list[str], raw: dict[str, Any], stream: bool,
                        attempts: list[Attempt] | None = None) -> DispatchResult:
        try:
            return await self.dispatcher.run(plan, raw, stream=stream, attempts=attempts)
        except orjson.JSONEncodeError:  # providers re-encode the body: orjson reads 1024 levels, writes 254
            raise GatewayError(400, "request JSON is nested too deeply to forward (at most 254 levels)",
                               code="invalid_json") from None

    async def _complete(self, send: Send, receive: Receive, raw: dict[str, Any], plan: list[str], decision: RouteDecision,
                        record: LedgerRecord, started: float, ticket: CacheTicket | None = None,
                        capture: list[str] | None = None, ctx: RouteContext | None = None) -> None:
        tried: list[Attempt] = []
        try:
            async with WatchClient(receive):
                result = await self._dispatch(plan, raw, stream=False, attempts=tried)
        except ClientLeft:
            record.attempts = tried
            raise
        answer = result.answer
        assert answer is not None
        shown = answer
        self._account(record, result, answer.get("usage"), routing=decision.calls,
                      estimate=lambda: estimate_usage(ctx.total_chars if ctx else 0, answer_chars(shown)))
        answer, payload = self._redacted(answer)
        record.overhead_ms = (time.perf_counter() - started) * 1000 - result.upstream_ms
        record.status = 200
        await send_bytes(send, 200, payload, [*JSON_HEADERS, *_decision_headers(
            record.id, decision, result.entry.name, record.cost_usd, record.overhead_ms, len(result.attempts))])
        if ticket is not None and self.caching is not None:  # after the answer is sent: off its latency
            await self.caching.store(ticket, answer, result.entry.name)
        if capture is not None:
            capture.append(_answer_text(answer))

    @staticmethod
    def _account(record: LedgerRecord, result: DispatchResult, usage: Any, prior: CascadeOutcome | None = None,
                 routing: list[Attempt] | None = None, estimate: Callable[[], TokenUsage] | None = None) -> None:
        """The request's model, attempts, tokens and cost (accounting/prices.py); a cascade's earlier calls, and the
        calls made to decide (the judge's), are added to them. With no usage from the provider, `estimate` guesses
        the tokens, and the row says so."""
        record.chosen_model = result.entry.name
        tokens = read_usage(usage)
        if tokens is None:
            tokens = estimate() if estimate is not None else TokenUsage(0, 0)
            record.cost_estimated = estimate is not None
        record.prompt_tokens, record.completion_tokens, record.cached_tokens = tokens.prompt, tokens.completion, tokens.cached
        cost = result.entry.cost_of(tokens, record.ts)
        if prior is None:
            record.attempts = result.attempts
            record.cost_usd = cost
        else:
            if result.attempts:
                last = result.attempts[-1]
                last.cost_usd, last.verdict = round(cost, 10), last.verdict or "final"
                last.prompt_tokens, last.completion_tokens = record.prompt_tokens, record.completion_tokens
            record.attempts = [*prior.attempts, *result.attempts]
            record.prompt_tokens += prior.prompt_tokens
            record.completion_tokens += prior.completion_tokens
            record.cost_usd = prior.cost_usd + cost
        if routing:
            _add_routing_calls(record, routing)

    async def _cascade(self, send: Send, receive: Receive, raw: dict[str, Any], ctx: RouteContext, decision: RouteDecision,
                       record: LedgerRecord, started: float, include_usage: bool, ticket: CacheTicket | None,
                       capture: list[str] | None = None) -> None:
        """Cheap model first, verified, escalated (cascade/runner.py). A streamed request gets the accepted
        answer as an SSE stream once it is checked, or the escalated model's answer streamed live."""
        plan = decision.cascade
        stream = bool(raw.get("stream"))
        try:
            outcome = await plan.runner.run(plan, ctx, raw, self.dispatcher, started, stream)
        except orjson.JSONEncodeError:
            raise GatewayError(400, "request JSON is nested too deeply to forward (at most 254 levels)",
                               code="invalid_json") from None
        record.tier = f"{decision.tier}+cascade"
        record.reason = f"{decision.reason}; {plan.describe()}, {plan.reason}: {outcome.header() or 'no verified answer'}"
        if outcome.result is None:  # escalated: the last rung streams live
            record.attempts = outcome.attempts
            await self._stream(send, receive, ctx, outcome.stream_plan or [], decision, record, started, include_usage,
                               ticket, prior=outcome, capture=capture)
            return
        result = outcome.result
        assert result.answer is not None
        answer, payload = self._redacted(result.answer)
        record.chosen_model = result.entry.name
        record.attempts = outcome.attempts
        record.prompt_tokens, record.completion_tokens, record.cost_usd = (
            outcome.prompt_tokens, outcome.completion_tokens, outcome.cost_usd)
        record.overhead_ms = (time.perf_counter() - started) * 1000 - outcome.upstream_ms
        record.status = 200
        headers = _decision_headers(record.id, decision, result.entry.name, record.cost_usd, record.overhead_ms,
                                    len(outcome.attempts), outcome)
        if stream:
            record.ttft_ms = (time.perf_counter() - started) * 1000
            await send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *headers]})
            events = replay_as_sse(answer, include_usage, answer.get("id"))
            comment = f": pointsman cost_usd={record.cost_usd:.8f} model={result.entry.name}\n\n".encode()
            await send({"type": "http.response.body", "body": b"".join(events[:-1]) + comment + events[-1], "more_body": False})
        else:
            await send_bytes(send, 200, payload, [*JSON_HEADERS, *headers])
        if ticket is not None and self.caching is not None:
            await self.caching.store(ticket, answer, result.entry.name)
        if capture is not None:
            capture.append(_answer_text(answer))

    async def _stream(self, send: Send, receive: Receive, ctx: RouteContext, plan: list[str], decision: RouteDecision,
                      record: LedgerRecord, started: float, include_usage: bool, ticket: CacheTicket | None = None,
                      prior: CascadeOutcome | None = None, capture: list[str] | None = None) -> None:
        try:
            result = await self._dispatch(plan, ctx.body, stream=True)
        except GatewayError as error:
            if prior is not None:
                error.attempts = [*prior.attempts, *error.attempts]
            raise
        chunks = result.chunks
        assert chunks is not None and result.first_chunk is not None
        record.chosen_model = result.entry.name
        record.attempts = result.attempts if prior is None else [*prior.attempts, *result.attempts]
        record.ttft_ms = (time.perf_counter() - started) * 1000
        record.overhead_ms = record.ttft_ms - result.upstream_ms - (prior.upstream_ms if prior is not None else 0.0)
        record.status = 200
        await send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *_decision_headers(
            record.id, decision, result.entry.name, None, record.overhead_ms, len(record.attempts), prior)]})
        usage: Any = None
        sent_chars = 0  # answer text relayed: what a stream cut short is billed for, when no usage came
        recorder = StreamRecorder() if ticket is not None else None
        try:
            # If the client leaves, stop at once, even while waiting on a slow upstream: the upstream
            # connection is closed and no more tokens are paid for.
            async with WatchClient(receive):
                chunk: dict[str, Any] | None = result.first_chunk
                while chunk is not None:
                    if recorder is not None:
                        recorder.feed(chunk)
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                        if not include_usage:  # asked upstream for our accounting only: not the client's
                            if not chunk.get("choices"):
                                chunk = await anext(chunks, None)
                                continue
                            chunk = {k: v for k, v in chunk.items() if k != "usage"}
                    event = sse_event(chunk)
                    sent_chars += _delta_chars(chunk)
                    if capture is not None:
                        capture.append(_delta_text(chunk))
                    await send({"type": "http.response.body", "body": self.redactor.body(event) if self.redactor else event,
                                "more_body": True})
                    chunk = await anext(chunks, None)
            self._account(record, result, usage, prior, decision.calls,
                          estimate=lambda: estimate_usage(ctx.total_chars, sent_chars))
            comment = f": pointsman cost_usd={record.cost_usd:.8f} model={result.entry.name}\n\n".encode()
            await send({"type": "http.response.body", "body": comment + SSE_DONE, "more_body": False})
            if recorder is not None and self.caching is not None:
                await self.caching.store(ticket, recorder.answer(), result.entry.name, recorder.pieces)
        except ClientLeft:
            record.status, record.error = 499, "client disconnected during the stream"
            if not usage:  # the upstream's usage comes last: estimate what was generated and sent (chars / 4)
                usage = {"prompt_tokens": _estimated_tokens(ctx.total_chars),
                         "completion_tokens": _estimated_tokens(sent_chars)}
                record.error += " (tokens estimated from the text, no usage came)"
                record.cost_estimated = True
            self._account(record, result, usage, prior, decision.calls)
        except ProviderError as error:
            # Part of the answer is already with the client: end the stream with an error event.
            message = self._redact(error.message)
            record.status, record.error = error.status, f"stream broke after the first chunk: {message}"
            result.attempts.append(Attempt(result.entry.name, error.kind, 0.0, message))
            self._account(record, result, usage, prior, decision.calls,
                          estimate=lambda: estimate_usage(ctx.total_chars, sent_chars))
            error_event = {"error": {"message": f"upstream stream failed: {message}", "type": "upstream_error",
                                     "param": None, "code": error.kind}}
            await send({"type": "http.response.body", "body": sse_event(error_event), "more_body": False})
        finally:
            await chunks.aclose()


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class ClientLeft(Exception):
    """The client disconnected while the gateway was waiting on the upstream for it."""


class WatchClient:
    """``async with WatchClient(receive):`` runs its body until the client disconnects, then cancels it and raises
    :class:`ClientLeft` (an upstream call in flight is abandoned: no more tokens are paid for).

    The watch starts only once the body has run for ``after_s``: a watcher task per request is a measurable
    share of a fast request's CPU (bench/gateway), while what the watch saves is a long upstream call."""

    after_s = 0.05

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._gone = False
        self._watcher: asyncio.Future[None] | None = None

    def _on_disconnect(self, watcher: asyncio.Future[None]) -> None:
        if not watcher.cancelled() and watcher.exception() is None and self._task is not None:
            self._gone = True
            self._task.cancel()

    def _watch(self) -> None:
        self._watcher = asyncio.ensure_future(_wait_disconnect(self._receive))
        self._watcher.add_done_callback(self._on_disconnect)

    async def __aenter__(self) -> "WatchClient":
        self._task = asyncio.current_task()
        self._timer = asyncio.get_running_loop().call_later(self.after_s, self._watch)
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        self._timer.cancel()
        if self._watcher is not None:
            self._watcher.remove_done_callback(self._on_disconnect)
            self._watcher.cancel()
        if exc_type is asyncio.CancelledError and self._gone and self._task is not None:
            self._task.uncancel()  # the cancellation was ours, and is handled
            raise ClientLeft from None
        return False
