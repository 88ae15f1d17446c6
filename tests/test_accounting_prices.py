"""Prices (accounting/prices.py): the genai-prices snapshot, config overrides and contracts, and what the gateway
records for a call: cached tokens at the cached rate, streams from their final usage, estimates flagged."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import httpx
import pytest
from genai_prices import Usage, calc_price

from pointsman.accounting.prices import TokenUsage, model_price, read_usage
from pointsman.config.schema import Config, Contract, ModelConfig, Prices
from tests.conftest import ledger_rows


def test_snapshot_price_is_genai_prices_own_calculation():
    usage = TokenUsage(prompt=250_000, completion=2_000, cached=100_000, cache_write=10_000)
    for config, ref, provider in [(ModelConfig(name="mini", model="gpt-4o-mini", provider="openai"), "gpt-4o-mini", "openai"),
                                  (ModelConfig(name="sonnet", model="claude-sonnet-4-5", provider="anthropic"),
                                   "claude-sonnet-4-5", "anthropic")]:
        price = model_price(config)
        assert price.source.startswith("genai-prices:") and price.priced
        for tokens in (usage, usage._replace(prompt=150_000)):  # above and below the long-context tier
            expected = calc_price(Usage(input_tokens=tokens.prompt, output_tokens=tokens.completion,
                                        cache_read_tokens=tokens.cached, cache_write_tokens=tokens.cache_write),
                                  ref, provider_id=provider).total_price
            assert price.cost(tokens) == pytest.approx(float(expected), rel=1e-9)
    sonnet = model_price(ModelConfig(name="s", model="claude-sonnet-4-5", provider="anthropic"))
    assert sonnet.tiers and sonnet.cost(TokenUsage(200_001, 0)) > 1.5 * sonnet.cost(TokenUsage(200_000, 0))


def test_a_config_price_wins_and_a_contract_rate_wins_over_it():
    listed = model_price(ModelConfig(name="gpt-4o-mini", provider="openai"))
    given = model_price(ModelConfig(name="gpt-4o-mini", provider="openai", prices=Prices(input=1.0, output=2.0)))
    assert given.source == "config" and (given.rates.input, given.rates.output) == (1.0, 2.0)
    # the cached rate left out: the snapshot's discount applied to the given input rate
    assert given.rates.cache_read == pytest.approx(1.0 * listed.rates.cache_read / listed.rates.input)
    explicit = model_price(ModelConfig(name="gpt-4o-mini", provider="openai",
                                       prices=Prices(input=1.0, output=2.0, cached_input=0.9, cache_write=1.5)))
    assert (explicit.rates.cache_read, explicit.rates.cache_write) == (0.9, 1.5)
    contract = model_price(ModelConfig(name="gpt-4o-mini", provider="openai", prices=Prices(input=1.0, output=2.0),
                                       contract=Contract(rate=Prices(input=0.05, output=0.1))))
    assert contract.source == "contract" and contract.cost(TokenUsage(1_000_000, 1_000_000)) == pytest.approx(0.15)


def test_usage_reading_keeps_subsets_inside_their_totals():
    usage = read_usage({"prompt_tokens": 100, "completion_tokens": 50, "prompt_tokens_details": {"cached_tokens": 500},
                        "completion_tokens_details": {"reasoning_tokens": 20}, "cache_creation_input_tokens": 7})
    assert usage == TokenUsage(100, 50, cached=100, cache_write=0, reasoning=20)
    assert read_usage(None) is None and read_usage({"total_tokens": 3}) is None


def test_the_snapshot_is_read_without_network():
    code = """
import socket
def refuse(*args, **kwargs):
    raise OSError("network used")
socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
from pointsman.accounting.prices import model_price
from pointsman.config.schema import ModelConfig
price = model_price(ModelConfig(name="gpt-4o", provider="openai"))
assert price.priced, price
print(price.rates.input)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) > 0


def test_pool_models_priced_nowhere_are_named_at_start(caplog):
    from pointsman.gateway.pool import Pool
    from pointsman.providers.transport import ReqwestTransport

    config = Config(models=[ModelConfig(name="mine", provider="openai", base_url="http://127.0.0.1:9/v1"),
                            ModelConfig(name="priced", provider="openai", base_url="http://127.0.0.1:9/v1",
                                        prices=Prices(0.1, 0.2)),
                            ModelConfig(name="listed", model="gpt-4o-mini", provider="openai")])
    with caplog.at_level(logging.WARNING, logger="pointsman.accounting"):
        pool = Pool(config, ReqwestTransport())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "mine" in warnings[0] and "priced" not in warnings[0] and "listed" not in warnings[0]
    assert not pool["mine"].price.priced and pool["listed"].price.priced
    assert pool["listed"].config.prices.input == pool["listed"].price.rates.input  # routing sees the list price


