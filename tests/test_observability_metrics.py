"""/metrics after real traffic, checked against the ledger (issue 21): every counter a request moves equals what
the ledger rows say, labels come from closed sets, and `serve --workers 2` adds its workers up."""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from pointsman.ledger.rollup import escalated
from pointsman.ledger.base import Attempt
from pointsman.observability.metrics import Metrics, count_guard_action, activate
from tests.conftest import API_KEY_ENV, UPSTREAM_SECRET, ledger_rows, model
from tests.servers import serve_cli

ADMIN = "sk-admin-metrics-77c1"
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(autouse=True)
def admin_env(monkeypatch):
    monkeypatch.setenv("PM_METRICS_ADMIN", ADMIN)


def scrape(url: str, **headers: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """{sample name: [(labels, value)]}."""
    answer = httpx.get(f"{url}/metrics", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    samples: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[sample.name].append((sample.labels, sample.value))
    return samples


def settled(url: str, requests: int, **headers: str):
    """A scrape once `requests` chat requests are counted: a request is counted after its answer is sent."""
    deadline = time.monotonic() + 5
    while True:
        samples = scrape(url, **headers)
        if total(samples, "pointsman_requests_total") >= requests or time.monotonic() > deadline:
            return samples
        time.sleep(0.02)


def total(samples, name: str, **where: str) -> float:
    return sum(v for labels, v in samples.get(name, []) if all(labels.get(k) == x for k, x in where.items()))


def config(upstream) -> dict:
    both = {"capabilities": ["json", "tools"]}
    return {
        "models": [model("cheap", upstream, "echo", prices={"input": 0.5, "output": 1.5}, **both),
                   model("strong", upstream, "echo", prices={"input": 10, "output": 30}, **both),
                   model("refuser", upstream, "refuse", prices={"input": 0.1, "output": 0.1}, **both),
                   model("flaky", upstream, "status:503", max_retries=0, fallbacks=["cheap"], **both)],
        "policies": {"auto": {"default": "cheap", "rules": [{"when": {"keywords": ["hard"]}, "route": "strong"}]},
                     "casc": {"default": "refuser", "cascade": {"mode": "always", "models": ["refuser", "strong"],
                                                                "verifiers": ["refusal"], "threshold": 0.5}}},
        "server": {"admin_key_env": "PM_METRICS_ADMIN", "limits": {"keys_refresh_s": 0.2}},
    }


def chat(gw, key: str = ADMIN, **body) -> httpx.Response:
    return httpx.post(f"{gw.base_url}/chat/completions", headers={"authorization": f"Bearer {key}"}, timeout=30,
                      json={"model": "auto", "messages": HELLO, **body})


def test_metrics_after_real_traffic_match_the_ledger(make_gateway, upstream):
    gw = make_gateway(config(upstream))
    statuses = [chat(gw).status_code for _ in range(3)]
    statuses.append(chat(gw, messages=[{"role": "user", "content": "a hard one"}]).status_code)  # rules -> strong
    with httpx.stream("POST", f"{gw.base_url}/chat/completions", headers={"authorization": f"Bearer {ADMIN}"},
                      json={"model": "auto", "messages": HELLO, "stream": True,
                            "stream_options": {"include_usage": True}}) as streamed:
        statuses.append(streamed.status_code)
        streamed.read()
    statuses.append(chat(gw, model="flaky").status_code)  # 503, then its fallback answers
    statuses.append(chat(gw, model="router/casc").status_code)  # the refusal escalates to strong
    statuses.append(chat(gw, messages="not a list").status_code)  # 400
    key = httpx.post(f"{gw.url}/admin/keys", headers={"authorization": f"Bearer {ADMIN}"},
                     json={"team": "ops", "user": "alice@example.com", "limits": {"requests_per_minute": 1}}).json()
    time.sleep(0.5)  # the key directory refreshes every 0.2 s
    statuses += [chat(gw, key["key"]).status_code, chat(gw, key["key"]).status_code]  # 200, then 429
    assert statuses == [200] * 7 + [400, 200, 429]
    assert httpx.post(f"{gw.base_url}/chat/completions", json={"model": "auto", "messages": HELLO}).status_code == 401

    rows = ledger_rows(gw)
    samples = settled(gw.url, 11)
    assert len(rows) == 10
    # requests by status (the 401 counts here, though the ledger keeps no row before authentication)
    by_status = Counter(str(r["status"]) for r in rows)
    by_status["401"] += 1
    for status, n in by_status.items():
        assert total(samples, "pointsman_requests_total", status=status) == n, status
    assert total(samples, "gen_ai_server_request_duration_seconds_count") == len(rows) + 1
    # spend and tokens, per model
    for name in ("cheap", "strong"):
        mine = [r for r in rows if r["chosen_model"] == name]
        assert mine
        assert total(samples, "pointsman_cost_usd_total", gen_ai_response_model=name) == pytest.approx(
            sum(r["cost_usd"] for r in mine), rel=1e-9)
        assert total(samples, "gen_ai_client_token_usage_sum", gen_ai_response_model=name, gen_ai_token_type="input") == \
            sum(r["prompt_tokens"] for r in mine)
        assert total(samples, "gen_ai_client_token_usage_sum", gen_ai_response_model=name, gen_ai_token_type="output") == \
            sum(r["completion_tokens"] for r in mine)
    # decisions per tier and model
    answered = [r for r in rows if r["status"] == 200]
    for (tier, name), n in Counter((r["tier"].split("+")[0], r["chosen_model"]) for r in answered).items():
        assert total(samples, "pointsman_route_decisions_total", tier=tier, gen_ai_response_model=name) == n
    assert total(samples, "pointsman_route_decisions_total", tier="rules", gen_ai_response_model="strong") == 1
    # every upstream attempt, by model and status
    attempts = [Attempt(*a) for r in rows for a in json.loads(r["attempts"])]
    for (name, status), n in Counter((a.model, a.status) for a in attempts).items():
        assert total(samples, "gen_ai_client_operation_duration_seconds_count", gen_ai_request_model=name,
                     status=status) == n, (name, status)
    assert total(samples, "gen_ai_client_operation_duration_seconds_count", gen_ai_request_model="flaky") == 1
    # the cascade: verdicts and the escalation
    verdicts = Counter(a.verdict.split(":")[0] for a in attempts if a.verdict)
    assert verdicts["escalated"] == 1
    for verdict, n in verdicts.items():
        assert total(samples, "pointsman_verifier_verdicts_total", verdict=verdict) == n
    assert total(samples, "pointsman_verifier_verdicts_total", verdict="escalated", defect="refusal") == 1
    escalations = sum(escalated(r["tier"], [Attempt(*a) for a in json.loads(r["attempts"])]) for r in rows)
    assert escalations == 1 and total(samples, "pointsman_cascade_escalations_total") == 1
    # streaming: time to first token; the limits stage's 429
    assert total(samples, "gen_ai_server_time_to_first_token_seconds_count") == sum(r["ttft_ms"] is not None for r in rows) == 1
    assert total(samples, "pointsman_budget_rejections_total", limit="requests_per_minute") == 1
    assert total(samples, "pointsman_added_latency_seconds_count") == len(answered)
    assert total(samples, "pointsman_breaker_state", gen_ai_request_model="flaky") == 0  # one failure: still closed
    # bounded labels: no key id, user, team or cohort anywhere
    label_values = {v for series in samples.values() for labels, _ in series for v in labels.values()}
    assert not label_values & {key["id"], "ops", "alice@example.com", ADMIN}


def test_cache_hits_are_counted_by_kind(make_gateway, upstream):
    gw = make_gateway({"models": [model("cheap", upstream, "echo", prices={"input": 1, "output": 1})],
                       "server": {"cache": {"enabled": True, "semantic": False}}})
    for _ in range(3):
        assert httpx.post(f"{gw.base_url}/chat/completions", json={"model": "cheap", "messages": HELLO,
                                                                    "temperature": 0}).status_code == 200
    time.sleep(0.2)  # the answer is stored after it is sent
    assert httpx.post(f"{gw.base_url}/chat/completions", json={"model": "cheap", "messages": HELLO,
                                                                "temperature": 0}).status_code == 200
    rows = ledger_rows(gw)
    samples = settled(gw.url, len(rows))
    hits = sum(r["cache_hit"] for r in rows)
    assert hits >= 2
    assert total(samples, "pointsman_cache_lookups_total", result="exact") == hits
    assert total(samples, "pointsman_cache_lookups_total", result="miss") == len(rows) - hits
    assert total(samples, "pointsman_requests_total", tier="cache") == hits


def test_metrics_can_need_the_admin_key_or_be_off(make_gateway, upstream):
    pool = [model("cheap", upstream, "echo")]
    closed = make_gateway({"models": pool, "server": {"admin_key_env": "PM_METRICS_ADMIN"},
                           "observability": {"metrics_need_admin_key": True}})
    assert httpx.get(f"{closed.url}/metrics").status_code == 401
    assert scrape(closed.url, authorization=f"Bearer {ADMIN}")
    off = make_gateway({"models": pool, "observability": {"metrics": False}})
    assert httpx.get(f"{off.url}/metrics").status_code == 404
    assert chat(off, model="cheap").status_code == 200


def test_labels_come_from_closed_sets():
    metrics = Metrics(["small"], ["rules"])
    activate(metrics)
    try:
        assert metrics.model("small") == "small" and metrics.model("gpt-9-preview-of-a-client") == "other"
        assert metrics.tier("rules+cascade") == "rules" and metrics.tier("made-up") == "other"
        for index in range(100):  # a guard that named actions from request text would stop at 64 pairs
            count_guard_action("pii", f"action-{index}")
        text = metrics.exposition().decode()
        assert text.count("pointsman_guard_actions_total{") == 64 + 1  # 64 kept, the rest as other/other
        assert 'pointsman_guard_actions_total{action="other",guard="other"} 36.0' in text
    finally:
        activate(None)


def send_until_both_workers_answer(url: str, at_least: int = 40, at_most: int = 800) -> int:
    """Requests, 8 at a time on new connections, until both workers have answered some (the kernel hands
    connections to whichever worker accepts first: one idle worker may take them all for a while); how many."""
    from concurrent.futures import ThreadPoolExecutor

    def one(_: int) -> str:
        response = httpx.post(f"{url}/v1/chat/completions", json={"model": "cheap", "messages": HELLO}, timeout=30)
        assert response.status_code == 200
        return response.headers["x-pointsman-request-id"][:16]  # ids start with the process's prefix

    workers: set[str] = set()
    sent = 0
    with ThreadPoolExecutor(8) as pool:
        while (sent < at_least or len(workers) < 2) and sent < at_most:
            workers |= set(pool.map(one, range(8)))
            sent += 8
    assert len(workers) == 2, f"{sent} requests all reached one worker"
    return sent


def test_serve_with_two_workers_adds_their_metrics_up(tmp_path, upstream):
    pool = {"models": [{"name": "cheap", "provider": "openai", "base_url": f"{upstream.url}/v1", "model": "echo",
                        "api_key_env": API_KEY_ENV, "prices": {"input": 1, "output": 2}}],
            "server": {"cache": {"enabled": False}, "ledger_flush_interval_s": 0.05}}
    (tmp_path / "pool.yaml").write_text(yaml.safe_dump(pool))
    env = {**os.environ, API_KEY_ENV: UPSTREAM_SECRET}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process, url = serve_cli(["--config", "pool.yaml", "--workers", "2", "--ledger", f"sqlite:///{tmp_path}/ledger.db"],
                             tmp_path, env)
    try:
        sent = send_until_both_workers_answer(url)
        settled(url, sent)
        for _ in range(10):  # whichever worker answers the scrape, it counts both
            samples = scrape(url)
            assert total(samples, "pointsman_requests_total", status="200") == sent
    finally:
        process.terminate()
        process.wait(30)
    import sqlite3

    db = sqlite3.connect(tmp_path / "ledger.db")
    cost, n = db.execute("SELECT SUM(cost_usd), COUNT(*) FROM requests").fetchone()
    workers = {row[0] for row in db.execute("SELECT substr(id, 1, 16) FROM requests")}  # ids start with the process's
    assert n == sent and len(workers) == 2, workers
    assert total(samples, "pointsman_cost_usd_total") == pytest.approx(cost, rel=1e-9)
