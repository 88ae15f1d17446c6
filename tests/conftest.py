from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import GatewayServer, UpstreamServer

# fixtures the accounting tests share (redis_prefix, pg_url): registered here, before any test imports the module,
# so that pytest rewrites its asserts
pytest_plugins = ["tests.accounting_services"]

API_KEY_ENV = "POINTSMAN_TEST_UPSTREAM_KEY"
UPSTREAM_SECRET = "sk-upstream-secret-do-not-leak-8c1f"


@pytest.fixture(scope="session")
def upstream() -> Iterator[UpstreamServer]:
    server = UpstreamServer().start()
    yield server
    server.stop()


def model(name: str, upstream: UpstreamServer, behaviour: str = "echo", **extra: Any) -> dict[str, Any]:
    """A pool entry whose upstream model id is the behaviour the test upstream should show."""
    return {"name": name, "provider": "openai", "base_url": f"{upstream.url}/v1", "model": behaviour,
            "api_key_env": API_KEY_ENV, **extra}


@pytest.fixture
def make_gateway(tmp_path: Path, upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., GatewayServer]]:
    monkeypatch.setenv(API_KEY_ENV, UPSTREAM_SECRET)
    started: list[GatewayServer] = []

    def start(config: dict[str, Any]) -> GatewayServer:
        server = GatewayServer(config, tmp_path / f"ledger{len(started)}.db").start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def ledger_rows(server: GatewayServer) -> list[dict[str, Any]]:
    server.flush_ledger()
    db = sqlite3.connect(server.ledger_path)
    db.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in db.execute("SELECT * FROM requests ORDER BY ts")]
    finally:
        db.close()


def skip_unless_service(reason: str) -> None:
    """Skip a test whose service (Redis, PostgreSQL) is not running, on a developer's machine; under CI=true
    the service is part of the machine, so its absence fails the run instead of passing it in silence."""
    import os

    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason}, and CI=true: the service must run in CI", pytrace=False)
    pytest.skip(reason)

