"""Issue 17, the first hour of a new user: what the gateway and the `pointsman` command say when something is
missing or unreachable, and what `--help` tells before anything is tried."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import httpx
import pytest

from tests.servers import free_port

HELLO = [{"role": "user", "content": "hello"}]


def pointsman(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real `pointsman` entry point, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "pointsman.cli", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_no_network_names_every_model_tried_in_order(make_gateway):
    """With every upstream unreachable, the error named one upstream URL and no model: the user could not tell
    which models had been tried, nor that the last one had failed too."""
    def nowhere(name: str, price: float) -> dict:
        return {"name": name, "provider": "openai", "base_url": "http://127.0.0.1:9/v1", "max_retries": 0,
                "connect_timeout_s": 1, "prices": {"input": price, "output": price}}

    gw = make_gateway({"models": [nowhere("cheap-one", 1), nowhere("middle-one", 2), nowhere("dear-one", 3)],
                       "policies": {"auto": {"default": "cheap-one", "fallbacks": ["middle-one", "dear-one"]}}})
    response = httpx.post(f"{gw.base_url}/chat/completions", json={"model": "auto", "messages": HELLO}, timeout=30)
    assert response.status_code == 502
    message = response.json()["error"]["message"]
    assert "cannot connect" in message
    positions = [message.find(name) for name in ("cheap-one", "middle-one", "dear-one")]
    assert -1 not in positions and positions == sorted(positions), message  # every model, in the order tried
    assert "after 3 attempts" in message


def test_a_single_model_error_names_it(make_gateway):
    gw = make_gateway({"models": [{"name": "nowhere", "provider": "openai", "base_url": "http://127.0.0.1:9/v1",
                                   "max_retries": 1, "connect_timeout_s": 1}], "server": {"retry_backoff_s": 0}})
    message = httpx.post(f"{gw.base_url}/chat/completions", json={"model": "nowhere", "messages": HELLO},
                         timeout=30).json()["error"]["message"]
    assert message.startswith("nowhere: cannot connect to upstream") and message.endswith("(after 2 attempts)")


def test_admin_api_errors_agree_and_say_how_to_enable_it(make_gateway, upstream, monkeypatch):
    """The 401 asked for an admin key when none was configured, while the 403 said the admin API was disabled."""
    from tests.conftest import model

    off = make_gateway({"models": [model("m", upstream)]})
    for headers, status in [({}, 401), ({"authorization": "Bearer anything"}, 403)]:
        error = httpx.get(f"{off.url}/admin/models", headers=headers).json()["error"]
        assert error["code"] == "admin_disabled", error
        assert "disabled" in error["message"] and "server.admin_key_env" in error["message"]
        assert "pointsman serve --admin-key-env" in error["message"]
    monkeypatch.setenv("PM_FIRST_HOUR_ADMIN", "sk-first-hour-admin")
    on = make_gateway({"models": [model("m", upstream)], "server": {"admin_key_env": "PM_FIRST_HOUR_ADMIN"}})
    missing = httpx.get(f"{on.url}/admin/models").json()["error"]
    wrong = httpx.get(f"{on.url}/admin/models", headers={"authorization": "Bearer sk-nope"}).json()["error"]
    assert "disabled" not in missing["message"] + wrong["message"]
    assert "admin key" in missing["message"] and "admin key" in wrong["message"]


def test_serve_admin_key_env_enables_the_admin_api(tmp_path):
    config = tmp_path / "pool.yaml"
    config.write_text("models: [{name: m, provider: openai, base_url: 'http://127.0.0.1:9/v1'}]\n"
                      "server: {cache: {enabled: false}}\n")
    unset = pointsman("serve", "--config", str(config), "--port", str(free_port()), "--admin-key-env", "PM_FIRST_HOUR_UNSET",
                      "--ledger", f"sqlite:///{tmp_path / 'l.db'}", env={"PM_FIRST_HOUR_UNSET": ""})
    assert unset.returncode == 2 and "PM_FIRST_HOUR_UNSET" in unset.stderr
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "pointsman.cli", "serve", "--config", str(config), "--port", str(port),
                               "--admin-key-env", "PM_FIRST_HOUR_ADMIN", "--ledger", f"sqlite:///{tmp_path / 'l.db'}"],
                              env={**os.environ, "PM_FIRST_HOUR_ADMIN": "sk-first-hour"}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        status = None
        for _ in range(600):
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/admin/models", headers={"authorization": "Bearer sk-first-hour"})
                break
            except httpx.TransportError:
                if server.poll() is not None:
                    break
                import time

                time.sleep(0.1)
        assert status is not None and status.status_code == 200 and status.json()["data"][0]["id"] == "m"
    finally:
        server.terminate()
        server.wait(30)


def test_eval_without_prices_says_what_is_missing(tmp_path):
    """`pointsman eval` on outcomes without costs printed numpy's RuntimeWarnings, then `no points`."""
    rows = []
    for i in range(12):
        rows += [{"prompt": f"question {i} about pears", "model": "small", "score": i % 2},
                 {"prompt": f"question {i} about pears", "model": "big", "score": 1}]
    data = tmp_path / "outcomes.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    done = pointsman("eval", str(data), "--folds", "3", "--quick", "--out", str(tmp_path / "rep"))
    assert done.returncode == 2, done.stderr
    assert "--prices" in done.stderr and "small" in done.stderr and "big" in done.stderr
    assert "Warning" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    # with prices but no output tokens in the data, the predicted costs were NaN (numpy warned, routing on nothing)
    prices = tmp_path / "prices.csv"
    prices.write_text("model,input_usd_per_mtok,output_usd_per_mtok\nsmall,0.2,0.6\nbig,5,15\n")
    done = pointsman("eval", str(data), "--folds", "3", "--quick", "--out", str(tmp_path / "rep"), "--prices", str(prices))
    assert done.returncode == 0 and "Warning" not in done.stderr, done.stderr
    assert "| logistic |" in done.stdout


