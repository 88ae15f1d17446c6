"""`pointsman train`, `route` and `calibrate` on a user's long-format file, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pointsman.cli import main

EASY = ["hello there", "good morning", "thanks a lot", "what is 2 + 2?", "say hi", "name a colour"]
HARD = ["prove that sqrt 2 is irrational", "derive the quadratic formula", "prove there are infinitely many primes",
        "prove the AM-GM inequality", "derive Stirling's approximation", "prove Fermat's little theorem"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("router")
    rows = [{"prompt": p, "model": "small", "score": 1, "output_tokens": 20} for p in EASY]
    rows += [{"prompt": p, "model": "small", "score": 0, "output_tokens": 20} for p in HARD]
    rows += [{"prompt": p, "model": "big", "score": 1, "output_tokens": 200} for p in EASY + HARD]
    (folder / "outcomes.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (folder / "prices.csv").write_text("model,input_usd_per_mtok,output_usd_per_mtok\nsmall,0.2,0.6\nbig,5,15\n")
    (folder / "prompts.jsonl").write_text('{"prompt": "good evening"}\n'
                                          '{"messages": [{"role": "user", "content": "prove that sqrt 3 is irrational"}]}\n')
    return folder


@pytest.fixture(scope="module")
def router(data):
    path = data / "router.npz"
    assert main(["train", str(data / "outcomes.jsonl"), "-o", str(path), "--prices", str(data / "prices.csv"),
                 "--anchor", "big=0.85", "--anchor", "small=0.4"]) == 0
    return path


def route(router, data, *extra: str) -> list[dict]:
    done = subprocess.run([sys.executable, "-m", "pointsman.cli", "route", "--router", str(router), str(data / "prompts.jsonl"),
                           *extra], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_route_reports_quality_cost_tier_and_choice(router, data):
    easy, hard = route(router, data, "--lambda", "0.5")
    assert set(easy["quality"]) == {"small", "big"} and easy["cost_usd"]["big"] > easy["cost_usd"]["small"] > 0
    assert easy["tier"] == "semantic" and easy["model"] == "small"
    assert hard["model"] == "big" and hard["quality"]["big"] > hard["quality"]["small"]
    cheap_only = route(router, data, "--lambda", "1000")
    assert [r["model"] for r in cheap_only] == ["small", "small"]


def test_calibrate_states_the_quality_bound(router, data, capsys):
    assert main(["calibrate", str(data / "outcomes.jsonl"), "--router", str(router), "--quality-floor", "0.6"]) == 2
    assert "--prices" in capsys.readouterr().err  # costs are needed to trade them off
    prices = ["--prices", str(data / "prices.csv")]
    assert main(["calibrate", str(data / "outcomes.jsonl"), "--router", str(router), "--quality-floor", "0.6", *prices]) == 0
    out = capsys.readouterr().out
    assert "quality >= 0.6 with 95% confidence on 12 prompts" in out and "lambda = " in out
    assert main(["calibrate", str(data / "outcomes.jsonl"), "--router", str(router), "--strong-share", "0.5", *prices]) == 0
    assert "of 12 calibration prompts go to the most expensive model" in capsys.readouterr().out


def test_bad_data_is_a_message_not_a_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x", "model": "m"}\n')
    assert main(["train", str(bad), "-o", str(tmp_path / "r.npz")]) == 2
    assert "needs prompt, model, score" in capsys.readouterr().err


def test_calibrate_is_honest_about_a_small_perfect_sample(tmp_path, capsys):
    """Issue 17: 24 prompts that all scored 1 gave a 95% lower bound of 1.000 (the normal approximation collapses);
    an unreachable --strong-share was silent; in-sample calibration was not said."""
    rows = []
    for i in range(24):
        rows += [{"prompt": f"question number {i} about apples", "model": "small", "score": 1, "output_tokens": 20},
                 {"prompt": f"question number {i} about apples", "model": "big", "score": 1, "output_tokens": 20}]
    data = tmp_path / "perfect.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    prices = tmp_path / "prices.csv"
    prices.write_text("model,input_usd_per_mtok,output_usd_per_mtok\nsmall,0.2,0.6\nbig,5,15\n")
    router = tmp_path / "r.npz"
    assert main(["train", str(data), "-o", str(router), "--prices", str(prices)]) == 0
    capsys.readouterr()
    assert main(["calibrate", str(data), "--router", str(router), "--quality-floor", "0.99", "--prices", str(prices)]) == 1
    out = capsys.readouterr()
    assert "the best is 0.883" in out.out and "in-sample" in out.err
    assert main(["calibrate", str(data), "--router", str(router), "--strong-share", "0.5", "--prices", str(prices)]) == 0
    assert "no knob setting sends 50.0%" in capsys.readouterr().err


def test_train_refuses_outcomes_of_one_model(tmp_path, capsys):
    data = tmp_path / "one.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": f"p{i}", "model": "solo", "score": 1}) for i in range(5)))
    assert main(["train", str(data), "-o", str(tmp_path / "r.npz")]) == 2
    assert "two or more" in capsys.readouterr().err


def test_route_lines_carry_the_input_id(router, data, tmp_path):
    prompts = tmp_path / "with-ids.jsonl"
    prompts.write_text('{"id": "q-7", "prompt": "good evening"}\n{"prompt": "prove it"}\n')
    done = subprocess.run([sys.executable, "-m", "pointsman.cli", "route", "--router", str(router), str(prompts)],
                          capture_output=True, text=True, timeout=120, check=True)
    first, second = [json.loads(line) for line in done.stdout.splitlines()]
    assert first["id"] == "q-7" and second["id"] == 1  # the line's own id, else its index
