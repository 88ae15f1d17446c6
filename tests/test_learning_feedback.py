"""POST /v1/feedback against the real server on loopback: ownership, idempotency, validation, durability
under kill -9, and the stored rows `pointsman train --from-ledger` reads."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import API_KEY_ENV, UPSTREAM_SECRET, model
from tests.servers import serve_cli

KEY_A, KEY_B = "sk-feedback-tenant-a", "sk-feedback-tenant-b"


@pytest.fixture
def keys(monkeypatch):
    monkeypatch.setenv("PM_FB_KEY_A", KEY_A)
    monkeypatch.setenv("PM_FB_KEY_B", KEY_B)


def config(upstream, **server) -> dict:
    return {"models": [model("small", upstream, prices={"input": 0.1, "output": 0.3}),
                       model("big", upstream, prices={"input": 3, "output": 15})],
            "policies": {"auto": {"rules": [{"name": "code", "when": {"regex": "def "}, "route": "big"}],
                                  "default": "small"}},
            "server": {"api_keys_env": ["PM_FB_KEY_A", "PM_FB_KEY_B"], **server},
            "learning": {"store_prompts": True}}


def ask(gateway, text: str, key: str = KEY_A) -> str:
    client = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=[{"role": "user", "content": text}])
    return raw.headers["x-pointsman-request-id"]


def feedback(url: str, body: dict, key: str | None = KEY_A) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{url}/v1/feedback", json=body, headers=headers, timeout=10)


def rows(path: Path, table: str) -> list[dict]:
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute(f"SELECT * FROM {table}")]
    finally:
        db.close()


def test_feedback_is_stored_once_per_request_and_key_and_the_latest_score_wins(make_gateway, upstream, keys):
    gateway = make_gateway(config(upstream))
    request_id = ask(gateway, "def f(): pass")
    first = feedback(gateway.url, {"request_id": request_id, "score": 0.25, "comment": "too terse"})
    assert first.status_code == 200, first.text
    assert first.json() == {"object": "feedback", "request_id": request_id, "model": "big", "score": 0.25, "created": True}
    again = feedback(gateway.url, {"request_id": request_id, "verdict": "accept"})
    assert again.status_code == 200 and again.json()["created"] is False and again.json()["score"] == 1.0
    stored = rows(gateway.ledger_path, "feedback")
    assert len(stored) == 1 and stored[0]["score"] == 1.0 and stored[0]["comment"] is None
    prompts = rows(gateway.ledger_path, "prompts")
    assert [p["text"] for p in prompts if p["id"] == request_id] == ["def f(): pass"]


def test_only_the_key_that_made_the_request_may_score_it(make_gateway, upstream, keys):
    gateway = make_gateway(config(upstream))
    request_id = ask(gateway, "hello", key=KEY_A)
    other = feedback(gateway.url, {"request_id": request_id, "score": 0.0}, key=KEY_B)
    made_up = feedback(gateway.url, {"request_id": "req_000000000000deadbeef", "score": 0.0})
    for response in (other, made_up):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "request_not_found"
        assert response.json()["error"]["param"] == "request_id"
    assert feedback(gateway.url, {"request_id": request_id, "score": 0.0}, key=None).status_code == 401
    assert rows(gateway.ledger_path, "feedback") == []


@pytest.mark.parametrize("body, param", [
    ({"request_id": "r", "score": 1.5}, "score"),
    ({"request_id": "r", "score": "good"}, "score"),
    ({"request_id": "r"}, "score"),
    ({"request_id": "r", "score": 1, "verdict": "accept"}, "score"),
    ({"request_id": "r", "verdict": "maybe"}, "verdict"),
    ({"score": 1}, "request_id"),
    ({"request_id": "r", "score": 1, "extra": 1}, "extra"),
])
def test_bad_feedback_gets_a_400_naming_the_field(make_gateway, upstream, keys, body, param):
    gateway = make_gateway(config(upstream))
    response = feedback(gateway.url, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_feedback_on_a_request_that_failed_is_refused(make_gateway, upstream, keys):
    gateway = make_gateway({**config(upstream), "models": [model("small", upstream, "status:400"), model("big", upstream)]})
    client = openai.OpenAI(base_url=gateway.base_url, api_key=KEY_A, max_retries=0)
    with pytest.raises(openai.BadRequestError) as failed:
        client.chat.completions.create(model="small", messages=[{"role": "user", "content": "x"}])
    request_id = failed.value.response.headers["x-pointsman-request-id"]
    response = feedback(gateway.url, {"request_id": request_id, "score": 1})
    assert response.status_code == 400 and response.json()["error"]["code"] == "request_not_answered"


def test_feedback_right_after_the_answer_finds_the_request_before_the_ledger_flushes(make_gateway, upstream, keys):
    gateway = make_gateway(config(upstream, ledger_flush_interval_s=60))
    request_id = ask(gateway, "hello")
    response = feedback(gateway.url, {"request_id": request_id, "verdict": "reject"})
    assert response.status_code == 200, response.text


def test_an_open_gateway_takes_feedback_from_anyone(make_gateway, upstream):
    gateway = make_gateway({**config(upstream), "server": {}})
    request_id = ask(gateway, "hello", key="anything")
    assert feedback(gateway.url, {"request_id": request_id, "score": 0.5}, key=None).status_code == 200


def test_a_reject_withdraws_the_answer_from_the_cache(make_gateway, upstream, keys):
    gateway = make_gateway({**config(upstream), "server": {"api_keys_env": ["PM_FB_KEY_A", "PM_FB_KEY_B"],
                                                          "cache": {"enabled": True, "semantic": False}}})
    client = openai.OpenAI(base_url=gateway.base_url, api_key=KEY_A, max_retries=0)

    def tier() -> tuple[str, str]:
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "cache me"}], temperature=0)
        return raw.headers["x-pointsman-tier"], raw.headers["x-pointsman-request-id"]

    first_tier, first_id = tier()
    assert first_tier != "cache" and tier()[0] == "cache"
    assert feedback(gateway.url, {"request_id": first_id, "verdict": "reject"}).status_code == 200
    assert tier()[0] != "cache"


def test_acknowledged_feedback_survives_kill_9(tmp_path, upstream):
    """Feedback is answered 200 only once committed: every acknowledged row is in the file after SIGKILL."""
    ledger = tmp_path / "ledger.db"
    path = tmp_path / "config.yaml"
    path.write_text(f"""
