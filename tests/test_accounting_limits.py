"""Budgets and rate limits on one gateway: the 429's shape, reservations settled to the ledger row's cost, refunds on
failure, counters seeded from the ledger at start, and the choice between failing closed and open when Redis is
down."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.conftest import ledger_rows, model
from tests.servers import free_port

ADMIN = "sk-admin-limits-31b7"


@pytest.fixture(autouse=True)
def admin_env(monkeypatch):
    monkeypatch.setenv("PM_LIM_ADMIN", ADMIN)


def config(upstream, behaviour: str = "echo", **limits) -> dict:
    return {"models": [model("small", upstream, behaviour, prices={"input": 1000, "output": 2000}, max_retries=0)],
            "policies": {"auto": {"default": "small"}},
            "server": {"admin_key_env": "PM_LIM_ADMIN", "limits": {"keys_refresh_s": 0.2, **limits}}}


def admin(gateway, method: str, path: str, **kwargs) -> httpx.Response:
    response = httpx.request(method, f"{gateway.url}{path}", headers={"authorization": f"Bearer {ADMIN}"}, **kwargs)
    assert response.status_code < 300, response.text
    return response


def chat(gateway, key: str, text: str = "hello there", **body) -> httpx.Response:
    return httpx.post(f"{gateway.base_url}/chat/completions", headers={"authorization": f"Bearer {key}"},
                      json={"model": "auto", "messages": [{"role": "user", "content": text}], **body})


def used(gateway, scope: str, name: str) -> dict:
    for row in admin(gateway, "GET", "/admin/budgets").json()["data"]:
        if (row["scope"], row["name"]) == (scope, name):
            return row["used"]
    raise AssertionError(f"no limit on {scope} {name}")


def test_a_request_over_a_rate_limit_gets_an_openai_shaped_429(make_gateway, upstream):
    gateway = make_gateway(config(upstream))
    key = admin(gateway, "POST", "/admin/keys", json={"team": "ops", "limits": {"requests_per_minute": 2}}).json()
    assert [chat(gateway, key["key"]).status_code for _ in range(2)] == [200, 200]
    refused = chat(gateway, key["key"])
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    assert error["param"] == "requests_per_minute"
    assert f"key '{key['id']}'" in error["message"] and "2 requests used of 2 requests" in error["message"]
    assert "resets at" in error["message"]
    wait = int(refused.headers["retry-after"])
    assert 1 <= wait <= 60 and refused.headers["x-pointsman-limit"] == f"key:{key['id']} requests_per_minute"
    client = openai.OpenAI(base_url=gateway.base_url, api_key=key["key"], max_retries=0)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
    rows = [r for r in ledger_rows(gateway) if r["key_id"] == key["id"]]
    assert [r["status"] for r in rows] == [200, 200, 429, 429] and rows[-1]["cost_usd"] == 0


def test_a_budget_refusal_names_the_budget_and_the_next_utc_midnight(make_gateway, upstream):
    gateway = make_gateway(config(upstream))
    key = admin(gateway, "POST", "/admin/keys", json={"team": "ops"}).json()
    admin(gateway, "POST", "/admin/budgets", json={"scope": "team", "name": "ops", "usd_per_day": 0.05})
    refused = chat(gateway, key["key"])  # worst case: 4096 output tokens at 2000 USD/M, far over 0.05
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "budget_exceeded" and error["param"] == "usd_per_day"
    assert "team 'ops' usd_per_day" in error["message"] and "this request alone may take" in error["message"]
    to_midnight = 86400 - time.time() % 86400
    assert abs(int(refused.headers["retry-after"]) - to_midnight) <= 2
    assert chat(gateway, key["key"], max_tokens=5).status_code == 200  # a small enough worst case goes through


def test_reservations_settle_to_the_ledger_rows_cost_and_failures_are_refunded(make_gateway, upstream):
    gateway = make_gateway(config(upstream))
    key = admin(gateway, "POST", "/admin/keys", json={"team": "ops"}).json()
    admin(gateway, "POST", "/admin/budgets", json={"scope": "team", "name": "ops", "usd_per_day": 100,
                                                   "usd_per_month": 1000, "tokens_per_minute": 100000})
    for i in range(3):
        assert chat(gateway, key["key"], f"question number {i}", max_tokens=50).status_code == 200
    rows = ledger_rows(gateway)
    spent = sum(r["cost_usd"] for r in rows)
    tokens = sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows)
    now = used(gateway, "team", "ops")
    assert spent > 0 and now["usd_per_day"] == pytest.approx(spent, abs=1e-8)
    assert now["usd_per_month"] == pytest.approx(spent, abs=1e-8) and now["tokens_per_minute"] == tokens


def test_a_failed_request_is_refunded(make_gateway, upstream):
    gateway = make_gateway(config(upstream, "status:500"))
    key = admin(gateway, "POST", "/admin/keys", json={"team": "ops"}).json()
    admin(gateway, "POST", "/admin/budgets", json={"scope": "team", "name": "ops", "usd_per_day": 100,
                                                   "requests_per_minute": 100})
    assert chat(gateway, key["key"], max_tokens=50).status_code == 502
    now = used(gateway, "team", "ops")
    assert now == {"usd_per_day": 0.0, "requests_per_minute": 1}  # the attempt counts as a request, not as spend


def test_the_in_process_store_starts_from_the_ledgers_spend(make_gateway, upstream, tmp_path):
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    cfg = config(upstream)
    cfg["server"]["ledger_url"] = ledger
    first = make_gateway(cfg)
    key = admin(first, "POST", "/admin/keys", json={"team": "ops"}).json()
    admin(first, "POST", "/admin/budgets", json={"scope": "team", "name": "ops", "usd_per_day": 100})
    for i in range(3):
        assert chat(first, key["key"], f"q {i}", max_tokens=20).status_code == 200
    spent = used(first, "team", "ops")["usd_per_day"]
    first.stop()  # a restart: the in-process counters are gone, the ledger is not
    second = make_gateway(cfg)
    assert spent > 0 and used(second, "team", "ops")["usd_per_day"] == pytest.approx(spent, abs=1e-8)


@pytest.mark.parametrize("policy", ["closed", "open"])
def test_redis_down_fails_closed_or_open_as_configured(make_gateway, upstream, policy):
    gateway = make_gateway(config(upstream, store=f"redis://127.0.0.1:{free_port()}/0", on_store_error=policy))
    key = admin(gateway, "POST", "/admin/keys", json={"team": "ops"}).json()
    assert chat(gateway, key["key"]).status_code == 200  # no limit applies: the store is not asked
    admin(gateway, "POST", "/admin/budgets", json={"scope": "team", "name": "ops", "usd_per_day": 10})
    started = time.perf_counter()
    answer = chat(gateway, key["key"], max_tokens=5)
    took = time.perf_counter() - started
    if policy == "closed":
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "limits_unavailable"
        assert answer.headers["retry-after"] == "1"
    else:
        assert answer.status_code == 200
    assert took < 2.0  # a closed port is refused at once, not waited on
    budgets = admin(gateway, "GET", "/admin/budgets").json()  # counters cannot be read either: said, not a 500
    assert budgets["store_unavailable"] and budgets["data"][0]["used"] is None and budgets["store_errors"] == (1 if policy == "closed" else 2)  # open: reserve and settle


def test_the_gateways_own_calls_count_against_their_models_budget(make_gateway, upstream):
    """Issue 19: shadow answers (and their judge, and cache verification: gateway/own_calls.py) are costed and
    counted against budgets like any other call; once the model's budget is spent they stop, the client's
    requests go on."""
    config = {"models": [model("small", upstream, prices={"input": 0.1, "output": 0.1}),
                         model("big", upstream, prices={"input": 1000, "output": 2000}),
                         model("judge", upstream, "say:A=9 B=3", prices={"input": 0.1, "output": 0.1})],
              "policies": {"auto": {"default": "small"}},
              "server": {"admin_key_env": "PM_LIM_ADMIN", "limits": {"keys_refresh_s": 0.2}},
              "learning": {"store_prompts": True, "shadow": {"share": 1.0, "judge": "judge", "models": ["big"],
                                                            "budget_usd_per_day": 1000}}}
    gateway = make_gateway(config)
    key = admin(gateway, "POST", "/admin/keys", json={"team": "ops"}).json()["key"]
    admin(gateway, "POST", "/admin/budgets", json={"scope": "model", "name": "big", "usd_per_day": 0.15})
    time.sleep(0.5)  # the limit reaches the gateway's copy (keys_refresh_s)
    for _ in range(8):
        assert chat(gateway, key, "hello there", max_tokens=50).status_code == 200
        time.sleep(0.1)
    deadline = time.time() + 10
    while gateway.gateway.shadow._tasks and time.time() < deadline:
        time.sleep(0.05)
    shadow_rows = [r for r in ledger_rows(gateway) if r["tier"] == "shadow"]
    spent = sum(r["cost_usd"] for r in shadow_rows)
    assert shadow_rows and spent > 0
    assert spent <= 0.15, "the shadow calls overspent the model's budget (each reserves its worst case first)"
    assert any(r["status"] == 429 for r in shadow_rows), "the budget never stopped a shadow call"
    assert used(gateway, "model", "big")["usd_per_day"] == pytest.approx(spent, rel=1e-6, abs=1e-9)


def test_setting_a_budget_needs_a_limit_and_replaces_the_previous_one_saying_so(make_gateway, upstream):
    """A new user's POST with no limit fields was answered 200 and left the scope with no limit at all (the CLI
    refuses the same); a second POST with another field dropped the first without a word. POST replaces, as
    `budgets set` does: the reply shows every limit now in force and the one it replaced."""
    gateway = make_gateway(config(upstream))
    empty = httpx.post(f"{gateway.url}/admin/budgets", headers={"authorization": f"Bearer {ADMIN}"},
                       json={"scope": "team", "name": "ops"})
    assert empty.status_code == 400, empty.text
    error = empty.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_request"
    assert all(m in error["message"] for m in ("requests_per_minute", "tokens_per_minute", "usd_per_day", "usd_per_month"))
    assert admin(gateway, "GET", "/admin/budgets").json()["data"] == []
    first = admin(gateway, "POST", "/admin/budgets", json={"scope": "team", "name": "ops", "usd_per_month": 500}).json()
    assert first["usd_per_month"] == 500 and first["replaced"] is None
    second = admin(gateway, "POST", "/admin/budgets", json={"scope": "team", "name": "ops", "requests_per_minute": 100}).json()
    assert (second["requests_per_minute"], second["usd_per_month"]) == (100, None)  # every limit in force
    assert second["warnings"] == []
    typo = admin(gateway, "POST", "/admin/budgets", json={"scope": "model", "name": "smal", "usd_per_day": 5}).json()
    assert typo["usd_per_day"] == 5 and len(typo["warnings"]) == 1 and "'smal' is not in this gateway's pool" in typo["warnings"][0]
    narrowed = admin(gateway, "POST", "/admin/budgets",
                     json={"scope": "team", "name": "ops", "model": "small", "usd_per_day": 5}).json()
    assert narrowed["warnings"] == []
    assert second["replaced"]["usd_per_month"] == 500 and second["replaced"]["requests_per_minute"] is None
    key = httpx.post(f"{gateway.url}/admin/keys", headers={"authorization": f"Bearer {ADMIN}"}, json={"limits": {}})
    assert key.status_code == 400 and key.json()["error"]["param"] == "limits", key.text
    assert admin(gateway, "GET", "/admin/keys").json()["data"] == []  # refused before the key was made
