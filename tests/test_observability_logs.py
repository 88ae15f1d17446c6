"""One JSON line per chat request (issue 21): opt-in, the ledger row's fields, no prompt text unless configured,
never a provider's key even when the upstream echoes it into an error."""

from __future__ import annotations

import json
import time

import httpx

from tests.conftest import UPSTREAM_SECRET, ledger_rows, model

PROMPT = "what is the capital of Freedonia, please"


def lines(path, expected: int) -> list[dict]:
    """The file's lines, once `expected` are there: a line is written after its answer is sent."""
    deadline = time.monotonic() + 5
    while True:
        found = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        if len(found) >= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.01)


def send(gw, name: str) -> int:
    return httpx.post(f"{gw.base_url}/chat/completions",
                      json={"model": name, "messages": [{"role": "user", "content": PROMPT}]}).status_code


def test_one_line_per_request_without_the_prompt(make_gateway, upstream, tmp_path):
    log = tmp_path / "requests.jsonl"
    gw = make_gateway({"models": [model("cheap", upstream, "echo"), model("broken", upstream, "status:500", max_retries=0)],
                       "observability": {"request_log": {"enabled": True, "path": str(log)}}})
    assert [send(gw, "cheap"), send(gw, "broken"), send(gw, "cheap")] == [200, 502, 200]
    rows = {r["id"]: r for r in ledger_rows(gw)}
    logged = lines(log, 3)
    assert len(logged) == 3 == len(rows)
    for line in logged:
        row = rows[line["id"]]
        assert line["event"] == "pointsman.request"
        assert (line["status"], line["chosen_model"], line["cost_usd"], line["prompt_tokens"]) == \
            (row["status"], row["chosen_model"], row["cost_usd"], row["prompt_tokens"])
    text = log.read_text()
    assert "Freedonia" not in text and "prompt" not in logged[0]
    assert logged[1]["error"] and logged[1]["attempts"][0][1] == "upstream_error"


def test_the_prompt_only_when_configured_and_never_a_key(make_gateway, upstream, tmp_path):
    log = tmp_path / "requests.jsonl"
    gw = make_gateway({"models": [model("cheap", upstream, "echo")],
                       "observability": {"request_log": {"enabled": True, "path": str(log), "prompts": True}}})
    assert send(gw, "cheap") == 200
    pasted = httpx.post(f"{gw.base_url}/chat/completions", json={"model": "cheap", "messages": [
        {"role": "user", "content": f"why does {UPSTREAM_SECRET} not work"}]})  # a user pastes the provider's key
    assert pasted.status_code == 200
    first, second = lines(log, 2)
    assert PROMPT in first["prompt"]
    assert second["prompt"] == "why does [redacted] not work" and UPSTREAM_SECRET not in log.read_text()


def test_off_by_default(make_gateway, upstream, tmp_path, capfd):
    gw = make_gateway({"models": [model("cheap", upstream, "echo")]})
    assert gw.gateway.visibility.request_log is None
    assert send(gw, "cheap") == 200
    assert "pointsman.request" not in capfd.readouterr().err