models:
  - {{name: small, provider: openai, base_url: "{upstream.url}/v1", model: echo, api_key_env: {API_KEY_ENV}}}
  - {{name: big, provider: openai, base_url: "{upstream.url}/v1", model: echo, api_key_env: {API_KEY_ENV}}}
policies: {{auto: {{default: small}}}}
server: {{ledger_url: "sqlite:///{ledger}", ledger_flush_interval_s: 0.1, cache: {{enabled: false}}}}
learning: {{store_prompts: true}}
""")
    process, url = serve_cli(["--config", str(path)], tmp_path, {**os.environ, API_KEY_ENV: UPSTREAM_SECRET},
                             output=subprocess.DEVNULL, timeout_s=30)
    acknowledged: list[str] = []
    stop = threading.Event()

    def give_feedback() -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            for i in range(100_000):
                if stop.is_set():
                    return
                try:
                    answer = client.post("/v1/chat/completions", json={
                        "model": "auto", "messages": [{"role": "user", "content": f"q {i}"}]})
                    request_id = answer.headers["x-pointsman-request-id"]
                    if client.post("/v1/feedback", json={"request_id": request_id, "score": 1}).status_code == 200:
                        acknowledged.append(request_id)
                except httpx.HTTPError:
                    return

    try:
        worker = threading.Thread(target=give_feedback)
        worker.start()
        deadline = time.monotonic() + 20
        while len(acknowledged) < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        stop.set()
        worker.join(15)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
    assert len(acknowledged) >= 60, f"too little feedback before the kill: {len(acknowledged)}"
    stored = {row["request_id"] for row in rows(ledger, "feedback")}
    lost = [r for r in acknowledged if r not in stored]
    assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged feedback rows lost: {lost[:5]}"


def test_feedback_works_across_workers(tmp_path, upstream):
    """With --workers 2 a request and its feedback may land on different workers, the request still in the other
    worker's ledger buffer: the feedback waits for it (within the flush interval) instead of answering 404."""
    ledger = tmp_path / "ledger.db"
    path = tmp_path / "config.yaml"
    path.write_text(f"""
models:
  - {{name: small, provider: openai, base_url: "{upstream.url}/v1", model: echo, api_key_env: {API_KEY_ENV}}}
policies: {{auto: {{default: small}}}}
server: {{ledger_url: "sqlite:///{ledger}", ledger_flush_interval_s: 0.5, cache: {{enabled: false}}}}
learning: {{store_prompts: true}}
""")
    process, url = serve_cli(["--config", str(path), "--workers", "2"], tmp_path,
                             {**os.environ, API_KEY_ENV: UPSTREAM_SECRET}, output=subprocess.DEVNULL, timeout_s=60)
    from concurrent.futures import ThreadPoolExecutor

    def answer_and_score(i: int) -> str:
        """A request and its feedback at once, each on a new connection: either may reach either worker."""
        answer = httpx.post(f"{url}/v1/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": f"q{i}"}]})
        request_id = answer.headers["x-pointsman-request-id"]
        response = httpx.post(f"{url}/v1/feedback", json={"request_id": request_id, "score": 1})
        assert response.status_code == 200, response.text
        return request_id[:16]  # ids start with the answering process's prefix

    try:
        prefixes: set[str] = set()
        sent = 0
        with ThreadPoolExecutor(6) as pool:  # concurrent, so that a busy worker leaves connections to the other
            while (sent < 30 or len(prefixes) < 2) and sent < 600:
                prefixes |= set(pool.map(answer_and_score, range(sent, sent + 6)))
                sent += 6
        assert len(prefixes) == 2, f"{sent} requests all landed on one worker: the test did not cross workers"
    finally:
        process.terminate()
        process.wait(30)
    assert len(rows(ledger, "feedback")) == sent
