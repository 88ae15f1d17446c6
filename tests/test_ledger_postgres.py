"""The ledger and the learning store in PostgreSQL (the machine's server, trust auth, database `test`), each test
in its own schema: rows of every request, and replicas sharing one database for feedback."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.accounting_services import pg_rows
from tests.conftest import model


def config(upstream, url: str) -> dict:
    return {"models": [model("small", upstream, prices={"input": 0.1, "output": 0.3}), model("big", upstream)],
            "policies": {"auto": {"default": "small"}},
            "server": {"ledger_url": url, "api_keys_env": ["PM_PG_KEY"]}, "learning": {"store_prompts": True}}


def test_every_request_is_a_row_in_postgres(make_gateway, upstream, pg_url, monkeypatch):
    monkeypatch.setenv("PM_PG_KEY", "sk-pg")
    gateway = make_gateway(config(upstream, pg_url))
    client = openai.OpenAI(base_url=gateway.base_url, api_key="sk-pg", max_retries=0)
    for stream in (False, True):
        answer = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}], stream=stream)
        if stream:
            list(answer)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    gateway.flush_ledger()
    found = pg_rows(pg_url, "SELECT status, chosen_model, stream, cost_usd, attempts FROM requests ORDER BY ts")
    assert [(s, m, st) for s, m, st, _, _ in found] == [(200, "small", False), (200, "small", True), (404, None, False)]
    assert found[0][3] > 0 and found[0][4][0][0] == "small"  # attempts as JSONB arrays: [model, status, ...]
    assert pg_rows(pg_url, "SELECT text FROM prompts") == [("hi",), ("hi",)]


def test_replicas_sharing_postgres_take_feedback_on_each_others_requests(make_gateway, upstream, pg_url, monkeypatch):
    from pointsman.learning.store import outcome_store_from_url

    monkeypatch.setenv("PM_PG_KEY", "sk-pg")
    first = make_gateway(config(upstream, pg_url))
    second = make_gateway(config(upstream, pg_url))
    headers = {"authorization": "Bearer sk-pg"}
    ids = []
    for i in range(5):
        answer = httpx.post(f"{first.base_url}/chat/completions", headers=headers,
                            json={"model": "auto", "messages": [{"role": "user", "content": f"q{i}"}]})
        ids.append(answer.headers["x-pointsman-request-id"])
    for request_id in ids:  # at once: the first replica may not have flushed its ledger yet
        response = httpx.post(f"{second.url}/v1/feedback", headers=headers, json={"request_id": request_id, "score": 0.5})
        assert response.status_code == 200, response.text
        again = httpx.post(f"{second.url}/v1/feedback", headers=headers, json={"request_id": request_id, "verdict": "accept"})
        assert again.json()["created"] is False
    store = outcome_store_from_url(pg_url)
    try:
        outcomes = store.outcomes()
    finally:
        store.close()
    assert [(o.request_id, o.model, o.score, o.signal) for o in outcomes] == [(i, "small", 1.0, "feedback") for i in ids]
