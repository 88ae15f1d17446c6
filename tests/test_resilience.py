"""Upstream faults through the real server: retries, Retry-After, fallback, cooldown, timeouts, streams."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.conftest import ledger_rows, model

HELLO = [{"role": "user", "content": "hello"}]


def attempts(row) -> list[list]:
    return json.loads(row["attempts"])


@pytest.fixture
def client_for():
    def make(server):
        return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=30)
    return make


def test_retries_a_500_then_answers(make_gateway, upstream, client_for):
    gw = make_gateway({"models": [model("a", upstream, "flaky-500", max_retries=2)]})
    upstream.script("flaky-500", ["status:500", "status:503", "echo"])
    raw = client_for(gw).chat.completions.with_raw_response.create(model="a", messages=HELLO)
    assert raw.parse().choices[0].message.content == "echo: hello"
    assert raw.headers["x-pointsman-attempts"] == "3"
    row = ledger_rows(gw)[-1]
    assert [a[1] for a in attempts(row)] == ["upstream_error", "upstream_error", "ok"]


def test_honours_retry_after(make_gateway, upstream, client_for):
    gw = make_gateway({"models": [model("a", upstream, "ra-429", max_retries=1)]})
    upstream.script("ra-429", ["status:429:1", "echo"])
    started = time.monotonic()
    client_for(gw).chat.completions.create(model="a", messages=HELLO)
    assert time.monotonic() - started >= 1.0


def test_long_retry_after_falls_back_instead_of_waiting(make_gateway, upstream, client_for):
    gw = make_gateway({"models": [model("a", upstream, "ra-long", max_retries=3), model("b", upstream, prices={"input": 9})],
                       "server": {"max_retry_after_s": 2}})
    upstream.script("ra-long", ["status:429:60"])
    started = time.monotonic()
    raw = client_for(gw).chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    assert time.monotonic() - started < 2
    assert raw.headers["x-pointsman-model"] == "b"


def test_rate_limit_everywhere_gives_429_with_retry_after(make_gateway, upstream, client_for):
    gw = make_gateway({"models": [model("a", upstream, "status:429:30", max_retries=0)]})
    with pytest.raises(openai.RateLimitError) as caught:
        client_for(gw).chat.completions.create(model="a", messages=HELLO)
    assert caught.value.response.headers["retry-after"] == "30"


def test_falls_back_to_the_next_model_when_the_first_is_down(make_gateway, upstream, client_for):
    gw = make_gateway({"models": [model("down", upstream, "status:503", max_retries=1),
                                  model("up", upstream, prices={"input": 1})]})
    raw = client_for(gw).chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    assert raw.headers["x-pointsman-model"] == "up"
    row = ledger_rows(gw)[-1]
    assert [(a[0], a[1]) for a in attempts(row)] == [("down", "upstream_error"), ("down", "upstream_error"), ("up", "ok")]
    assert row["chosen_model"] == "up" and row["status"] == 200


def test_cooldown_skips_a_failing_model_then_lets_a_trial_through(make_gateway, upstream, client_for):
    gw = make_gateway({"models": [model("bad", upstream, "status:500", max_retries=0), model("good", upstream, prices={"input": 1})],
                       "server": {"cooldown_failures": 2, "cooldown_s": 0.5}})
    client = client_for(gw)
    for _ in range(2):
        client.chat.completions.create(model="auto", messages=HELLO)
    calls = upstream.stats()["counts"]["status:500"]
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    assert raw.headers["x-pointsman-model"] == "good"
    assert upstream.stats()["counts"]["status:500"] == calls  # cooling down: not called
    assert attempts(ledger_rows(gw)[-1])[0][1] == "cooldown"
    time.sleep(0.6)
    client.chat.completions.create(model="auto", messages=HELLO)
    assert upstream.stats()["counts"]["status:500"] == calls + 1  # half-open: one trial


def test_all_models_cooling_down_is_a_503(make_gateway, upstream, client_for):
    gw = make_gateway({"models": [model("bad", upstream, "status:502", max_retries=0)],
                       "server": {"cooldown_failures": 1, "cooldown_s": 30}})
    client = client_for(gw)
    with pytest.raises(openai.APIStatusError) as first:
        client.chat.completions.create(model="bad", messages=HELLO)
    assert first.value.status_code == 502 and "test upstream says 502" in first.value.message
    with pytest.raises(openai.APIStatusError) as second:
        client.chat.completions.create(model="bad", messages=HELLO)
    assert second.value.status_code == 503 and second.value.body["code"] == "all_models_cooling_down"


def test_read_timeout_is_a_504_and_falls_back(make_gateway, upstream, client_for):
    gw = make_gateway({"models": [model("slow", upstream, "slow:2000", timeout_s=0.3, max_retries=0)]})
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        client_for(gw).chat.completions.create(model="slow", messages=HELLO)
    assert caught.value.status_code == 504 and time.monotonic() - started < 1.5
    gw2 = make_gateway({"models": [model("slow", upstream, "slow:2000", timeout_s=0.3, max_retries=0),
                                   model("fast", upstream, prices={"input": 1})]})
    raw = client_for(gw2).chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    assert raw.headers["x-pointsman-model"] == "fast"


def test_connect_error_is_a_502(make_gateway, client_for):
    gw = make_gateway({"models": [{"name": "nowhere", "provider": "openai", "base_url": "http://127.0.0.1:9/v1",
                                   "max_retries": 0, "connect_timeout_s": 1}]})
    with pytest.raises(openai.APIStatusError) as caught:
        client_for(gw).chat.completions.create(model="nowhere", messages=HELLO)
    assert caught.value.status_code == 502 and "cannot connect" in caught.value.message


@pytest.mark.parametrize("behaviour, status, text", [
    ("reset", 502, "connection"), ("malformed", 502, "invalid JSON"), ("huge:40", 502, "too large")])
def test_broken_upstream_answers_are_clear_502s(make_gateway, upstream, client_for, behaviour, status, text):
    gw = make_gateway({"models": [model("m", upstream, behaviour, max_retries=0)]})
    with pytest.raises(openai.APIStatusError) as caught:
        client_for(gw).chat.completions.create(model="m", messages=HELLO)
    assert caught.value.status_code == status and text in caught.value.message
    assert ledger_rows(gw)[-1]["status"] == status


def test_upstream_400_is_not_retried_nor_fallen_back(make_gateway, upstream, client_for):
    gw = make_gateway({"models": [model("a", upstream, "status:400", max_retries=3), model("b", upstream, prices={"input": 1})]})
    before = upstream.stats()["counts"].get("status:400", 0)  # the upstream is shared by the session's tests
    with pytest.raises(openai.BadRequestError):
        client_for(gw).chat.completions.create(model="auto", messages=HELLO)
    assert upstream.stats()["counts"]["status:400"] - before == 1


def test_stream_falls_back_before_the_first_chunk(make_gateway, upstream, client_for):
    gw = make_gateway({"models": [model("down", upstream, "status:503", max_retries=0), model("up", upstream, prices={"input": 1})]})
    chunks = list(client_for(gw).chat.completions.create(model="auto", messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: hello"


def test_stream_cut_midway_ends_with_an_error_event(make_gateway, upstream, client_for):
    gw = make_gateway({"models": [model("m", upstream, "cutoff", max_retries=0)]})
    with pytest.raises(openai.APIError) as caught:
        list(client_for(gw).chat.completions.create(model="m", messages=[{"role": "user", "content": "a b c d e"}], stream=True))
    assert "upstream stream failed" in str(caught.value)
    row = ledger_rows(gw)[-1]
    assert row["status"] == 502 and "stream broke" in row["error"]


def test_stalled_stream_times_out(make_gateway, upstream, client_for):
    gw = make_gateway({"models": [model("m", upstream, "stall:3000", timeout_s=0.3, max_retries=0)]})
    started = time.monotonic()
    with pytest.raises(openai.APIError):
        list(client_for(gw).chat.completions.create(model="m", messages=HELLO, stream=True))
    assert time.monotonic() - started < 2
    assert "timed out" in ledger_rows(gw)[-1]["error"]


def test_stream_passes_chunks_through_as_they_arrive(make_gateway, upstream):
    """The first chunk reaches the client while the upstream is still stalling: nothing is buffered."""
    gw = make_gateway({"models": [model("m", upstream, "stall:800", timeout_s=5)]})
    started = time.monotonic()
    with httpx.stream("POST", f"{gw.base_url}/chat/completions", timeout=10,
                      json={"model": "m", "messages": HELLO, "stream": True}) as response:
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data:"))
        first_at = time.monotonic() - started
        rest = [line for line in lines if line.startswith("data:")]
    assert '"role":"assistant"' in first and first_at < 0.6
    assert rest[-1] == "data: [DONE]" and time.monotonic() - started >= 0.8


def test_client_disconnect_mid_stream_is_recorded_at_once(make_gateway, upstream):
    gw = make_gateway({"models": [model("m", upstream, "stall:4000", timeout_s=10)]})
    with httpx.stream("POST", f"{gw.base_url}/chat/completions", json={"model": "m", "messages": HELLO, "stream": True}) as response:
        next(response.iter_lines())
    deadline = time.monotonic() + 2  # well before the upstream's stall ends
    while time.monotonic() < deadline:
        rows = ledger_rows(gw)
        if rows:
            break
        time.sleep(0.05)
    assert rows[-1]["status"] == 499


def test_a_feature_one_model_lacks_moves_on_to_the_next_without_penalty(make_gateway, upstream, client_for):
    from tests.conftest import API_KEY_ENV

    gw = make_gateway({"models": [{"name": "claude", "provider": "anthropic", "base_url": upstream.url, "model": "echo",
                                   "api_key_env": API_KEY_ENV, "max_retries": 3},
                                  model("gpt", upstream, prices={"input": 5})],
                       "server": {"cooldown_failures": 1}})
    raw = client_for(gw).chat.completions.with_raw_response.create(model="auto", messages=HELLO, n=2)
    assert raw.headers["x-pointsman-model"] == "gpt" and raw.headers["x-pointsman-attempts"] == "2"
    assert [a[1] for a in attempts(ledger_rows(gw)[-1])] == ["unsupported_by_model", "ok"]
    assert gw.gateway.pool["claude"].breaker.state == "closed"


# -- the breaker: one failure policy (issue 15's defects: each of these failed before the fix) -------------------

def _anthropic(name: str, upstream, upstream_model: str, **extra) -> dict:
    from tests.conftest import API_KEY_ENV

    return {"name": name, "provider": "anthropic", "base_url": upstream.url, "model": upstream_model,
            "api_key_env": API_KEY_ENV, **extra}


def test_a_model_specific_refusal_during_the_trial_gives_the_trial_back(make_gateway, upstream, client_for):
    """Half-open, a request the model cannot take (n=2 to Anthropic) used to keep the trial slot: 503 for good."""
    gw = make_gateway({"models": [_anthropic("claude", upstream, "trial-refused", max_retries=0)],
                       "server": {"cooldown_failures": 1, "cooldown_s": 0.3}})
    upstream.script("trial-refused", ["status:500", "echo", "echo"])
    client = client_for(gw)
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="claude", messages=HELLO)  # opens the breaker
    time.sleep(0.35)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="claude", messages=HELLO, n=2)  # half-open: refused before any call
    answer = client.chat.completions.create(model="claude", messages=HELLO)  # is the trial, and closes the breaker
    assert answer.choices[0].message.content == "echo: hello"
    assert gw.gateway.pool["claude"].breaker.state == "closed"


def test_an_unforwardable_body_during_the_trial_gives_the_trial_back(make_gateway, upstream, client_for):
    """Half-open, a body nested too deeply to re-encode raised past the dispatcher and kept the trial slot."""
    gw = make_gateway({"models": [model("m", upstream, "trial-deep", max_retries=0)],
                       "server": {"cooldown_failures": 1, "cooldown_s": 0.3}})
    upstream.script("trial-deep", ["status:500", "echo"])
    client = client_for(gw)
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="m", messages=HELLO)
    time.sleep(0.35)
    nested = b"[" * 300 + b"]" * 300
    body = (b'{"model": "m", "temperature": 1, "messages": [{"role": "user", "content": [{"type": "text", '
            b'"text": "hi", "x": ' + nested + b"}]}]}")
    refused = httpx.post(f"{gw.base_url}/chat/completions", content=body, headers={"content-type": "application/json"})
    assert refused.status_code == 400
    assert client.chat.completions.create(model="m", messages=HELLO).choices[0].message.content == "echo: hello"


def test_one_request_counts_once_against_a_shared_model(make_gateway, upstream, client_for):
    """Three failed tries of one request (max_retries 2) used to reach cooldown_failures 3 and cool the model for
    every tenant."""
    gw = make_gateway({"models": [model("shared", upstream, "once-500", max_retries=2)],
                       "server": {"cooldown_failures": 3, "cooldown_s": 30, "retry_backoff_s": 0.01}})
    upstream.script("once-500", ["status:500", "status:500", "status:500", "echo"])
    client = client_for(gw)
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="shared", messages=HELLO)
    assert attempts(ledger_rows(gw)[-1]) and len(attempts(ledger_rows(gw)[-1])) == 3
    assert client.chat.completions.create(model="shared", messages=HELLO).choices[0].message.content == "echo: hello"


def test_a_request_the_upstream_refuses_does_not_count_against_the_model(make_gateway, upstream, client_for):
    gw = make_gateway({"models": [model("m", upstream, "refuse-400", max_retries=0)],
                       "server": {"cooldown_failures": 1, "cooldown_s": 30}})
    upstream.script("refuse-400", ["status:400", "echo"])
    client = client_for(gw)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="m", messages=HELLO)
    assert gw.gateway.pool["m"].breaker.state == "closed"
    assert client.chat.completions.create(model="m", messages=HELLO).choices[0].message.content == "echo: hello"


def test_refused_credentials_are_not_retried_and_do_not_cool_the_model(make_gateway, upstream, client_for):
    gw = make_gateway({"models": [model("keyless", upstream, "status:401", max_retries=3),
                                  model("good", upstream, prices={"input": 9})],
                       "server": {"cooldown_failures": 1}})
    raw = client_for(gw).chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    assert raw.headers["x-pointsman-model"] == "good"
    assert [a[1] for a in attempts(ledger_rows(gw)[-1])] == ["upstream_auth_error", "ok"]
    assert gw.gateway.pool["keyless"].breaker.state == "closed"


def test_breaker_release_gives_back_a_half_open_trial():
    from pointsman.gateway.resilience import CircuitBreaker

    breaker = CircuitBreaker(threshold=1, cooldown_s=0.0)
    breaker.record_failure()
    assert breaker.allow() and not breaker.allow()  # one trial at a time
    breaker.release()
    assert breaker.allow()


def test_a_request_too_long_for_a_model_falls_back_to_a_larger_window(make_gateway, upstream, client_for):
    """A provider's 400 'context length exceeded' was final; another model with a larger window can answer."""
    gw = make_gateway({"models": [model("small", upstream, "context:8192", context_window=8192),
                                  model("mid", upstream, context_window=4096, prices={"input": 1}),
                                  model("big", upstream, context_window=128000, prices={"input": 5})],
                       "policies": {"auto": {"default": "small", "fallbacks": ["mid", "big"]}}})
    raw = client_for(gw).chat.completions.with_raw_response.create(model="auto", messages=HELLO)
    assert raw.headers["x-pointsman-model"] == "big"
    assert [(a[0], a[1]) for a in attempts(ledger_rows(gw)[-1])] == [
        ("small", "context_length_exceeded"), ("mid", "window_too_small"), ("big", "ok")]
    assert gw.gateway.pool["small"].breaker.state == "closed"
    with pytest.raises(openai.BadRequestError) as refused:  # nothing larger: the upstream's own 400
        client_for(gw).chat.completions.create(model="small", messages=HELLO)
    assert "maximum context length" in refused.value.message


