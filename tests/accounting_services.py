"""Fixtures for the tests of the ledger's database (registered in conftest.py): the machine's Redis under a prefix of its own, and a PostgreSQL schema of its
own, each removed after the test."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from tests.conftest import skip_unless_service

REDIS_URL = "redis://127.0.0.1:6379/0"
PG_SERVER = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001 - no server on this machine
        skip_unless_service(f"no Redis at {REDIS_URL}: {exc}")
    prefix = f"pm-test:{uuid.uuid4().hex[:10]}"
    yield prefix
    for key in client.scan_iter(f"{prefix}:*", count=1000):
        client.delete(key)
    client.close()


def redis_client():  # type: ignore[no-untyped-def]
    import redis

    return redis.Redis.from_url(REDIS_URL)


@contextlib.contextmanager
def pg_schema() -> Iterator[str]:
    """A ledger URL on the machine's PostgreSQL in a schema of its own, dropped afterwards (skip, or fail under
    CI=true, when no server answers)."""
    try:
        import psycopg

        admin = psycopg.connect(PG_SERVER, autocommit=True, connect_timeout=3)
    except Exception as exc:  # noqa: BLE001 - no server on this machine
        skip_unless_service(f"PostgreSQL is not reachable at {PG_SERVER}: {exc}")
    schema = f"pm_{uuid.uuid4().hex[:12]}"
    admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_SERVER}?options={quote(f'-csearch_path={schema}')}"
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    with pg_schema() as url:
        yield url


def pg_rows(url: str, query: str, params: tuple = ()) -> list[tuple]:
    import psycopg

    with psycopg.connect(url) as db:
        return list(db.execute(query, params).fetchall())
