"""Issue 17, the first hour of a new user: what the gateway and the `pointsman` command say when something is
missing or unreachable, and what `--help` tells before anything is tried."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import httpx
import pytest


HELLO = [{"role": "user", "content": "hello"}]


def pointsman(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real `pointsman` entry point, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "pointsman.cli", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_no_network_names_every_model_tried_in_order(make_gateway):
    """With every upstream unreachable, the error named one upstream URL and no model: the user could not tell
    which models had been tried, nor that the last one had failed too."""
    def nowhere(name: str, price: float) -> dict:
        return {"name": name, "provider": "openai", "base_url": "http://127.0.0.1:9/v1", "max_retries": 0,
                "connect_timeout_s": 1, "prices": {"input": price, "output": price}}

    gw = make_gateway({"models": [nowhere("cheap-one", 1), nowhere("middle-one", 2), nowhere("dear-one", 3)],
                       "policies": {"auto": {"default": "cheap-one", "fallbacks": ["middle-one", "dear-one"]}}})
    response = httpx.post(f"{gw.base_url}/chat/completions", json={"model": "auto", "messages": HELLO}, timeout=30)
    assert response.status_code == 502
    message = response.json()["error"]["message"]
    assert "cannot connect" in message
    positions = [message.find(name) for name in ("cheap-one", "middle-one", "dear-one")]
    assert -1 not in positions and positions == sorted(positions), message  # every model, in the order tried
    assert "after 3 attempts" in message


def test_a_single_model_error_names_it(make_gateway):
    gw = make_gateway({"models": [{"name": "nowhere", "provider": "openai", "base_url": "http://127.0.0.1:9/v1",
                                   "max_retries": 1, "connect_timeout_s": 1}], "server": {"retry_backoff_s": 0}})
    message = httpx.post(f"{gw.base_url}/chat/completions", json={"model": "nowhere", "messages": HELLO},
                         timeout=30).json()["error"]["message"]
    assert message.startswith("nowhere: cannot connect to upstream") and message.endswith("(after 2 attempts)")


def test_eval_without_prices_says_what_is_missing(tmp_path):
    """`pointsman eval` on outcomes without costs printed numpy's RuntimeWarnings, then `no points`."""
    rows = []
    for i in range(12):
        rows += [{"prompt": f"question {i} about pears", "model": "small", "score": i % 2},
                 {"prompt": f"question {i} about pears", "model": "big", "score": 1}]
    data = tmp_path / "outcomes.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    done = pointsman("eval", str(data), "--folds", "3", "--quick", "--out", str(tmp_path / "rep"))
    assert done.returncode == 2, done.stderr
    assert "--prices" in done.stderr and "small" in done.stderr and "big" in done.stderr
    assert "Warning" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    # with prices but no output tokens in the data, the predicted costs were NaN (numpy warned, routing on nothing)
    prices = tmp_path / "prices.csv"
    prices.write_text("model,input_usd_per_mtok,output_usd_per_mtok\nsmall,0.2,0.6\nbig,5,15\n")
    done = pointsman("eval", str(data), "--folds", "3", "--quick", "--out", str(tmp_path / "rep"), "--prices", str(prices))
    assert done.returncode == 0 and "Warning" not in done.stderr, done.stderr
    assert "| logistic |" in done.stdout


def cli_parsers(monkeypatch) -> dict[str, argparse.ArgumentParser]:
    """Every parser of the `pointsman` command (the top level and each subcommand), as main() builds them."""
    from pointsman import cli

    class Built(Exception):
        pass

    def capture(self, *args, **kwargs):
        raise Built(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(Built) as built:
        cli.main([])
    top = built.value.args[0]
    parsers = {"pointsman": top}
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers.update(action.choices)
    return parsers