def test_a_client_that_leaves_a_plain_request_is_a_499_and_the_upstream_call_stops(make_gateway, upstream):
    """Recorded as 200 while the upstream call ran on; now cancelled at once and recorded as 499."""
    import socket

    gw = make_gateway({"models": [model("m", upstream, "slow:4000", timeout_s=10)]})
    body = json.dumps({"model": "m", "messages": HELLO}).encode()
    host, port = gw.base_url.split("//")[1].split("/")[0].split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        time.sleep(0.3)
    deadline = time.monotonic() + 2  # well before the upstream's 4 s answer
    rows = []
    while time.monotonic() < deadline and not rows:
        rows = ledger_rows(gw)
        time.sleep(0.05)
    assert rows and rows[-1]["status"] == 499
    assert [a[1] for a in attempts(rows[-1])] == ["cancelled"]


def test_a_stream_the_client_left_is_billed_for_what_was_sent(make_gateway, upstream):
    """A cancelled stream recorded 0 tokens and $0 for the chunks the client had already received."""
    gw = make_gateway({"models": [model("m", upstream, "stall:4000", timeout_s=10, prices={"input": 1, "output": 2})]})
    with httpx.stream("POST", f"{gw.base_url}/chat/completions",
                      json={"model": "m", "messages": HELLO, "stream": True}) as response:
        next(response.iter_lines())
    deadline = time.monotonic() + 2
    rows = []
    while time.monotonic() < deadline and not rows:
        rows = ledger_rows(gw)
        time.sleep(0.05)
    assert rows[-1]["status"] == 499 and rows[-1]["prompt_tokens"] > 0 and rows[-1]["cost_usd"] > 0
    assert "estimated" in rows[-1]["error"]
