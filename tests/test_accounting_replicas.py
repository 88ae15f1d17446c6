"""Two gateway replicas sharing one budget through Redis and one ledger in PostgreSQL: 200 concurrent requests
overspend by at most one request's worst case and the counters equal the ledger once settled; a replica killed
with SIGKILL mid-load leaks no reservation past its timeout and loses no settled spend."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx

from pointsman.accounting.keys import Limit, key_store_from_url
from pointsman.accounting.limits import window
from tests.accounting_services import REDIS_URL, pg_rows, redis_client
from tests.conftest import API_KEY_ENV, UPSTREAM_SECRET, model
from tests.servers import serve_cli


ADMIN = "sk-admin-replicas-9d04"
PRICES = {"input": 1000, "output": 2000}  # USD per million tokens: dear enough for a few requests to count
MAX_TOKENS = 30


def replica_config(upstream, pg: str, prefix: str, **limits) -> dict:
    return {"models": [model("small", upstream, prices=PRICES)], "policies": {"auto": {"default": "small"}},
            "server": {"ledger_url": pg, "admin_key_env": "PM_REP_ADMIN", "ledger_flush_interval_s": 0.1,
                       "limits": {"store": REDIS_URL, "prefix": prefix, "keys_refresh_s": 0.2, **limits}}}


def body(i: int) -> dict:
    return {"model": "auto", "messages": [{"role": "user", "content": f"budget question {i}"}], "max_tokens": MAX_TOKENS}


def worst_case(i: int) -> float:
    """What the gateway reserves for body(i) (accounting/limits.py: prompt estimate, output cap, the price)."""
    prompt = (len(f"budget question {i}") + 2) // 3 + 4 + 8
    return (prompt * PRICES["input"] + MAX_TOKENS * PRICES["output"]) / 1e6


def usd_counter(prefix: str, scope: str, name: str) -> float:
    value = redis_client().get(f"{prefix}:d:{scope}={name}|:{window('usd_per_day', time.time())[0]}")
    return int(value or 0) / 1e9


def test_two_replicas_hold_one_budget_under_200_concurrent_requests(pg_url, redis_prefix, make_gateway, upstream,
                                                                    monkeypatch):  # the schema outlives the replicas
    monkeypatch.setenv("PM_REP_ADMIN", ADMIN)
    replicas = [make_gateway(replica_config(upstream, pg_url, redis_prefix)) for _ in range(2)]
    headers = {"authorization": f"Bearer {ADMIN}"}
    key = httpx.post(f"{replicas[0].url}/admin/keys", headers=headers, json={"team": "ops"}).json()
    budget = 1.0  # about 90 of the 200 requests' real cost (about 0.011 USD each); the worst case is ~0.08
    httpx.post(f"{replicas[0].url}/admin/budgets", headers=headers,
               json={"scope": "team", "name": "ops", "usd_per_day": budget}).raise_for_status()
    deadline = time.monotonic() + 5
    while not httpx.get(f"{replicas[1].url}/admin/budgets", headers=headers).json()["data"]:
        assert time.monotonic() < deadline, "the budget never reached the second replica"
        time.sleep(0.05)

    async def fire() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            return await asyncio.gather(*(client.post(f"{replicas[i % 2].base_url}/chat/completions", json=body(i),
                                                      headers={"authorization": f"Bearer {key['key']}"})
                                          for i in range(200)))

    answers = asyncio.run(fire())
    statuses = [a.status_code for a in answers]
    assert set(statuses) == {200, 429}, [a.text for a in answers if a.status_code not in (200, 429)][:3]
    assert {a.json()["error"]["code"] for a in answers if a.status_code == 429} == {"budget_exceeded"}
    for replica in replicas:
        replica.flush_ledger()
    assert [replica.gateway.ledger.written for replica in replicas] == [100, 100]  # the load was spread
    # All at once, worst cases (~7x the real cost) fill the budget and the rest is refused; settling gives the
    # difference back, so requests one at a time, on both replicas, go on until the real spend nears the budget.
    for i in range(200, 400):
        answer = httpx.post(f"{replicas[i % 2].base_url}/chat/completions", json=body(i),
                            headers={"authorization": f"Bearer {key['key']}"})
        statuses.append(answer.status_code)
        if answer.status_code == 429:
            break
    assert statuses[-1] == 429 and statuses[200:].count(200) > 10
    for replica in replicas:
        replica.flush_ledger()
    (spent, served), = pg_rows(pg_url, "SELECT COALESCE(SUM(cost_usd), 0), COUNT(*) FROM requests "
                                       "WHERE team = 'ops' AND status = 200")
    assert served == statuses.count(200)
    worst = max(worst_case(i) for i in range(400))
    assert spent - budget <= worst, f"spent {spent:.6f} USD of a {budget} budget"  # overspend: one worst case at most
    assert spent >= budget - worst, f"only {spent:.4f} USD of {budget} spent when the budget refused"
    counter = usd_counter(redis_prefix, "team", "ops")
    assert abs(counter - spent) < 1e-6, f"counter {counter:.9f} USD, ledger {spent:.9f} USD"
    assert redis_client().zcard(f"{redis_prefix}:pending") == 0  # every reservation settled
    listed = httpx.get(f"{replicas[1].url}/admin/budgets", headers=headers).json()["data"][0]["used"]
    assert abs(listed["usd_per_day"] - spent) < 1e-6


def write_config(path: Path, upstream, pg: str, prefix: str, timeout_s: float, behaviour: str) -> None:
    path.write_text(f"""
