"""The learning loop end to end, as an operator runs it: traffic through a real gateway routing with
`router: deployed`, client feedback, `pointsman train --from-ledger`, `pointsman promote` (the gateway swaps
the router without a restart), `pointsman rollback`, `pointsman drift`; and shadow answers scored by a judge."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import API_KEY_ENV, UPSTREAM_SECRET, model

MATHS = [f"Compute {17 + i} * {23 + 2 * i} and then subtract {i * 7}; show every intermediate step of the arithmetic."
         for i in range(60)]
CHAT = [f"Say a short friendly hello to my colleague number {i} who just joined the team." for i in range(60)]
MIXED = [text for pair in zip(MATHS, CHAT) for text in pair]  # the traffic, in the order it comes


def pool(upstream, weak_on: str) -> list[dict]:
    """A cheap model that gives up on prompts containing ``weak_on``, a dear one that answers all, a judge that
    reads answers (never routed to: dear and of low prior quality)."""
    return [model("small", upstream, f"weak:{weak_on}", prices={"input": 0.1, "output": 0.3}, quality=0.6),
            model("big", upstream, prices={"input": 3, "output": 15}, quality=0.85),
            model("judge", upstream, "judge", prices={"input": 3, "output": 15}, quality=0.05)]


def write_config(tmp_path: Path, upstream, weak_on: str) -> Path:
    config = {"models": pool(upstream, weak_on),
              # at this knob the shipped router sends the arithmetic to the cheap model and the greetings to the dear one
              "policies": {"auto": {"semantic": {"router": "deployed", "lambda": 0.2}, "default": "small"}},
              "server": {"ledger_url": f"sqlite:///{tmp_path / 'ledger.db'}", "ledger_flush_interval_s": 0.05,
                         "cache": {"enabled": False}},
              "learning": {"store_prompts": True, "routers_dir": str(tmp_path / "routers"), "reload_check_s": 0.1,
                           "shadow": {"share": 1.0, "judge": "judge", "models": ["small", "big"]}}}
    path = tmp_path / "pointsman.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def pointsman(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pointsman.cli", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, API_KEY_ENV: UPSTREAM_SECRET})


def routed(url: str, prompts: list[str], key: str | None = None) -> list[tuple[str, str, str]]:
    """(request id, model that answered, its answer) per prompt."""
    out = []
    with httpx.Client(base_url=url, timeout=30, headers={"authorization": f"Bearer {key}"} if key else None) as client:
        for text in prompts:
            response = client.post("/v1/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": text}]})
            assert response.status_code == 200, response.text
            out.append((response.headers["x-pointsman-request-id"], response.headers["x-pointsman-model"],
                        response.json()["choices"][0]["message"]["content"]))
    return out


def wait_for(condition, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def serve_traffic(tmp_path: Path, upstream, weak_on: str, feedback_every: int = 2):
    """A gateway on the config, the mixed traffic sent through it, feedback on every n-th answer, and the shadow
    answers all judged; returns (server, config path, the first round's answers)."""
    from tests.servers import GatewayServer

    config_path = write_config(tmp_path, upstream, weak_on)
    server = GatewayServer(yaml.safe_load(config_path.read_text()), tmp_path / "ledger.db").start()
    answered = routed(server.url, MIXED)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for request_id, _, answer in answered[::feedback_every]:  # the users: a give-up answer is a reject
            verdict = "reject" if answer == "I do not know." else "accept"
            assert client.post("/v1/feedback", json={"request_id": request_id, "verdict": verdict}).status_code == 200
    assert wait_for(lambda: server.gateway.shadow.counts["scored"] == len(answered), 30), server.gateway.shadow.counts
    server.flush_ledger()
    return server, config_path, answered


def test_traffic_feedback_shadow_train_promote_rollback_drift(tmp_path, upstream, monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, UPSTREAM_SECRET)
    # the cheap model gives up on the arithmetic, which the shipped router sends it; it does the greetings well,
    # which the shipped router sends to the dear model
    server, config_path, before = serve_traffic(tmp_path, upstream, weak_on="Compute")
    try:
        starts = [m for _, m, _ in before]
        assert starts[0::2].count("small") >= 0.9 * len(MATHS) and starts[1::2].count("big") >= 0.9 * len(CHAT), (
            "the shipped router must start with arithmetic on the cheap model and greetings on the dear one, so that "
            f"the loop has something to learn: {[m for _, m, _ in before]}")
        candidate = tmp_path / "candidate.npz"
        trained = pointsman("train", "--from-ledger", f"sqlite:///{tmp_path / 'ledger.db'}", "--config", str(config_path),
                            "--holdout", "0.3", "-o", str(candidate), "--export", str(tmp_path / "rows.jsonl"))
        assert trained.returncode == 0, trained.stderr
        rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
        assert len(rows) == 2 * len(before)  # the routed answer and the shadow answer of every request
        assert {r["signal"] for r in rows} == {"feedback", "shadow"} and rows[0]["source"] == "traffic"

        promoted = pointsman("promote", str(candidate), "--config", str(config_path))
        assert promoted.returncode == 0, promoted.stdout + promoted.stderr
        assert "| candidate |" in promoted.stdout and "knn" in promoted.stdout and "**promote**" in promoted.stdout
        assert (tmp_path / "routers" / "deployed.npz").exists()
        # the gateway notices the deployed file and swaps the router in without a restart
        assert wait_for(lambda: routed(server.url, MATHS[:1])[0][1] == "big"), "the promoted router was not swapped in"
        after = routed(server.url, MATHS + CHAT)
        assert sum(m == "big" for _, m, _ in after[:len(MATHS)]) >= 0.8 * len(MATHS), [m for _, m, _ in after]
        assert sum(m == "small" for _, m, _ in after[len(MATHS):]) >= 0.8 * len(CHAT), [m for _, m, _ in after]

        rolled = pointsman("rollback", "--config", str(config_path))
        assert rolled.returncode == 0 and "shipped router" in rolled.stderr, rolled.stderr
        assert wait_for(lambda: routed(server.url, MATHS[:1])[0][1] == "small"), "the rollback was not swapped in"
        again = pointsman("rollback", "--config", str(config_path))
        assert again.returncode == 2 and "nothing to roll back" in again.stderr

        drift = pointsman("drift", "--config", str(config_path), "--json")
        assert drift.returncode == 0, drift.stderr
        report = json.loads(drift.stdout)
        assert report["prompts"] >= 50 and 0 <= report["unseen_share"] <= 1 and report["task_shift"] is not None
        assert set(report["recent_mix"]) == set(report["training_mix"]) and isinstance(report["retrain"], bool)
    finally:
        server.stop()


def test_a_candidate_trained_on_inverted_scores_is_refused(tmp_path, upstream, monkeypatch):
    import numpy as np

    from pointsman.learning.adapt import adapt
    from pointsman.learning.traffic import embed_traffic, read_outcomes
    from pointsman.predictors import load_predictor
    from pointsman.routing.semantic import DEFAULT_ROUTER

    monkeypatch.setenv(API_KEY_ENV, UPSTREAM_SECRET)
    # here the shipped router is right: the greetings, which the cheap model gives up on, go to the dear model
    server, config_path, _ = serve_traffic(tmp_path, upstream, weak_on="colleague")
    server.stop()
    rows = read_outcomes(f"sqlite:///{tmp_path / 'ledger.db'}")
    base = load_predictor(DEFAULT_ROUTER)
    X, F = embed_traffic([r.prompt for r in rows], base.info)
    bad = adapt(base, X, F, [r.model for r in rows], 1.0 - np.array([r.score for r in rows]),
                prompt_ids=[r.request_id for r in rows])
    bad.save(tmp_path / "bad.npz")
    promoted = pointsman("promote", str(tmp_path / "bad.npz"), "--config", str(config_path))
    assert promoted.returncode == 1, promoted.stdout + promoted.stderr
    assert "**refuse**" in promoted.stdout and not (tmp_path / "routers" / "deployed.npz").exists()


def test_shadow_answers_are_judged_costed_and_stored(make_gateway, upstream, tmp_path):
    config = {"models": [*pool(upstream, weak_on="nothing")[:2],
                         model("judge", upstream, "say:A=9 B=3", prices={"input": 0.2, "output": 0.2})],
              "policies": {"auto": {"default": "small", "fallbacks": ["big"]}},
              "learning": {"store_prompts": True, "shadow": {"share": 1.0, "judge": "judge", "models": ["big"]}}}
    gateway = make_gateway(config)
    answered = routed(gateway.url, ["hello there"] * 6)
    assert {m for _, m, _ in answered} == {"small"}
    assert wait_for(lambda: gateway.gateway.shadow.counts["scored"] == 6), gateway.gateway.shadow.counts
    gateway.flush_ledger()
    db = sqlite3.connect(gateway.ledger_path)
    try:
        shadow = db.execute("SELECT request_id, model, score, propensity FROM shadow ORDER BY request_id, model").fetchall()
        calls = db.execute("SELECT tier, chosen_model, cost_usd, key_id FROM requests WHERE tier LIKE 'shadow%'").fetchall()
    finally:
        db.close()
    assert len(shadow) == 12
    # the judge saw the routed answer first or second at random; A=9 B=3 is mapped back to the right model each time
    by_request: dict[str, dict[str, float]] = {}
    for request_id, name, score, propensity in shadow:
        by_request.setdefault(request_id, {})[name] = score
        assert propensity == (1.0 if name == "small" else 1.0)  # share 1 over one allowed shadow model
    assert all(sorted(scores.values()) == pytest.approx([2 / 9, 8 / 9]) for scores in by_request.values())
    assert sorted({(tier, name) for tier, name, _, _ in calls}) == [("shadow", "big"), ("shadow-judge", "judge")]
    assert all(cost > 0 and key is None for _, _, cost, key in calls)


def test_admin_drift_reports_recent_traffic_against_the_deployed_router(make_gateway, upstream, monkeypatch):
    monkeypatch.setenv("PM_DRIFT_ADMIN", "sk-drift-admin")
    config = {"models": pool(upstream, weak_on="nothing")[:2],
              "policies": {"auto": {"semantic": {"router": "default"}, "default": "small"}},
              "server": {"admin_key_env": "PM_DRIFT_ADMIN"}, "learning": {"store_prompts": True}}
    gateway = make_gateway(config)
    admin = {"authorization": "Bearer sk-drift-admin"}
    few = httpx.get(f"{gateway.url}/admin/drift", headers=admin)
    assert few.status_code == 200 and few.json()["retrain"] is False and "too few" in few.json()["reasons"][0]
    routed(gateway.url, MIXED, key="sk-drift-admin")
    gateway.flush_ledger()
    report = httpx.get(f"{gateway.url}/admin/drift?days=1", headers=admin)
    assert report.status_code == 200, report.text
    body = report.json()
    assert body["object"] == "drift" and body["prompts"] == len(MIXED)
    # arithmetic and greetings, half and half: a task mix unlike the benchmarks the shipped router was trained on
    assert body["recent_mix"]["math"] >= 0.4 and body["task_shift"] > 0.2 and body["retrain"] is True
    assert httpx.get(f"{gateway.url}/admin/drift?days=-1", headers=admin).status_code == 400
    assert httpx.get(f"{gateway.url}/admin/drift").status_code == 401
    assert httpx.post(f"{gateway.url}/admin/drift", headers=admin).status_code == 405
