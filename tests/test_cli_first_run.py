"""What a new user meets on the command line: one clear line for a bad ledger URL or prices file, and the
documented defaults."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from pointsman.cli import main


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pointsman.cli", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


def closed_port() -> int:
    with socket.socket() as probe:  # nothing listens here once the probe is closed: the connection is refused
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


LEDGER_COMMANDS = [["keys", "list"], ["budgets", "list"], ["spend"]]


@pytest.mark.parametrize("command", LEDGER_COMMANDS, ids=" ".join)
def test_a_sqlite_ledger_that_cannot_be_opened_is_one_line(command, tmp_path):
    url = f"sqlite:///{tmp_path}/no/such/dir/x.db"
    done = run(*command, "--ledger", url)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == f"pointsman {command[0]}: cannot open the ledger {url}: unable to open database file"


@pytest.mark.parametrize("command", LEDGER_COMMANDS, ids=" ".join)
def test_a_postgres_ledger_that_cannot_be_reached_is_one_line_without_its_password(command):
    pytest.importorskip("psycopg")
    port = closed_port()
    done = run(*command, "--ledger", f"postgresql://u:s3cretpw@127.0.0.1:{port}/test")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "s3cretpw" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"pointsman {command[0]}: cannot open the ledger postgresql://u:***@127.0.0.1:{port}/test: ")


def test_eval_names_the_prices_file_and_its_columns(tmp_path, capsys):
    rows = [{"prompt": f"question {i}", "model": m, "score": i % 2} for i in range(6) for m in ("small", "big")]
    (tmp_path / "outcomes.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    prices = tmp_path / "prices.csv"
    prices.write_text("model,input,output\nsmall,0.2,0.6\nbig,5,15\n")
    code = main(["eval", str(tmp_path / "outcomes.jsonl"), "--prices", str(prices), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.strip().splitlines()[-1] == (f"pointsman eval: {prices}: a prices CSV needs the columns "
                                            "model,input_usd_per_mtok,output_usd_per_mtok (it has model,input,output)")


def test_eval_names_a_price_that_is_not_a_number(tmp_path, capsys):
    (tmp_path / "outcomes.jsonl").write_text(json.dumps({"prompt": "q", "model": "small", "score": 1}))
    prices = tmp_path / "prices.csv"
    prices.write_text("model,input_usd_per_mtok,output_usd_per_mtok\nsmall,0.2,cheap\n")
    assert main(["eval", str(tmp_path / "outcomes.jsonl"), "--prices", str(prices), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"pointsman eval: {prices}:2: output_usd_per_mtok must be a number (USD per million tokens), got 'cheap'")


def test_route_without_router_uses_the_shipped_one(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "hello"}\n{"prompt": "prove that sqrt 2 is irrational"}\n')
    default = run("route", str(prompts), "--lambda", "0.5")
    assert default.returncode == 0, default.stderr
    named = run("route", "--router", "default", str(prompts), "--lambda", "0.5")
    assert named.returncode == 0, named.stderr
    assert default.stdout == named.stdout and len(default.stdout.splitlines()) == 2
    assert json.loads(default.stdout.splitlines()[0])["tier"] == "semantic"


def test_route_help_says_what_router_it_uses_by_default():
    done = run("route", "--help")
    assert done.returncode == 0
    assert "[--router ROUTER]" in done.stdout  # optional in the usage line
    assert "default: the shipped router" in " ".join(done.stdout.split())


def test_route_with_a_config_and_no_router_uses_the_router_its_policy_names(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "hello"}\n')
    pool = tmp_path / "pool.yaml"
    pool.write_text('models:\n'
                    '  - {name: cheap, provider: openai, base_url: "http://127.0.0.1:9/v1", prices: {input: 0.2, output: 0.6}}\n'
                    '  - {name: strong, provider: openai, base_url: "http://127.0.0.1:9/v1", prices: {input: 5, output: 15}}\n'
                    'policies:\n  auto: {semantic: {router: missing-router.npz}}\n')
    done = run("route", "--config", str(pool), str(prompts), cwd=tmp_path)  # as the gateway would: its policy's router
    assert done.returncode == 2 and "missing-router.npz does not exist" in done.stderr, done.stderr
    given = run("route", "--config", str(pool), "--router", "default", str(prompts), cwd=tmp_path)  # the flag wins
    assert given.returncode == 0 and set(json.loads(given.stdout)["quality"]) == {"cheap", "strong"}, given.stderr


def test_serve_names_a_ledger_it_cannot_open_and_exits():
    port = closed_port()
    url = f"postgresql://u:s3cretpw@127.0.0.1:{closed_port()}/test"
    done = subprocess.run([sys.executable, "-m", "pointsman.cli", "serve", "--ledger", url, "--port", str(port)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr and "s3cretpw" not in done.stderr
    assert f"cannot open the ledger {url.replace('s3cretpw', '***')}: " in done.stderr, done.stderr
