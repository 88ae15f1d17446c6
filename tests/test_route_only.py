"""POST /v1/route (the decision without a model call) and POST /v1/embeddings (passed through to pool models of
kind embedding), on the running gateway (issue 22)."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import ledger_rows, model

ROOT = Path(__file__).resolve().parents[1]
LITELLM_PYTHON = ROOT / "bench" / ".venv-litellm" / "bin" / "python"


@pytest.fixture
def gateway(make_gateway, upstream):
    return make_gateway({
        "models": [
            model("cheap", upstream, prices={"input": 0.5, "output": 1.5}),
            model("strong", upstream, prices={"input": 10, "output": 30}, capabilities=["tools"]),
            model("embed", upstream, behaviour="embedder", kind="embedding", prices={"input": 0.02, "output": 0}),
        ],
        "policies": {"auto": {"rules": [{"name": "proofs", "when": {"keywords": ["prove"]}, "route": "strong"}],
                              "default": "cheap"},
                     "cascading": {"default": "strong", "cascade": {"models": ["cheap", "strong"], "mode": "always",
                                                                    "verifiers": ["finish", "refusal"]}}},
        "server": {"cache": {"enabled": True, "semantic": False}},
    })


def route(gateway, body, **kwargs):
    return httpx.post(f"{gateway.url}/v1/route", json=body, **kwargs)


def test_route_answers_the_decision_without_calling_a_model(gateway, upstream):
    before = dict(upstream.stats()["counts"])
    answer = route(gateway, {"model": "auto", "messages": [{"role": "user", "content": "prove it " * 100}],
                             "max_tokens": 50}).json()
    assert answer["object"] == "route.decision" and answer["model"] == "strong" and answer["tier"] == "rules"
    assert answer["reason"] == "rule proofs" and answer["fallbacks"] == ["cheap"]
    costs = {c["model"]: c["estimated_cost_usd"] for c in answer["candidates"]}
    assert set(costs) == {"cheap", "strong"} and costs["strong"] > costs["cheap"] > 0  # never the embedding model
    assert answer["cascade"] is None and answer["cache"]["verdict"] == "not_cacheable"
    assert upstream.stats()["counts"] == before and ledger_rows(gateway) == []


def test_route_shows_the_cascade_plan_and_the_cache_verdict(gateway):
    body = {"model": "router/cascading", "temperature": 0, "messages": [{"role": "user", "content": "2+2?"}]}
    answer = route(gateway, body).json()
    assert answer["cascade"]["ladder"] == ["cheap", "strong"] and "cascade cheap -> strong" in answer["cascade"]["describe"]
    assert answer["cache"] == {"verdict": "miss"}
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    client.chat.completions.create(**body)
    assert route(gateway, body).json()["cache"]["verdict"] == "hit"


def test_route_refuses_what_chat_refuses(gateway):
    assert route(gateway, {"model": "nope", "messages": [{"role": "user", "content": "hi"}]}).status_code == 404
    bad = route(gateway, {"model": "auto", "messages": []})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request"
    assert httpx.get(f"{gateway.url}/v1/route").status_code == 405


def test_embeddings_pass_through_with_cost_and_ledger_row(gateway, upstream):
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    raw = client.embeddings.with_raw_response.create(model="embed", input=["one two three", "four"])
    result = raw.parse()
    assert [d.embedding for d in result.data] == [[3.0, 13.0, 0.5, -0.5], [1.0, 4.0, 0.5, -0.5]]
    assert raw.headers["x-pointsman-model"] == "embed" and float(raw.headers["x-pointsman-cost-usd"]) == pytest.approx(4 * 0.02 / 1e6)
    assert upstream.stats()["last_body"]["model"] == "embedder"
    assert client.embeddings.create(model="auto", input="x").data[0].embedding[0] == 1.0  # the cheapest embedding model
    rows = ledger_rows(gateway)
    assert [(r["chosen_model"], r["prompt_tokens"], r["status"]) for r in rows] == [("embed", 4, 200), ("embed", 1, 200)]
    assert rows[0]["cost_usd"] == pytest.approx(4 * 0.02 / 1e6)
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="cheap", input="x")  # a chat model serves no embeddings
    chat = client.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": "hi"}])
    assert chat.headers["x-pointsman-model"] == "cheap"  # and an embedding model answers no chat


def test_embeddings_upstream_failure_is_retried_and_recorded(gateway, upstream):
    upstream.script("embedder", ["status:503", "embedder"])
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused")
    raw = client.embeddings.with_raw_response.create(model="embed", input="again")
    assert raw.headers["x-pointsman-attempts"] == "2"
    upstream.script("embedder", ["nousage"])
    client.embeddings.create(model="embed", input="no usage here")
    row = ledger_rows(gateway)[-1]
    assert row["cost_estimated"] == 1 and row["prompt_tokens"] == 4


def test_an_embeddings_body_too_deep_to_forward_is_a_400_and_a_row(gateway):
    nested = "[" * 300 + "]" * 300
    body = ('{"model": "embed", "input": "x", "extra": ' + nested + "}").encode()
    response = httpx.post(f"{gateway.base_url}/embeddings", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json", response.text
    row = ledger_rows(gateway)[-1]
    assert row["id"] == response.headers["x-pointsman-request-id"] and row["status"] == 400


def test_litellm_routes_through_pointsman(gateway, upstream):
    """LiteLLM 1.108.7 with PointsmanRouting (examples/litellm_routing.py) picks the deployment /v1/route names. Needs
    LiteLLM's own venv (bench/gateway/setup.sh makes bench/.venv-litellm): skipped without it, CI included."""
    if not LITELLM_PYTHON.exists():
        pytest.skip("bench/.venv-litellm does not exist (bash bench/gateway/setup.sh makes it)")
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT / 'examples')!r})
        from litellm_routing import make_router
        deployments = {{name: {{"model": f"openai/say:{{name}}", "api_base": "{upstream.url}/v1", "api_key": "k"}}
                        for name in ("cheap", "strong")}}
        router = make_router({gateway.url!r}, deployments)
        for text in ("hello", "prove that 2 is prime"):
            answer = router.completion(model="smart", messages=[{{"role": "user", "content": text}}])
            print(answer.choices[0].message.content)
    """)
    done = subprocess.run([str(LITELLM_PYTHON), "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "LITELLM_LOG": "ERROR"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["cheap", "strong"]


def test_fuzz_the_agent_paths_against_their_openapi_schemas(make_gateway, upstream):
    """Generated valid bodies for /v1/route, /v1/messages and /v1/responses: no gateway 5xx, answers conform to
    the published document (the full fuzz run is bench/fuzz)."""
    from schemathesis import GenerationMode

    from tests.test_fuzz_openapi import fuzz, fuzz_config

    gw = make_gateway(fuzz_config(upstream))
    import schemathesis

    schema = schemathesis.openapi.from_url(f"{gw.url}/openapi.json")
    for path in ("/v1/route", "/v1/messages", "/v1/responses"):
        assert fuzz(schema[path]["POST"], GenerationMode.POSITIVE, 25) >= 20
