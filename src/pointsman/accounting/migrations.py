"""Versioned schema for the tables kept beside the ledger: a ``schema_version`` row per component and ordered
migrations, applied once, in order, in one transaction that other replicas starting at the same moment wait on.

A component (``accounting``, or another module that adds tables) lists its migrations as ``(version, [SQL])``;
:func:`migrate` applies those newer than the database's version. The SQL is written once for SQLite and
PostgreSQL: ``DOUBLE PRECISION``, ``BIGINT`` and ``BOOLEAN`` are types both accept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["Migration", "migrate", "is_postgres"]

Migration = tuple[int, Sequence[str]]

_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (component TEXT PRIMARY KEY, version INTEGER NOT NULL)"


def is_postgres(db: Any) -> bool:
    return type(db).__module__.startswith("psycopg")


def migrate(db: Any, component: str, migrations: Sequence[Migration]) -> int:
    """Bring ``component``'s tables to the last migration; returns the version the database is at.

    ``db`` is an autocommit sqlite3 connection or a psycopg connection. Replicas racing at start-up serialise:
    SQLite on ``BEGIN IMMEDIATE``, PostgreSQL on a transaction-scoped advisory lock named by the component."""
    versions = [v for v, _ in migrations]
    if versions != sorted(set(versions)):
        raise ValueError(f"{component}: migrations must have increasing, distinct versions, not {versions}")
    if is_postgres(db):
        with db.transaction():
            # one lock per component and schema (tests and tenants may keep several schemas in one database)
            db.execute("SELECT pg_advisory_xact_lock(hashtext(%s || current_schema()))", (f"pointsman.{component}.",))
            db.execute(_VERSION_TABLE)
            return _apply(db, component, migrations, "%s")
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute(_VERSION_TABLE)
        version = _apply(db, component, migrations, "?")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return version


def _apply(db: Any, component: str, migrations: Sequence[Migration], mark: str) -> int:
    row = db.execute(f"SELECT version FROM schema_version WHERE component = {mark}", (component,)).fetchone()
    current = int(row[0]) if row else 0
    latest = migrations[-1][0] if migrations else 0
    if current > latest:
        raise RuntimeError(f"the database's {component} tables are at version {current}, newer than this "
                           f"pointsman knows ({latest}): upgrade pointsman")
    for version, statements in migrations:
        if version > current:
            for statement in statements:
                db.execute(statement)
            current = version
    db.execute(f"INSERT INTO schema_version (component, version) VALUES ({mark}, {mark}) "
               "ON CONFLICT (component) DO UPDATE SET version = excluded.version", (component, current))
    return current
