"""PostgreSQL ledger sink: one database for every replica (`ledger_url: postgresql://...`).

The same tables as the SQLite sink (requests, prompts); attempts as JSONB. One transaction per batch: a
batch lands whole or not at all, and a retried batch overwrites its own rows (ids are unique), so nothing
is counted twice.
"""

from __future__ import annotations

from typing import Any

from pointsman.ledger.base import LedgerRecord, LedgerSink
from pointsman.ledger.migrations import migrate_postgres
from pointsman.ledger.rollup import batch_rollup, write_rollup
from pointsman.ledger.sqlite import COLUMNS, record_row

__all__ = ["PostgresSink", "SCHEMA"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY, ts DOUBLE PRECISION NOT NULL, requested_model TEXT NOT NULL, status INTEGER NOT NULL,
    chosen_model TEXT, tier TEXT, reason TEXT, stream BOOLEAN NOT NULL, key_id TEXT, "user" TEXT, team TEXT,
    cohort TEXT, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, cost_usd DOUBLE PRECISION NOT NULL,
    ttft_ms DOUBLE PRECISION, latency_ms DOUBLE PRECISION NOT NULL, overhead_ms DOUBLE PRECISION NOT NULL,
    cache_hit BOOLEAN NOT NULL, error TEXT, attempts JSONB NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts);
CREATE TABLE IF NOT EXISTS prompts (id TEXT PRIMARY KEY, ts DOUBLE PRECISION NOT NULL, text TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS prompts_ts ON prompts (ts);
"""

_QUOTED = ['"user"' if c == "user" else c for c in COLUMNS]
INSERT = (f"INSERT INTO requests ({', '.join(_QUOTED)}) VALUES ({', '.join(['%s'] * len(COLUMNS))}) "
          f"ON CONFLICT (id) DO UPDATE SET {', '.join(f'{q} = excluded.{q}' for q in _QUOTED[1:])}")
INSERT_PROMPT = ("INSERT INTO prompts (id, ts, text) VALUES (%s, %s, %s) "
                 "ON CONFLICT (id) DO UPDATE SET ts = excluded.ts, text = excluded.text")


class PostgresSink(LedgerSink):
    def __init__(self, url: str) -> None:
        self.url = url
        self._db: Any = None

    def open(self) -> None:
        import psycopg  # the postgres extra; imported only by gateways that use it

        self._db = psycopg.connect(self.url)
        with self._db.transaction():
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
        migrate_postgres(self._db)  # columns and tables added since SCHEMA (ledger/migrations.py)

    def write(self, records: list[LedgerRecord]) -> None:
        assert self._db is not None
        if self._db.closed or self._db.broken:  # the server restarted: reconnect (the batch is retried whole)
            self.open()
        with self._db.transaction(), self._db.cursor() as cursor:
            rollup = batch_rollup(cursor, records, "%s")  # the daily spend sums (ledger/rollup.py), same transaction
            cursor.executemany(INSERT, [_row(r) for r in records])
            prompts = [(r.id, r.ts, r.prompt) for r in records if r.prompt is not None]
            if prompts:
                cursor.executemany(INSERT_PROMPT, prompts)
            write_rollup(cursor, rollup, "%s")

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _row(record: LedgerRecord) -> tuple[object, ...]:
    row = list(record_row(record))
    row[COLUMNS.index("stream")] = bool(record.stream)
    row[COLUMNS.index("cache_hit")] = bool(record.cache_hit)
    row[COLUMNS.index("cost_estimated")] = bool(record.cost_estimated)
    return tuple(row)
