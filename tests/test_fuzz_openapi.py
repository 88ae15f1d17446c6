"""The published OpenAPI document, and schemathesis against the live gateway (shortened run: the full
run of at least 1,000 cases is bench/fuzz/run.py, its figures in bench/fuzz/RESULTS.md).

The fuzzed gateway's pool answers with the test upstream's echo, so every 5xx would be the gateway's own
(a 5xx the upstream made, which the gateway passes through as OpenAI-compatible servers do, is classified
apart: fuzz_checks.upstream_made)."""

from __future__ import annotations

import tempfile

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import model
from tests.fuzz_checks import no_gateway_server_error

# Hypothesis keeps caches (unicode data, constants) in a home directory: not the repository's.
set_hypothesis_home_dir(tempfile.mkdtemp(prefix="pointsman-hypothesis-"))

EVERYTHING = {"capabilities": ["tools", "vision", "json"], "context_window": 1_000_000_000}


def fuzz_config(upstream) -> dict:
    return {"models": [model("cheap", upstream, **EVERYTHING), model("big", upstream, prices={"input": 3}, **EVERYTHING)],
            "policies": {"auto": {"rules": [{"name": "code", "when": {"regex": "```|def "}, "route": "big"}]},
                         "strict": {"default": "big"}},
            "server": {"cooldown_failures": 1_000_000, "max_body_bytes": 256 * 1024}}


CHECKS = [no_gateway_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection]


@pytest.fixture
def fuzzed(make_gateway, upstream):
    gw = make_gateway(fuzz_config(upstream))
    return gw, schemathesis.openapi.from_url(f"{gw.url}/openapi.json")


SETTINGS = settings(deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck),
                    phases=[Phase.explicit, Phase.generate], print_blob=True)


INTEGER_FIELDS = ("n", "max_tokens", "max_completion_tokens", "seed", "top_logprobs")


def as_integers(case):
    """JSON Schema counts 10.0 as an integer; the gateway (msgspec, strict) wants 10. Positive cases send 10,
    so that they reach routing and the upstream instead of stopping at validation."""
    if isinstance(case.body, dict):
        for name in INTEGER_FIELDS:
            value = case.body.get(name)
            if isinstance(value, float) and value.is_integer():
                case.body[name] = int(value)
    return case


def fuzz(operation, mode: GenerationMode, examples: int, tweak=None) -> int:
    """Run `examples` generated cases through the live gateway; return how many were sent."""
    sent = []
    strategy = operation.as_strategy(generation_mode=mode)
    if tweak is not None:
        strategy = strategy.map(tweak)

    @settings(SETTINGS, max_examples=examples)
    @given(case=strategy.map(as_integers) if mode == GenerationMode.POSITIVE else strategy)
    def run(case):
        sent.append(1)
        case.call_and_validate(checks=CHECKS, timeout=20)

    run()
    return len(sent)


def streaming(case):
    if isinstance(case.body, dict):
        case.body["stream"] = True
    return case


@pytest.mark.parametrize("mode, examples, tweak", [(GenerationMode.POSITIVE, 100, None), (GenerationMode.POSITIVE, 40, streaming),
                                                   (GenerationMode.NEGATIVE, 100, None)], ids=["positive", "stream", "negative"])
def test_fuzz_chat_completions(fuzzed, mode, examples, tweak):
    gw, schema = fuzzed
    assert fuzz(schema["/v1/chat/completions"]["POST"], mode, examples, tweak) >= examples * 0.9
    assert httpx.get(f"{gw.url}/health").status_code == 200


def test_fuzz_other_endpoints(fuzzed):
    gw, schema = fuzzed
    for path in ("/v1/models", "/health", "/admin/models"):
        assert fuzz(schema[path]["GET"], GenerationMode.POSITIVE, 10) >= 1


def test_openapi_document(make_gateway, upstream):
    gw = make_gateway(fuzz_config(upstream))
    response = httpx.get(f"{gw.url}/openapi.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    doc = response.json()
    assert doc["openapi"].startswith("3.1")
    assert {"/v1/chat/completions", "/v1/models", "/health"} <= set(doc["paths"])
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    assert {"200", "400", "404", "405", "413", "429", "502", "503", "504"} <= set(chat["responses"])
    assert set(chat["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    request = doc["components"]["schemas"]["ChatRequest"]
    assert request["required"] == ["model", "messages"]
    assert set(request["properties"]["model"]["enum"]) == {m["id"] for m in httpx.get(f"{gw.base_url}/models").json()["data"]}
    error = doc["components"]["schemas"]["Error"]["properties"]["error"]
    assert error["required"] == ["message", "type", "param", "code"]
    assert "security" not in doc  # an open gateway


def test_openapi_needs_the_client_key_and_documents_it(make_gateway, upstream, monkeypatch):
    """The document lists every pool model: it answered anyone while /v1/models asked for a key."""
    monkeypatch.setenv("PM_FUZZ_CLIENT_KEY", "sk-client-fuzz")
    gw = make_gateway({"models": [model("m", upstream)], "server": {"api_keys_env": ["PM_FUZZ_CLIENT_KEY"]}})
    assert httpx.get(f"{gw.url}/openapi.json").status_code == 401  # no key sent
    doc = httpx.get(f"{gw.url}/openapi.json", headers={"authorization": "Bearer sk-client-fuzz"}).json()
    assert doc["security"] == [{"bearer": []}] and doc["paths"]["/health"]["get"]["security"] == []
    assert "401" in doc["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert httpx.get(f"{gw.base_url}/models").status_code == 401
