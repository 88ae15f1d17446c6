"""Issue 17, the first hour of a new user: what the gateway and the `pointsman` command say when something is
missing or unreachable, and what `--help` tells before anything is tried."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx


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
