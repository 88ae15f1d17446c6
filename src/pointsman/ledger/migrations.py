"""Versioned changes to the tables in the ledger's database, for databases made by an earlier Pointsman.

Each component (``ledger``, ``accounting``, ...) lists its migrations as ``(version, [steps])``, a step being
SQL or a function of the connection (a back-fill); ``schema_version`` (one row per component) records how far a
database has come. :func:`migrate` applies what is missing, in order, in one transaction that replicas starting
at the same moment wait on (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: an advisory lock per component and
schema). The ledger's base tables (``SCHEMA`` in sqlite.py and postgres.py) stay as first shipped; its steps
are below, and the sinks and the spend readers call :func:`migrate_sqlite` / :func:`migrate_postgres`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, Union

from pointsman.ledger.rollup import POSTGRES_SCHEMA, PREVIOUS, SQLITE_SCHEMA, Rollup, write_rollup

__all__ = ["LEDGER_VERSION", "Migration", "is_postgres", "migrate", "migrate_postgres", "migrate_sqlite"]

Step = Union[str, Callable[[Any], None]]
Migration = tuple[int, Sequence[Step]]
VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
BACKFILL_CHUNK = 20_000


def is_postgres(db: Any) -> bool:
    return type(db).__module__.startswith("psycopg")


def migrate(db: Any, component: str, migrations: Sequence[Migration]) -> int:
    """Bring ``component``'s tables to its last migration; returns the version the database is at.

    ``db``: an autocommit sqlite3 connection, or a psycopg connection."""
    versions = [v for v, _ in migrations]
    if versions != sorted(set(versions)):
        raise ValueError(f"{component}: migrations must have increasing, distinct versions, not {versions}")
    if is_postgres(db):
        with db.transaction():
            # one lock per component and schema (tests and tenants may keep several schemas in one database)
            db.execute("SELECT pg_advisory_xact_lock(hashtext(%s || current_schema()))", (f"pointsman.{component}.",))
            db.execute(VERSION_TABLE)
            return _apply(db, component, migrations, "%s")
    db.execute(VERSION_TABLE)
    latest = versions[-1] if versions else 0
    if _version(db, component, "?") == latest:
        return latest  # the usual case: nothing to do, and no write lock taken
    db.execute("BEGIN IMMEDIATE")  # the write lock first: another process may be migrating at this moment
    try:
        version = _apply(db, component, migrations, "?")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return version


def _version(db: Any, component: str, mark: str) -> int:
    row = db.execute(f"SELECT version FROM schema_version WHERE component = {mark}", (component,)).fetchone()
    return int(row[0]) if row else 0


def _apply(db: Any, component: str, migrations: Sequence[Migration], mark: str) -> int:
    current = _version(db, component, mark)
    latest = migrations[-1][0] if migrations else 0
    if current > latest:
        raise RuntimeError(f"the database's {component} tables are at version {current}, newer than this "
                           f"pointsman knows ({latest}): upgrade pointsman")
    for version, steps in migrations:
        if version > current:
            for step in steps:
                if isinstance(step, str):
                    db.execute(step)
                else:
                    step(db)
            current = version
    db.execute(f"INSERT INTO schema_version (component, version) VALUES ({mark}, {mark}) "
               "ON CONFLICT (component) DO UPDATE SET version = excluded.version", (component, current))
    return current


# -- the ledger's own steps ------------------------------------------------------------------------------------
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
    cursor.close()  # PostgreSQL: an open named cursor would block a later step's ALTER TABLE in this transaction


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


# Step 3: each request's session (routing/sticky.py), for per-session spend (too many sessions to roll up by day)
_SESSION = ["ALTER TABLE requests ADD COLUMN session TEXT",
            "CREATE INDEX IF NOT EXISTS requests_session ON requests (session, ts)"]
SQLITE_STEPS: list[Migration] = [(1, [_cost_columns("INTEGER", "0")]), (2, [_spend_daily(SQLITE_SCHEMA, "?")]),
                                 (3, _SESSION)]
POSTGRES_STEPS: list[Migration] = [(1, [_cost_columns("BOOLEAN", "false")]), (2, [_spend_daily(POSTGRES_SCHEMA, "%s")]),
                                   (3, _SESSION)]
LEDGER_VERSION = SQLITE_STEPS[-1][0]
assert [v for v, _ in POSTGRES_STEPS] == [v for v, _ in SQLITE_STEPS]


def migrate_sqlite(db: sqlite3.Connection) -> int:
    """Bring a SQLite ledger (its base tables made; an autocommit connection, as the sink's) to the current
    version; returns the steps applied."""
    db.execute(VERSION_TABLE)
    before = _version(db, "ledger", "?")
    return migrate(db, "ledger", SQLITE_STEPS) - before


def migrate_postgres(db: Any) -> int:
    """Bring a PostgreSQL ledger (its base tables made) to the current version; returns the steps applied."""
    with db.transaction():
        db.execute(VERSION_TABLE)
        before = _version(db, "ledger", "%s")
    return migrate(db, "ledger", POSTGRES_STEPS) - before