models:
  - {{name: small, provider: openai, base_url: "{upstream.url}/v1", model: "{behaviour}", api_key_env: {API_KEY_ENV},
     prices: {{input: {PRICES['input']}, output: {PRICES['output']}}}}}
policies: {{auto: {{default: small}}}}
server:
  ledger_url: "{pg}"
  ledger_flush_interval_s: 0.1
  limits: {{store: "{REDIS_URL}", prefix: "{prefix}", reservation_timeout_s: {timeout_s}, keys_refresh_s: 0.2}}
""")


def load(url: str, secret: str, stop: threading.Event, answered: list[tuple[float, float]]) -> None:
    """Requests one after another until stopped; (when the answer arrived, its cost) per 200."""
    with httpx.Client(base_url=f"{url}/v1", timeout=10, headers={"authorization": f"Bearer {secret}"}) as client:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                response = client.post("/chat/completions", json=body(i))
            except httpx.HTTPError:
                return  # this replica is gone
            if response.status_code == 200:
                answered.append((time.monotonic(), float(response.headers["x-pointsman-cost-usd"])))


def test_kill_9_of_a_replica_leaks_no_reservation_and_loses_no_settled_spend(tmp_path, upstream, pg_url, redis_prefix):
    timeout_s = 2.0
    store = key_store_from_url(pg_url)
    try:
        _, secret = store.create_key(team="ops")
        store.set_limit(Limit("team", "ops", "", usd_per_day=10_000.0))  # not binding: every request reserves
    finally:
        store.close()
    # the victim's upstream answers in 50 ms, so that each of its clients holds a reservation at the kill
    slow, fast = tmp_path / "victim.yaml", tmp_path / "survivor.yaml"
    write_config(slow, upstream, pg_url, redis_prefix, timeout_s, "slow:50")
    write_config(fast, upstream, pg_url, redis_prefix, timeout_s, "echo")
    env = {**os.environ, API_KEY_ENV: UPSTREAM_SECRET}
    victim, victim_url = serve_cli(["--config", str(slow)], tmp_path, env, output=subprocess.DEVNULL)
    survivor, survivor_url = serve_cli(["--config", str(fast)], tmp_path, env, output=subprocess.DEVNULL)
    stop_victim, stop_survivor = threading.Event(), threading.Event()
    on_victim: list[tuple[float, float]] = []
    on_survivor: list[tuple[float, float]] = []
    threads = [threading.Thread(target=load, args=(victim_url, secret, stop_victim, on_victim), daemon=True) for _ in range(4)]
    threads += [threading.Thread(target=load, args=(survivor_url, secret, stop_survivor, on_survivor), daemon=True)
                for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 15
        while len(on_victim) < 100 and time.monotonic() < deadline:
            time.sleep(0.02)
        pending_before = redis_client().zcard(f"{redis_prefix}:pending")
        killed_at = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.wait(10) == -signal.SIGKILL
        stop_victim.set()
        time.sleep(0.5)
        stop_survivor.set()
        for thread in threads:
            thread.join(10)
        # the survivor's sweeper takes the dead replica's reservations back once their deadline is past
        while redis_client().zcard(f"{redis_prefix}:pending") and time.monotonic() < killed_at + timeout_s + 3:
            time.sleep(0.05)
        left = redis_client().zcard(f"{redis_prefix}:pending")
        swept_after = time.monotonic() - killed_at
        survivor.send_signal(signal.SIGINT)  # a clean stop: its ledger is flushed
        assert survivor.wait(30) == 0
    finally:
        for process in (victim, survivor):
            if process.poll() is None:
                process.kill()
    assert len(on_victim) >= 100 and on_survivor, "too little load"
    assert pending_before > 0, "no reservation was open at the kill: the test proves nothing"
    assert left == 0, f"{left} reservations still open {swept_after:.1f} s after the kill (timeout {timeout_s} s)"
    (ledger,), = pg_rows(pg_url, "SELECT COALESCE(SUM(cost_usd), 0) FROM requests WHERE team = 'ops'")
    counter = usd_counter(redis_prefix, "team", "ops")
    biggest = max(cost for _, cost in on_victim + on_survivor)
    # settled spend is never lost: the counter holds every row the ledger has (one request settling at the kill aside)
    assert counter >= ledger - biggest, f"counter {counter:.6f} < ledger {ledger:.6f} USD"
    # and the counter holds nothing else but the dead replica's last unflushed answers (or requests in flight)
    unflushed = sum(cost for t, cost in on_victim if t > killed_at - 0.1 - 0.3)
    assert counter <= ledger + unflushed + 4 * biggest, f"counter {counter:.6f}, ledger {ledger:.6f}, unflushed {unflushed:.6f}"