# -- through the gateway, against an upstream whose usage the test chooses ----------------------------------

class _Upstream(BaseHTTPRequestHandler):
    usage: dict[str, Any] | None = None  # None: the upstream reports no usage

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        answer = "four words of answer"
        if not body.get("stream"):
            payload: dict[str, Any] = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                       "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                                                    "finish_reason": "stop"}]}
            if self.usage is not None:
                payload["usage"] = self.usage
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        base = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": body["model"]}
        chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": answer}, "finish_reason": None}]},
                  {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
        if self.usage is not None and (body.get("stream_options") or {}).get("include_usage"):
            chunks.append({**base, "choices": [], "usage": self.usage})
        data = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def usage_upstream() -> Iterator[tuple[str, type[_Upstream]]]:
    handler = type("Handler", (_Upstream,), {"usage": None})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", handler
    server.shutdown()
    server.server_close()


PRICES = {"input": 2.0, "output": 8.0, "cached_input": 0.5}


def _gateway(make_gateway, url: str) -> Any:
    return make_gateway({"models": [{"name": "m", "provider": "openai", "base_url": url, "api_key_env": "PM_NONE",
                                     "prices": PRICES}], "policies": {"auto": {"default": "m"}}})


def _ask(gateway: Any, stream: bool = False) -> httpx.Response:
    body: dict[str, Any] = {"model": "auto", "messages": [{"role": "user", "content": "x" * 400}]}
    if stream:
        body["stream"] = True
    return httpx.post(f"{gateway.base_url}/chat/completions", json=body, timeout=30)


def test_cached_tokens_are_priced_at_the_cached_rate(make_gateway, usage_upstream):
    url, handler = usage_upstream
    handler.usage = {"prompt_tokens": 1000, "completion_tokens": 100, "prompt_tokens_details": {"cached_tokens": 800}}
    gateway = _gateway(make_gateway, url)
    answer = _ask(gateway)
    assert answer.status_code == 200, answer.text
    expected = (200 * 2.0 + 800 * 0.5 + 100 * 8.0) / 1e6
    assert float(answer.headers["x-pointsman-cost-usd"]) == pytest.approx(expected, abs=1e-8)
    row = ledger_rows(gateway)[-1]
    assert row["cost_usd"] == pytest.approx(expected) and row["cached_tokens"] == 800 and row["cost_estimated"] == 0


def test_a_stream_is_priced_from_its_final_usage(make_gateway, usage_upstream):
    url, handler = usage_upstream
    handler.usage = {"prompt_tokens": 3000, "completion_tokens": 700, "prompt_tokens_details": {"cached_tokens": 1000}}
    gateway = _gateway(make_gateway, url)
    answer = _ask(gateway, stream=True)
    assert answer.status_code == 200 and answer.headers["x-pointsman-cost-usd"] == "pending"
    expected = (2000 * 2.0 + 1000 * 0.5 + 700 * 8.0) / 1e6
    assert f"cost_usd={expected:.8f}" in answer.text  # the stream's closing comment
    row = ledger_rows(gateway)[-1]
    assert row["stream"] == 1 and row["cost_usd"] == pytest.approx(expected) and row["prompt_tokens"] == 3000
    assert row["cost_estimated"] == 0


@pytest.mark.parametrize("stream", [False, True])
def test_a_call_without_usage_is_estimated_and_flagged(make_gateway, usage_upstream, stream):
    url, handler = usage_upstream
    handler.usage = None
    gateway = _gateway(make_gateway, url)
    assert _ask(gateway, stream=stream).status_code == 200
    row = ledger_rows(gateway)[-1]
    assert row["cost_estimated"] == 1
    # about four characters a token: 400 prompt characters, the 20-character answer
    assert (row["prompt_tokens"], row["completion_tokens"]) == (100, 5)
    assert row["cost_usd"] == pytest.approx((100 * 2.0 + 5 * 8.0) / 1e6)