def cli_parsers(monkeypatch) -> dict[str, argparse.ArgumentParser]:
    """Every parser of the `pointsman` command (the top level and each subcommand), as main() builds them."""
    from pointsman import cli

    class Built(Exception):
        pass

    def capture(self, *args, **kwargs):
        raise Built(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(Built) as built:
        cli.main([])
    top = built.value.args[0]
    parsers = {"pointsman": top}
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers.update(action.choices)
    return parsers


def test_every_option_has_help_and_shows_its_default(monkeypatch):
    """`--help` said nothing about half the flags (--host, --port, --router, --lambda...) nor their defaults."""
    parsers = cli_parsers(monkeypatch)
    assert {"serve", "check", "train", "route", "calibrate", "eval"} <= set(parsers)
    for name, parser in parsers.items():
        text = parser.format_help()
        for action in parser._actions:
            if action.help == argparse.SUPPRESS:
                continue
            assert action.help, f"pointsman {name}: {action.option_strings or action.dest} has no help"
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS) and action.default != []:
                assert f"(default: {action.default})" in " ".join(text.split()), \
                    f"pointsman {name} --help does not show the default of {action.option_strings[0]}"


def test_help_from_the_entry_point_shows_defaults():
    done = pointsman("serve", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "(default: 1)" in text and "(default: warning)" in text and "--admin-key-env" in text


def test_serve_says_what_is_on_at_start():
    from pointsman.cli import what_is_on
    from pointsman.config.loader import parse_config

    pool = [{"name": "m", "provider": "openai", "base_url": "http://127.0.0.1:9/v1"}]
    assert what_is_on(parse_config({"models": pool})) == (
        "cache: on; gateway open: no client keys (server.api_keys_env), until a virtual key exists; "
        "admin API off (enable with --admin-key-env NAME)")
    keyed = parse_config({"models": pool, "server": {"admin_key_env": "PM_A", "cache": {"enabled": False}}})
    assert what_is_on(keyed) == ("cache: off; gateway clients need the admin key ($PM_A) or a virtual key; "
                                 "admin API on ($PM_A)")
    client_keys = parse_config({"models": pool, "server": {"api_keys_env": ["PM_K"]}})
    assert "gateway client keys from $PM_K or virtual keys;" in what_is_on(client_keys)


def test_the_one_time_table_distillation_is_info_not_a_warning(tmp_path, monkeypatch, caplog):
    """At first start the static table's distillation was logged as a warning, as if something were wrong."""
    import logging

    import numpy as np

    from pointsman.embed import static as static_module
    from tests.test_router_offline import needs_encoder

    if needs_encoder.args[0]:
        pytest.skip(needs_encoder.kwargs.get("reason", "no encoder"))
    monkeypatch.setattr(static_module, "distill_table",
                        lambda source, *args, **kwargs: np.zeros((8, static_module.STATIC_DIMS), np.float32))
    with caplog.at_level(logging.INFO, logger="pointsman"):
        static_module.StaticEncoder(cache_dir=tmp_path).load()
    distilling = [r for r in caplog.records if "distilling the static routing table" in r.getMessage()]
    assert [r.levelno for r in distilling] == [logging.INFO]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_models_cooling_down_say_why(make_gateway):
    """After a few requests with no network every model cooled down, and the 503 said only `cooling down`."""
    gw = make_gateway({"models": [{"name": "nowhere", "provider": "openai", "base_url": "http://127.0.0.1:9/v1",
                                   "max_retries": 0, "connect_timeout_s": 1}],
                       "server": {"cooldown_failures": 1, "cooldown_s": 60}})
    first = httpx.post(f"{gw.base_url}/chat/completions", json={"model": "nowhere", "messages": HELLO}, timeout=30)
    assert first.status_code == 502
    cooling = httpx.post(f"{gw.base_url}/chat/completions", json={"model": "nowhere", "messages": HELLO}, timeout=30)
    error = cooling.json()["error"]
    assert cooling.status_code == 503 and error["code"] == "all_models_cooling_down"
    assert "nowhere: cooling down for" in error["message"] and "last failure: cannot connect" in error["message"]
