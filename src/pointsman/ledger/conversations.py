"""Stored responses of the Responses API (`store: true`), beside the ledger in its database (SQLite or PostgreSQL).

One row per response: the Response object the client got (what `GET /v1/responses/{id}` returns) and the
conversation up to and including it as chat messages (what `previous_response_id` continues from), owned by a
tenant (the client key's id and team): another tenant's id is unknown to it. A row is committed before the
answer is sent, so that a replica the next turn reaches finds it.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from pointsman.ledger.migrations import Migration, migrate
from pointsman.ledger.tables import LedgerTables

__all__ = ["ConversationStore", "conversation_store_from_url"]

_TABLE = """CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, request_id TEXT NOT NULL, ts {real} NOT NULL,
    response TEXT NOT NULL, messages TEXT NOT NULL
)"""
SQLITE_STEPS: list[Migration] = [(1, [_TABLE.format(real="REAL"), "CREATE INDEX IF NOT EXISTS responses_ts ON responses (ts)"])]
POSTGRES_STEPS: list[Migration] = [(1, [_TABLE.format(real="DOUBLE PRECISION"),
                                        "CREATE INDEX IF NOT EXISTS responses_ts ON responses (ts)"])]


class ConversationStore(LedgerTables):
    """Blocking calls (run them in a worker thread); ledger/tables.py: one connection per thread."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        migrate(self._conn, "responses", POSTGRES_STEPS if self.postgres else SQLITE_STEPS)

    def put(self, response_id: str, tenant: str, request_id: str, response: dict[str, Any],
            messages: list[dict[str, Any]]) -> None:
        self._conn.execute(self._sql("INSERT INTO responses (id, tenant, request_id, ts, response, messages) "
                                     "VALUES (?, ?, ?, ?, ?, ?)"),
                           (response_id, tenant, request_id, time.time(), orjson.dumps(response).decode(),
                            orjson.dumps(messages).decode()))

    def get(self, response_id: str, tenant: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        """(the Response object, the conversation as chat messages), None when this tenant has no such response."""
        row = self._conn.execute(self._sql("SELECT response, messages FROM responses WHERE id = ? AND tenant = ?"),
                                 (response_id, tenant)).fetchone()
        return (orjson.loads(row[0]), orjson.loads(row[1])) if row else None

    def delete(self, response_id: str, tenant: str) -> bool:
        cursor = self._conn.execute(self._sql("DELETE FROM responses WHERE id = ? AND tenant = ?"), (response_id, tenant))
        return bool(cursor.rowcount)

    def purge(self, before: float) -> int:
        return int(self._conn.execute(self._sql("DELETE FROM responses WHERE ts < ?"), (before,)).rowcount)


def conversation_store_from_url(url: str) -> ConversationStore:
    return ConversationStore(url)
