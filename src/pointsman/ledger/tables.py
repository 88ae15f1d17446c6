"""Tables kept beside the ledger, in its database (SQLite or PostgreSQL): the base the stores share (learning
outcomes, virtual keys and limits, stored conversations).

Calls block: the gateway runs them in worker threads, so each thread gets its own connection. SQL is written
once with ``?`` placeholders (PostgreSQL gets ``%s``); reads run on autocommit connections and see the last
commit; writes run in :meth:`LedgerTables._write`, a transaction that workers and replicas serialise on
(SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a transaction). An acknowledged write survives the process dying.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

__all__ = ["LedgerTables", "is_postgres_url"]


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


class LedgerTables:
    def __init__(self, url: str) -> None:
        self.url = url
        self.postgres = is_postgres_url(url)
        self.placeholder = "%s" if self.postgres else "?"
        self._local = threading.local()
        self._connections: list[Any] = []
        self._lock = threading.Lock()

    def _on_connect(self, db: Any) -> None:
        """What every new connection needs first (the ledger's base tables, say); nothing by default."""

    def _connect(self) -> Any:
        if self.postgres:
            import psycopg  # the postgres extra; imported only where a PostgreSQL ledger is used

            db: Any = psycopg.connect(self.url, autocommit=True)
        else:
            from pointsman.ledger import sqlite_path

            db = sqlite3.connect(sqlite_path(self.url), check_same_thread=False, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # a commit is in the WAL file: it survives the process dying
        self._on_connect(db)
        return db

    @property
    def _conn(self) -> Any:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
            with self._lock:
                self._connections.append(db)
        return db

    def _sql(self, query: str) -> str:
        return query if not self.postgres else query.replace("?", "%s")

    def _fetch(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return list(self._conn.execute(self._sql(query), params).fetchall())

    def _write(self, db: Any) -> Any:
        """``with self._write(db):`` one write transaction."""
        return db.transaction() if self.postgres else _Immediate(db)

    def close(self) -> None:
        with self._lock:
            for db in self._connections:
                db.close()
            self._connections.clear()
        self._local = threading.local()


class _Immediate:
    """BEGIN IMMEDIATE ... COMMIT (or ROLLBACK) on an autocommit SQLite connection: the write lock first."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
