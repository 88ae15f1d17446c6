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
