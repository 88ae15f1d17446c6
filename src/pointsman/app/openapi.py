"""The gateway's OpenAPI 3.1 document, served at `GET /openapi.json` (no auth).

Built once at start-up: the chat-completions request schema comes from the msgspec structs the
gateway validates with (app/schema.py), so the document cannot drift from what is enforced; the
`model` field lists the ids this gateway accepts (its pool, "auto" and every "router/<policy>").
Unknown request fields are allowed, as the gateway passes them through to the upstream.
"""

from __future__ import annotations

from typing import Any

import msgspec

from pointsman.app.openapi_agents import agent_components, agent_paths
from pointsman.app.schema import ChatRequest

REF = "#/components/schemas/{name}"
INT_MIN, INT_MAX = -(2**63), 2**64 - 1  # what orjson reads as an integer and msgspec takes as `int`

ERROR_STATUSES = {
    "400": "Invalid JSON or parameters (the field is named), or no pool model can take the request",
    "401": "Missing or invalid API key",
    "403": "The key may not use this endpoint",
    "404": "Unknown model, path or cache entry (or the cache is disabled)",
    "405": "Method not allowed",
    "408": "The request body did not arrive in time",
    "413": "Request body too large",
    "429": "Rate limited by every upstream that was tried (see `retry-after`)",
    "431": "Request headers too large or too many",
    "500": "Internal gateway error",
    "502": "Upstream failure (bad answer, connection error, rejected credentials)",
    "503": "Every eligible model is cooling down",
    "504": "Upstream timed out",
}

DECISION_HEADERS = {
    "x-pointsman-request-id": "The ledger row's id",
    "x-pointsman-model": "The pool model that answered",
    "x-pointsman-tier": "Who decided: direct, rules, default, ...",
    "x-pointsman-reason": "Why this model",
    "x-pointsman-cost-usd": "The answer's cost (`pending` on streams)",
    "x-pointsman-overhead-ms": "Time spent in the gateway itself",
    "x-pointsman-attempts": "Upstream calls made",
}

TAG_HEADERS = ("x-pointsman-user", "x-pointsman-team", "x-pointsman-cohort")


def _error_schema() -> dict[str, Any]:
    nullable_string = {"anyOf": [{"type": "string"}, {"type": "null"}]}
    return {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["message", "type", "param", "code"],
        "properties": {"message": {"type": "string"}, "type": {"type": "string"}, "param": nullable_string,
                       "code": nullable_string}}}}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description,
                                "content": {"application/json": {"schema": {"$ref": REF.format(name="Error")}}}}
    if headers:
        response["headers"] = headers
    return response


def _errors(*statuses: str) -> dict[str, Any]:
    out = {}
    for status in statuses:
        headers = {"retry-after": {"schema": {"type": "string"}, "description": "Seconds to wait"}} if status == "429" else None
        out[status] = _error(ERROR_STATUSES[status], headers)
    return out


def _chat_request_components(model_ids: list[str]) -> dict[str, Any]:
    (_,), components = msgspec.json.schema_components([ChatRequest], ref_template=REF)
    chat = components["ChatRequest"]
    props = chat["properties"]
    # What validate_chat_request checks beyond the struct's types.
    props["model"] = {"type": "string", "enum": list(model_ids),
                      "description": "A pool model, `auto` or `router/<policy>` (GET /v1/models lists them)"}
    props["response_format"] = {"anyOf": [
        {"type": "object", "required": ["type"], "properties": {"type": {"enum": ["text", "json_object", "json_schema"]}}},
        {"type": "null"}], "default": None}
    for option in props["stop"]["anyOf"]:
        if option.get("type") == "array":
            option["maxItems"] = 16
    chat["description"] = "OpenAI chat-completions request; unknown fields pass through to the upstream."
    message = components["Message"]
    # a text part carries its text as a string; a tool message names the call it answers
    for option in message["properties"]["content"]["anyOf"]:
        if option.get("type") == "array":
            option["items"] = {"type": "object", "if": {"properties": {"type": {"const": "text"}}, "required": ["type"]},
                               "then": {"required": ["text"], "properties": {"text": {"type": "string"}}}}
    message["if"] = {"properties": {"role": {"const": "tool"}}, "required": ["role"]}
    message["then"] = {"required": ["tool_call_id"], "properties": {"tool_call_id": {"type": "string"}}}
    for schema in components.values():
        _bound_integers(schema)
    return components


