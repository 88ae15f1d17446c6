"""Versioned changes to the ledger's tables, for databases made by an earlier Pointsman.

The base tables (``SCHEMA`` in sqlite.py and postgres.py) stay as first shipped; each step here changes them once,
in order, and ``schema_version`` (one row per component) records how far a database has come. The sinks and the
spend readers call :func:`migrate_sqlite` / :func:`migrate_postgres` when they open it: the first one to get the
lock applies what is missing, the others then find nothing to do.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from pointsman.ledger.rollup import POSTGRES_SCHEMA, PREVIOUS, SQLITE_SCHEMA, Rollup, write_rollup

__all__ = ["LEDGER_VERSION", "migrate_postgres", "migrate_sqlite"]

COMPONENT = "ledger"
VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
BACKFILL_CHUNK = 20_000


def _backfill(db: Any, placeholder: str) -> None:
    """The roll-up of the rows written before it existed, read in chunks."""
    columns = ", ".join(PREVIOUS)
    # PostgreSQL: a server-side cursor, so that a large ledger is not read into memory at once
    cursor = db.cursor() if placeholder == "?" else db.cursor(name="pointsman_backfill")
    cursor.execute(f"SELECT {columns} FROM requests")
    while True:
        rows = cursor.fetchmany(BACKFILL_CHUNK)
        if not rows:
            break
        rollup = Rollup()
        for row in rows:
            rollup.add_row(row, sign=1)
        write_rollup(db.cursor(), rollup, placeholder)


def _cost_columns(boolean: str, false: str) -> Callable[[Any], None]:
    """Step 1: whether a row's cost was estimated, and its cached prompt tokens."""
    def step(db: Any) -> None:
        db.execute(f"ALTER TABLE requests ADD COLUMN cost_estimated {boolean} NOT NULL DEFAULT {false}")
        db.execute("ALTER TABLE requests ADD COLUMN cached_tokens INTEGER NOT NULL DEFAULT 0")
    return step


def _spend_daily(schema: str, placeholder: str) -> Callable[[Any], None]:
    """Step 2: the daily roll-up (rollup.py), filled from the rows already there."""
    def step(db: Any) -> None:
        db.execute(schema)
        _backfill(db, placeholder)
    return step


SQLITE_STEPS = [_cost_columns("INTEGER", "0"), _spend_daily(SQLITE_SCHEMA, "?")]
POSTGRES_STEPS = [_cost_columns("BOOLEAN", "false"), _spend_daily(POSTGRES_SCHEMA, "%s")]
LEDGER_VERSION = len(SQLITE_STEPS)
assert len(POSTGRES_STEPS) == LEDGER_VERSION


def _version(db: Any, placeholder: str) -> int:
    row = db.execute(f"SELECT version FROM schema_version WHERE component = {placeholder}", (COMPONENT,)).fetchone()
    return int(row[0]) if row else 0


def _set_version(db: Any, placeholder: str, version: int) -> None:
    db.execute(f"INSERT INTO schema_version (component, version) VALUES ({placeholder}, {placeholder}) "
               "ON CONFLICT (component) DO UPDATE SET version = excluded.version", (COMPONENT, version))


def migrate_sqlite(db: sqlite3.Connection) -> int:
    """Bring a SQLite ledger (its base tables made) to the current version; returns the steps applied. The
    connection must be in autocommit mode (isolation_level=None), as the sink's is."""
    db.execute(VERSION_TABLE)
    if _version(db, "?") >= LEDGER_VERSION:
        return 0
    db.execute("BEGIN IMMEDIATE")  # the write lock first: another process may be migrating at this moment
    try:
        start = _version(db, "?")
        for version, step in enumerate(SQLITE_STEPS[start:], start + 1):
            step(db)
            _set_version(db, "?", version)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return LEDGER_VERSION - start


def migrate_postgres(db: Any) -> int:
    """Bring a PostgreSQL ledger (its base tables made) to the current version, in one transaction under a lock
    held per schema; returns the steps applied."""
    with db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(hashtext('pointsman.ledger.' || current_schema()))")
        db.execute(VERSION_TABLE)
        start = _version(db, "%s")
        for version, step in enumerate(POSTGRES_STEPS[start:], start + 1):
            step(db)
            _set_version(db, "%s", version)
    return max(LEDGER_VERSION - start, 0)
