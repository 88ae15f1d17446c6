"""The admin dashboard in a real headless Chromium (issue 21): Debian's `chromium` driven by Playwright's Python
package (no browser download). The page loads with no console errors, draws its charts, shows numbers that
match the ledger, and the test keeps a screenshot (in its tmp dir, path printed)."""

from __future__ import annotations

import math
import os
import sqlite3
from pathlib import Path

import httpx
import pytest

from tests.conftest import ledger_rows, model, skip_unless_service

ADMIN = "sk-admin-dashboard-5a9e"
CHROMIUM = os.environ.get("POINTSMAN_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(autouse=True)
def admin_env(monkeypatch):
    monkeypatch.setenv("PM_DASH_ADMIN", ADMIN)


@pytest.fixture
def browser():
    if not Path(CHROMIUM).exists():
        skip_unless_service(f"no Chromium at {CHROMIUM}: install Debian's with `apt-get install -y chromium` "
                            "(or point POINTSMAN_CHROMIUM at one)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield launched
        launched.close()


def traffic(gw) -> None:
    headers = {"authorization": f"Bearer {ADMIN}"}
    plan = [("cheap", "web", "ops", "hello"), ("cheap", "web", "ops", "hi there"), ("strong", "api", "ml", "a hard one"),
            ("cheap", "api", "ml", "short"), ("strong", None, None, "long question " * 20)]
    ids = []
    for name, cohort, team, text in plan:
        tags = {**headers, **({"x-pointsman-cohort": cohort, "x-pointsman-team": team} if cohort else {})}
        answer = httpx.post(f"{gw.base_url}/chat/completions", headers=tags,
                            json={"model": name, "messages": [{"role": "user", "content": text}]})
        assert answer.status_code == 200
        ids.append(answer.headers["x-pointsman-request-id"])
    assert httpx.post(f"{gw.base_url}/chat/completions", headers=headers,
                      json={"model": "router/casc", "messages": [{"role": "user", "content": "hi"}]}).status_code == 200
    for request_id, verdict in ((ids[0], "accept"), (ids[1], "reject"), (ids[2], "accept")):
        assert httpx.post(f"{gw.base_url}/feedback", headers=headers,
                          json={"request_id": request_id, "verdict": verdict}).status_code == 200


def test_the_dashboard_needs_the_admin_key(make_gateway, upstream):
    gw = make_gateway({"models": [model("cheap", upstream)], "server": {"admin_key_env": "PM_DASH_ADMIN"}})
    refused = httpx.get(f"{gw.url}/admin/dashboard")
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
    assert httpx.get(f"{gw.url}/admin/dashboard", auth=("admin", "wrong")).status_code == 403
    assert httpx.get(f"{gw.url}/admin/dashboard/chart.umd.min.js").status_code == 401
    page = httpx.get(f"{gw.url}/admin/dashboard", auth=("anyone", ADMIN))
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text  # nothing from another origin
    assert httpx.get(f"{gw.url}/admin/dashboard/data", headers={"authorization": f"Bearer {ADMIN}"}).json()["days"] == 30
    assert httpx.get(f"{gw.url}/admin/dashboard?days=0", auth=("a", ADMIN)).status_code == 400


def test_the_dashboard_in_chromium_matches_the_ledger(make_gateway, upstream, browser, tmp_path):
    both = {"capabilities": ["json", "tools"]}
    gw = make_gateway({
        "models": [model("cheap", upstream, "echo", prices={"input": 0.5, "output": 1.5}, **both),
                   model("strong", upstream, "echo", prices={"input": 10, "output": 30}, **both),
                   model("refuser", upstream, "refuse", prices={"input": 0.1, "output": 0.1}, **both)],
        "policies": {"casc": {"default": "refuser", "cascade": {"mode": "always", "models": ["refuser", "strong"],
                                                                "verifiers": ["refusal"], "threshold": 0.5}}},
        "server": {"admin_key_env": "PM_DASH_ADMIN"}})
    traffic(gw)
    rows = ledger_rows(gw)
    assert len(rows) == 6

    context = browser.new_context(http_credentials={"username": "admin", "password": ADMIN},
                                  viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda message: problems.append(f"console {message.type}: {message.text}")
            if message.type in ("error", "warning") else None)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("requestfailed", lambda request: problems.append(f"request failed: {request.url}"))
    response = page.goto(f"{gw.url}/admin/dashboard?days=7")
    assert response is not None and response.status == 200
    page.wait_for_selector("body[data-charts=drawn]", timeout=10_000)
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"dashboard screenshot: {shot}")
    assert shot.stat().st_size > 10_000
    assert problems == []
    # every chart was drawn on its canvas (Chart.js keeps one chart per canvas)
    assert page.evaluate("Array.from(document.querySelectorAll('canvas')).every(c => Chart.getChart(c) !== undefined)")

    def value(selector: str) -> str:
        return page.get_attribute(selector, "data-value")

    assert int(value("#summary-requests")) == len(rows)
    assert float(value("#summary-cost")) == pytest.approx(sum(r["cost_usd"] for r in rows), rel=1e-6)
    escalated = sum("escalated" in r["attempts"] for r in rows)
    assert escalated == 1 and float(value("#summary-escalation")) == pytest.approx(escalated / len(rows))
    assert float(value("#summary-acceptance")) == pytest.approx(2 / 3)

    def table(table_id: str, key: str) -> dict[str, dict[str, str]]:
        found = {}
        for row in page.query_selector_all(f"#{table_id} tbody tr"):
            cells = {c.get_attribute("data-key"): c.get_attribute("data-value") for c in row.query_selector_all("td")}
            found[cells[key]] = cells
        return found

    db = sqlite3.connect(gw.ledger_path)
    for group, column in (("model", "chosen_model"), ("cohort", "cohort"), ("team", "team")):
        shown = table(f"spend-{group}", group)
        expected = db.execute(f"SELECT COALESCE({column}, '(none)'), COUNT(*), SUM(cost_usd) FROM requests GROUP BY 1").fetchall()
        assert set(shown) == {name for name, _, _ in expected}, group
        for name, n, cost in expected:
            assert int(shown[name]["requests"]) == n and float(shown[name]["cost_usd"]) == pytest.approx(cost, rel=1e-6)
    mix = {(cells["tier"], cells["model"]): int(cells["requests"]) for cells in (
        {c.get_attribute("data-key"): c.get_attribute("data-value") for c in row.query_selector_all("td")}
        for row in page.query_selector_all("#mix tbody tr"))}
    assert mix == {(tier, name): n for tier, name, n in
                   db.execute("SELECT tier, chosen_model, COUNT(*) FROM requests GROUP BY 1, 2")}
    assert mix[("default+cascade", "strong")] == 1
    latencies = sorted(r["latency_ms"] for r in rows)
    p50 = latencies[math.ceil(0.5 * len(latencies)) - 1]
    assert float(table("latency", "measure")["latency"]["p50"]) == pytest.approx(p50)
    feedback = table("feedback", "model")
    assert float(feedback["cheap"]["acceptance"]) == pytest.approx(0.5) and int(feedback["strong"]["feedback"]) == 1
    assert "not available" in page.inner_text("#drift")  # no trained router in this pool: said, not an error
    context.close()