def _bound_integers(node: Any) -> None:
    """Integers are 64-bit: a larger JSON number is read as a float, and refused."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            node.setdefault("minimum", INT_MIN)
            node.setdefault("maximum", INT_MAX)
        for value in node.values():
            _bound_integers(value)
    elif isinstance(node, list):
        for value in node:
            _bound_integers(value)


def _headers(names: dict[str, str], required: bool) -> dict[str, Any]:
    return {name: {"description": text, "required": required, "schema": {"type": "string"}} for name, text in names.items()}


def _cache_components() -> dict[str, Any]:
    entry_id = {"type": "string", "pattern": "^[0-9a-fA-F]{1,16}$",
                "description": "A cache entry's id, as in the `x-pointsman-cache-entry` header of a hit"}
    count = {"type": "integer", "minimum": 0}
    counts = {"type": "object", "additionalProperties": count}
    return {
        "CacheFeedback": {
            "type": "object", "required": ["verdict"], "additionalProperties": False,
            "description": "A verdict on an answer: name the request (`x-pointsman-request-id`) or the entry. "
                           "A reject deletes the entry (exact hit, or the fresh answer the request stored) or "
                           "demotes it (semantic hit).",
            "properties": {"verdict": {"enum": ["reject", "accept"]},
                           "request_id": {"type": "string", "description": "The answer's x-pointsman-request-id"},
                           "entry_id": entry_id},
            "oneOf": [{"required": ["request_id"]}, {"required": ["entry_id"]}]},
        "CacheFeedbackResult": {
            "type": "object", "required": ["object", "entry_id", "verdict", "action"],
            "properties": {"object": {"const": "cache.feedback"}, "entry_id": {"type": "string"},
                           "verdict": {"enum": ["reject", "accept"]},
                           "action": {"enum": ["deleted", "demoted", "accepted"]}}},
        "CacheInvalidate": {
            "type": "object", "additionalProperties": False,
            "description": "One entry, everything (`all`), or every entry matching all the filters given.",
            "properties": {"entry_id": entry_id,
                           "key_id": {"type": "string", "description": "The client key's id, as in the ledger"},
                           "team": {"type": "string", "description": "x-pointsman-team of the requests"},
                           "model": {"type": "string",
                                     "description": "The pool model that answered, or the model or policy requested"},
                           "all": {"type": "boolean"}}},
        "CacheInvalidation": {"type": "object", "required": ["object", "invalidated"],
                              "properties": {"object": {"const": "cache.invalidation"}, "invalidated": count}},
        "CacheMetrics": {
            "type": "object", "description": "This replica's counters since start, and the store's size",
            "required": ["object", "store", "lookups", "hits", "hits_exact", "hits_semantic", "misses", "rejected",
                         "stored", "not_stored", "entries", "bytes", "feedback_accepted", "feedback_rejected",
                         "invalidated"],
            "properties": {"object": {"const": "cache.metrics"}, "store": {"type": "string"}, "lookups": count,
                           "hits": count, "hits_exact": count, "hits_semantic": count, "misses": count,
                           "rejected": counts, "stored": count, "not_stored": counts, "entries": count,
                           "bytes": count, "bytes_served": count, "bytes_stored": count,
                           "feedback_accepted": count, "feedback_rejected": count, "feedback_deleted": count,
                           "invalidated": count,
                           "verify": {"type": ["object", "null"], "description": "cache.verify (null when off): "
                                      "labels, spend, and per tenant the threshold and the estimated wrong reuse"}}},
    }


def _json_body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {"$ref": REF.format(name=name)}}}}


def _json_ok(description: str, name: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": REF.format(name=name)}}}}


def build_openapi(*, model_ids: list[str], version: str, client_auth: bool, max_body_bytes: int) -> dict[str, Any]:
    """The document as a dict; `client_auth` says whether /v1/* needs a bearer key."""
    components = _chat_request_components(model_ids)
    components["Error"] = _error_schema()
    components["ChatCompletion"] = {
        "type": "object", "required": ["choices"],
        "description": "The upstream's answer, passed through (only `choices` is guaranteed by the gateway).",
        "properties": {"id": {"type": "string"}, "object": {"type": "string"}, "created": {"type": "integer"},
                       "model": {"type": "string"}, "choices": {"type": "array", "items": {"type": "object"}},
                       "usage": {"anyOf": [{"type": "object"}, {"type": "null"}]}}}
    components["StreamEvent"] = {
        "type": "object", "required": ["data"],
        "description": "One server-sent event: `data` holds a chat.completion.chunk (JSON), an OpenAI-style error "
                       "object if the upstream fails mid-stream, or `[DONE]`; a last comment line carries the cost.",
        "properties": {"data": {"type": "string"}, "event": {"type": "string"}, "id": {"type": "string"},
                       "retry": {"type": "integer"}}}
    components["ModelList"] = {
        "type": "object", "required": ["object", "data"],
        "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": {
            "type": "object", "required": ["id", "object", "created", "owned_by"],
            "properties": {"id": {"type": "string"}, "object": {"const": "model"}, "created": {"type": "integer"},
                           "owned_by": {"type": "string"}}}}}}
    components["Health"] = {"type": "object", "required": ["status", "version", "models"],
                            "properties": {"status": {"const": "ok"}, "version": {"type": "string"},
                                           "models": {"type": "integer", "minimum": 0}}}
    common = ("401", "431") if client_auth else ("431",)
    tag_params = [{"name": name, "in": "header", "required": False, "schema": {"type": "string"},
                   "description": "Accounting tag, recorded in the ledger (its first 128 characters)"} for name in TAG_HEADERS]
    chat_ok_headers = {**_headers(DECISION_HEADERS, True),
                       **_headers({"x-pointsman-scores": "Per-model predicted quality, when a tier has them"}, False)}
    chat = {"post": {
        "operationId": "createChatCompletion",
        "summary": "Route a chat completion to the pool model the policy picks, or to the model named",
        "parameters": tag_params,
        "requestBody": {"required": True, "description": f"At most {max_body_bytes} bytes",
                        "content": {"application/json": {"schema": {"$ref": REF.format(name="ChatRequest")}}}},
        "responses": {
            "200": {"description": "The answer (JSON), or an SSE stream when `stream` is true",
                    "headers": chat_ok_headers,
                    "content": {"application/json": {"schema": {"$ref": REF.format(name="ChatCompletion")}},
                                "text/event-stream": {"schema": {"$ref": REF.format(name="StreamEvent")}}}},
            **_errors("400", *common, "404", "405", "408", "413", "429", "500", "502", "503", "504")}}}
    models = {"get": {"operationId": "listModels", "summary": "The pool's models, `auto` and every routing policy",
                      "responses": {"200": {"description": "The model list",
                                            "content": {"application/json": {"schema": {"$ref": REF.format(name="ModelList")}}}},
                                    **_errors(*common)}}}
    public: dict[str, Any] = {"security": []}
    health = {"get": {"operationId": "health", "summary": "Liveness", **public,
                      "responses": {"200": {"description": "Up", "content": {"application/json": {
                          "schema": {"$ref": REF.format(name="Health")}}}}, **_errors("431")}}}
    admin = {"get": {"operationId": "adminModels", "summary": "Each model's breaker state (admin key)",
                     "security": [{"bearer": []}],
                     "responses": {"200": {"description": "Breaker states", "content": {"application/json": {
                         "schema": {"type": "object", "required": ["data"],
                                    "properties": {"data": {"type": "array", "items": {"type": "object"}}}}}}},
                         **_errors("401", "403", "431")}}}
    components.update(_cache_components())
    components.update(agent_components(model_ids))
    admin_key: list[dict[str, list[str]]] = [{"bearer": []}]
    cache_paths = {
        "/v1/cache/feedback": {"post": {
            "operationId": "cacheFeedback", "summary": "Reject (or accept) an answer: a rejected cached answer is "
                                                       "deleted or demoted; only the caller's tenant's entries",
            "parameters": [{"name": "x-pointsman-team", "in": "header", "required": False, "schema": {"type": "string"},
                            "description": "The team the answer was asked under (part of the tenant)"}],
            "requestBody": _json_body("CacheFeedback"),
            "responses": {"200": _json_ok("What was done", "CacheFeedbackResult"),
                          **_errors("400", *common, "404", "408", "413")}}},
        "/admin/cache/invalidate": {"post": {
            "operationId": "cacheInvalidate", "summary": "Delete cache entries (admin key); every replica drops them",
            "security": admin_key, "requestBody": _json_body("CacheInvalidate"),
            "responses": {"200": _json_ok("How many entries were deleted", "CacheInvalidation"),
                          **_errors("400", "401", "403", "404", "408", "413", "431")}}},
        "/admin/cache/metrics": {"get": {
            "operationId": "cacheMetrics", "summary": "Cache counters (admin key)", "security": admin_key,
            "responses": {"200": _json_ok("Counters", "CacheMetrics"), **_errors("401", "403", "404", "431")}}},
    }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Pointsman", "version": version,
                 "description": "An OpenAI-compatible LLM routing gateway. Errors are OpenAI-shaped."},
        "paths": {"/v1/chat/completions": chat, "/v1/models": models, "/health": health, "/admin/models": admin,
                  **cache_paths, **agent_paths(_errors, common, chat_ok_headers)},
        "components": {"schemas": components,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
    if client_auth:
        document["security"] = [{"bearer": []}]
    return document
