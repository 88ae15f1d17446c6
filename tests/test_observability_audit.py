"""`pointsman audit` (issue 21): prompts routed offline by the configured policy, priced with accounting/prices.py,
cost as is vs routed with predicted quality, per cohort; from a JSONL of chat requests, a CSV, or a ledger."""

from __future__ import annotations

import csv
import json
import sqlite3

import pytest
import yaml

from pointsman.accounting.prices import TokenUsage, resolve_prices
from pointsman.cli import main
from pointsman.config.loader import load_config
from pointsman.observability.audit import run_audit

POOL = {"models": [{"name": "small", "provider": "openai", "prices": {"input": 0.15, "output": 0.6}, "tags": {"tier": "small"}},
                   {"name": "big", "provider": "openai", "prices": {"input": 2.5, "output": 10}, "tags": {"tier": "frontier"}}],
        "policies": {"auto": {"rules": [{"when": {"keywords": ["urgent"]}, "route": "big"}], "semantic": {"router": "default"}}}}
PROMPTS = [("Write a Python function that merges two sorted lists.", "eng"), ("hi, how are you today?", "support"),
           ("urgent: summarise this contract clause for me", "legal"), ("What is 17 * 23? Show your steps.", "eng"),
           ("Tell me a short story about a lighthouse keeper.", "support"), ("Translate 'good morning' to French.", "support")]


@pytest.fixture
def pool(tmp_path):
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump(POOL))
    return str(path)


def write_log(tmp_path, usage: bool = False) -> str:
    path = tmp_path / "log.jsonl"
    with path.open("w") as out:
        for text, cohort in PROMPTS:
            row = {"model": "big", "messages": [{"role": "user", "content": text}], "metadata": {"cohort": cohort}}
            if usage:
                row["usage"] = {"prompt_tokens": 100, "completion_tokens": 300}
            out.write(json.dumps(row) + "\n")
    return str(path)


def test_the_audit_routes_prices_and_compares(tmp_path, pool):
    summary = run_audit(write_log(tmp_path, usage=True), pool, progress=False)
    total = summary["total"]
    assert summary["prompts"] == total["prompts"] == len(PROMPTS)
    prices = resolve_prices(load_config(pool).models)
    as_is = prices["big"].cost(TokenUsage(100, 300))
    assert total["cost_as_is_usd"] == pytest.approx(len(PROMPTS) * as_is)  # everything on big, the log's tokens
    routed = sum(prices[name].cost(TokenUsage(100, 300)) * group["prompts"] for name, group in summary["by_model"].items())
    assert total["cost_routed_usd"] == pytest.approx(routed)
    assert total["savings_usd"] == pytest.approx(total["cost_as_is_usd"] - total["cost_routed_usd"])
    assert summary["by_tier"]["rules"]["prompts"] == 1  # the urgent one, by the policy's own rule
    assert set(summary["by_cohort"]) == {"eng", "support", "legal"} and summary["by_cohort"]["support"]["prompts"] == 3
    assert sum(g["prompts"] for g in summary["by_task"].values()) == len(PROMPTS)
    assert 0 <= total["quality_routed"] <= 1 and total["quality_as_is_sd"] > 0
    # the knob's curve runs from all-on-the-best-predicted to all-on-the-cheapest
    knob = summary["curve"]["knob"]
    assert knob[0]["cost_usd"] >= knob[-1]["cost_usd"]
    assert knob[-1]["cost_usd"] == pytest.approx(summary["curve"]["single_model"]["small"]["cost_usd"])


def test_the_knob_moves_the_savings(tmp_path, pool):
    log = write_log(tmp_path)
    cheap = run_audit(log, pool, overrides={"lambda": 5.0}, progress=False)["total"]
    dear = run_audit(log, pool, overrides={"lambda": 0.0}, progress=False)["total"]
    assert cheap["savings_usd"] > dear["savings_usd"]
    assert cheap["quality_routed"] <= dear["quality_routed"]


def test_a_log_without_models_needs_current(tmp_path, pool):
    path = tmp_path / "prompts.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", "cohort"])
        writer.writerows(PROMPTS)
    with pytest.raises(ValueError, match="--current"):
        run_audit(str(path), pool, progress=False)
    summary = run_audit(str(path), pool, current="gpt-4o", progress=False)  # priced from the snapshot, not the pool
    assert summary["total"]["cost_as_is_usd"] > summary["total"]["cost_routed_usd"] > 0
    assert summary["total"]["quality_compared"] == 0  # gpt-4o is not a pool model: no predicted quality for it


def test_the_command_writes_html_and_json(tmp_path, pool, capsys):
    out = tmp_path / "report"
    assert main(["audit", write_log(tmp_path), "--config", pool, "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "cost as is" in printed and "eng" in printed
    summary = json.loads((out / "audit.json").read_text())
    html = (out / "audit.html").read_text()
    assert summary["prompts"] == len(PROMPTS)
    assert "new Chart(" in html and "Chart.js" in html and "<script src=" not in html  # self-contained
    assert main(["audit", str(tmp_path / "missing.jsonl"), "--config", pool, "--out", str(out)]) == 2


def test_the_audit_reads_a_ledger_with_stored_prompts(tmp_path, pool):
    from pointsman.ledger import LedgerRecord
    from pointsman.ledger.sqlite import SqliteSink

    sink = SqliteSink(str(tmp_path / "ledger.db"))
    sink.open()
    sink.write([LedgerRecord(id=f"req_{i}", ts=1.7e9 + i, requested_model="auto", status=200, chosen_model="big",
                             cohort=cohort, prompt_tokens=50, completion_tokens=100, prompt=text)
                for i, (text, cohort) in enumerate(PROMPTS)])
    sink.close()
    summary = run_audit(f"sqlite:///{tmp_path}/ledger.db", pool, progress=False)
    prices = resolve_prices(load_config(pool).models)
    assert summary["prompts"] == len(PROMPTS)
    assert summary["total"]["cost_as_is_usd"] == pytest.approx(len(PROMPTS) * prices["big"].cost(TokenUsage(50, 100)))
    db = sqlite3.connect(tmp_path / "empty.db")
    db.execute("CREATE TABLE x (a)")
    db.close()
    with pytest.raises(ValueError, match="store_prompts"):
        run_audit(f"sqlite:///{tmp_path}/empty.db", pool, progress=False)
