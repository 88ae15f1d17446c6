"""The OpenAPI paths of the APIs agents and other gateways speak (issue 22): Anthropic's Messages API, OpenAI's
Responses API, embeddings and route-only. Part of the document app/openapi.py builds; the request schemas name
what the gateway reads (app/messages.py, app/responses.py, app/embeddings.py, app/route_only.py), and unknown
fields are allowed as for chat."""

from __future__ import annotations

from typing import Any

__all__ = ["agent_components", "agent_paths"]

REF = "#/components/schemas/{name}"
STRING = {"type": "string"}
OBJECT = {"type": "object"}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": REF.format(name=name)}


def _json(description: str, name: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def agent_components(model_ids: list[str]) -> dict[str, Any]:
    model = {"type": "string", "description": "A pool model, `auto` or `router/<policy>` (GET /v1/models lists them)"}
    content = {"anyOf": [STRING, {"type": "array", "items": OBJECT}]}
    stream = {"type": "object", "required": ["data"], "description": "A named server-sent event (`event:` and `data:`)",
              "properties": {"event": STRING, "data": STRING}}
    return {
        "MessagesRequest": {
            "type": "object", "required": ["model", "messages", "max_tokens"],
            "description": "Anthropic Messages request; routed like a chat request (any pool model may answer).",
            "properties": {"model": model, "max_tokens": {"type": "integer", "minimum": 1, "maximum": 2**31},
                           "messages": {"type": "array", "minItems": 1, "items": {
                               "type": "object", "required": ["role", "content"],
                               "properties": {"role": {"enum": ["user", "assistant"]}, "content": content}}},
                           "system": content, "tools": {"type": "array", "items": OBJECT}, "tool_choice": OBJECT,
                           "stream": {"type": "boolean"}, "temperature": {"type": "number", "minimum": 0, "maximum": 1},
                           "top_p": {"type": "number", "minimum": 0, "maximum": 1},
                           "stop_sequences": {"type": "array", "items": STRING}, "metadata": OBJECT}},
        "AnthropicMessage": {"type": "object", "required": ["id", "type", "role", "model", "content", "stop_reason", "usage"],
                    "properties": {"id": STRING, "type": {"const": "message"}, "role": {"const": "assistant"},
                                   "model": STRING, "content": {"type": "array", "items": OBJECT},
                                   "stop_reason": {"anyOf": [STRING, {"type": "null"}]}, "usage": OBJECT}},
        "AnthropicError": {"type": "object", "required": ["type", "error"],
                           "properties": {"type": {"const": "error"}, "error": {
                               "type": "object", "required": ["type", "message"],
                               "properties": {"type": STRING, "message": STRING}}}},
        "TokenCount": {"type": "object", "required": ["input_tokens"],
                       "description": "An estimate (about four characters a token): no model is called",
                       "properties": {"input_tokens": {"type": "integer", "minimum": 0}}},
        "NamedStreamEvent": stream,
        "ResponsesRequest": {
            "type": "object", "required": ["model"],
            "description": "OpenAI Responses request: function tools only; `store` (default true) keeps the response "
                           "for `previous_response_id` and GET, per tenant.",
            "properties": {"model": model, "input": {"anyOf": [STRING, {"type": "array", "items": OBJECT}]},
                           "instructions": {"anyOf": [STRING, {"type": "null"}]},
                           "previous_response_id": {"anyOf": [STRING, {"type": "null"}]},
                           "store": {"type": "boolean"}, "stream": {"type": "boolean"},
                           "tools": {"type": "array", "items": OBJECT}, "tool_choice": {"anyOf": [STRING, OBJECT]},
                           "max_output_tokens": {"type": "integer", "minimum": 1}, "text": OBJECT,
                           "temperature": {"type": "number", "minimum": 0, "maximum": 2},
                           "top_p": {"type": "number", "minimum": 0, "maximum": 1}, "metadata": OBJECT}},
        "Response": {"type": "object", "required": ["id", "object", "created_at", "status", "model", "output"],
                     "properties": {"id": STRING, "object": {"const": "response"}, "created_at": {"type": "integer"},
                                    "status": {"enum": ["completed", "incomplete", "failed", "in_progress"]},
                                    "model": STRING, "output": {"type": "array", "items": OBJECT},
                                    "usage": {"anyOf": [OBJECT, {"type": "null"}]},
                                    "previous_response_id": {"anyOf": [STRING, {"type": "null"}]}}},
        "ResponseDeleted": {"type": "object", "required": ["id", "object", "deleted"],
                            "properties": {"id": STRING, "object": {"const": "response.deleted"},
                                           "deleted": {"const": True}}},
        "EmbeddingsRequest": {
            "type": "object", "required": ["model", "input"],
            "description": "Passed through to a pool model of `kind: embedding` (`auto`: the cheapest one)",
            "properties": {"model": STRING, "input": {"anyOf": [STRING, {"type": "array", "items": STRING, "minItems": 1},
                                                                {"type": "array", "items": {"type": "integer"}, "minItems": 1}]},
                           "encoding_format": {"enum": ["float", "base64"]}, "dimensions": {"type": "integer", "minimum": 1}}},
        "Embeddings": {"type": "object", "required": ["data"],
                       "properties": {"object": STRING, "data": {"type": "array", "items": OBJECT}, "model": STRING,
                                      "usage": {"anyOf": [OBJECT, {"type": "null"}]}}},
        "RouteDecision": {
            "type": "object",
            "required": ["object", "request_id", "model", "tier", "reason", "fallbacks", "candidates", "cascade", "cache"],
            "properties": {"object": {"const": "route.decision"}, "request_id": STRING, "model": STRING, "tier": STRING,
                           "reason": STRING, "fallbacks": {"type": "array", "items": STRING},
                           "confidence": {"anyOf": [{"type": "number"}, {"type": "null"}]},
                           "candidates": {"type": "array", "items": {
                               "type": "object", "required": ["model", "predicted_quality", "estimated_cost_usd"],
                               "properties": {"model": STRING,
                                              "predicted_quality": {"anyOf": [{"type": "number"}, {"type": "null"}]},
                                              "estimated_cost_usd": {"type": "number"}}}},
                           "cascade": {"anyOf": [OBJECT, {"type": "null"}]},
                           "cache": {"type": "object", "required": ["verdict"], "properties": {
                               "verdict": {"enum": ["hit", "miss", "not_cacheable", "disabled"]}}},
                           "session": {"anyOf": [STRING, {"type": "null"}]}, "routing_cost_usd": {"type": "number"},
                           "overhead_ms": {"type": "number"}}},
    }


def body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


def agent_paths(errors: Any, common: tuple[str, ...], decision_headers: dict[str, Any]) -> dict[str, Any]:
    """``errors(*statuses)``: the document's OpenAI-shaped error responses; ``common``: statuses every client
    path has (401 when keys are configured); ``decision_headers``: the x-pointsman-* headers of an answer."""
    anthropic_errors = {status: {"description": response["description"],
                                 "content": {"application/json": {"schema": _ref("AnthropicError")}}}
                        for status, response in errors("400", *common, "404", "405", "408", "413", "429", "500", "502",
                                                       "503", "504").items()}
    answer_errors = errors("400", *common, "404", "405", "408", "413", "429", "500", "502", "503", "504")
    return {
        "/v1/messages": {"post": {
            "operationId": "createMessage", "summary": "Anthropic Messages API, routed to the pool model the policy "
                                                       "picks; errors in Anthropic's shape",
            "requestBody": body("MessagesRequest"),
            "responses": {"200": {"description": "A Message, or Anthropic's event stream when `stream` is true",
                                  "headers": decision_headers,
                                  "content": {"application/json": {"schema": _ref("AnthropicMessage")},
                                              "text/event-stream": {"schema": _ref("NamedStreamEvent")}}},
                          **anthropic_errors}}},
        "/v1/messages/count_tokens": {"post": {
            "operationId": "countMessageTokens", "summary": "Estimate a Messages request's input tokens",
            "requestBody": body("MessagesRequest"),
            "responses": {"200": _json("The estimate", "TokenCount"),
                          **{s: r for s, r in anthropic_errors.items() if s in ("400", "401", "405", "408", "413")}}}},
        "/v1/responses": {"post": {
            "operationId": "createResponse", "summary": "OpenAI Responses API, routed to the pool model the policy picks",
            "requestBody": body("ResponsesRequest"),
            "responses": {"200": {"description": "A Response, or its typed event stream when `stream` is true",
                                  "headers": decision_headers,
                                  "content": {"application/json": {"schema": _ref("Response")},
                                              "text/event-stream": {"schema": _ref("NamedStreamEvent")}}},
                          **answer_errors}}},
        "/v1/responses/{response_id}": {
            "parameters": [{"name": "response_id", "in": "path", "required": True, "schema": STRING}],
            "get": {"operationId": "getResponse", "summary": "A stored response (the caller's tenant's only)",
                    "responses": {"200": _json("The Response", "Response"), **errors(*common, "404")}},
            "delete": {"operationId": "deleteResponse", "summary": "Delete a stored response",
                       "responses": {"200": _json("Deleted", "ResponseDeleted"), **errors(*common, "404")}}},
        "/v1/embeddings": {"post": {
            "operationId": "createEmbeddings", "summary": "Embeddings from a pool model of kind embedding",
            "requestBody": body("EmbeddingsRequest"),
            "responses": {"200": {"description": "The upstream's embeddings, passed through", "headers": decision_headers,
                                  "content": {"application/json": {"schema": _ref("Embeddings")}}},
                          **answer_errors}}},
        "/v1/route": {"post": {
            "operationId": "routeOnly", "summary": "The routing decision for a chat request, without calling a model",
            "requestBody": body("ChatRequest"),
            "responses": {"200": _json("The decision", "RouteDecision"),
                          **errors("400", *common, "404", "405", "408", "413", "500", "502", "503", "504")}}},
    }
