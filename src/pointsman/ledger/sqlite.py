"""SQLite ledger sink: the embedded default. WAL mode, one transaction per batch."""

from __future__ import annotations

import sqlite3
import time

import msgspec

from pointsman.ledger.base import LedgerRecord, LedgerSink
from pointsman.ledger.migrations import migrate_sqlite
from pointsman.ledger.rollup import batch_rollup, write_rollup

COLUMNS = ("id", "ts", "requested_model", "status", "chosen_model", "tier", "reason", "stream", "key_id",
           "user", "team", "cohort", "prompt_tokens", "completion_tokens", "cost_usd", "ttft_ms", "latency_ms",
           "overhead_ms", "cache_hit", "error", "attempts", "cost_estimated", "cached_tokens", "session")

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY, ts REAL NOT NULL, requested_model TEXT NOT NULL, status INTEGER NOT NULL,
    chosen_model TEXT, tier TEXT, reason TEXT, stream INTEGER NOT NULL, key_id TEXT, user TEXT, team TEXT,
    cohort TEXT, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, cost_usd REAL NOT NULL,
    ttft_ms REAL, latency_ms REAL NOT NULL, overhead_ms REAL NOT NULL, cache_hit INTEGER NOT NULL,
    error TEXT, attempts TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts);
CREATE TABLE IF NOT EXISTS prompts (id TEXT PRIMARY KEY, ts REAL NOT NULL, text TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS prompts_ts ON prompts (ts);
"""

_encode = msgspec.json.Encoder().encode
# Rows encoded and inserted between two hand-overs of the GIL: a slice takes a fraction of a millisecond, where a
# whole batch of 512 held the event loop for milliseconds (bench/gateway: pointsman vs pointsman-ledger-deferred)
SLICE = 32


def record_row(record: LedgerRecord) -> tuple[object, ...]:
    return (record.id, record.ts, record.requested_model, record.status, record.chosen_model, record.tier,
            record.reason, record.stream, record.key_id, record.user, record.team, record.cohort,
            record.prompt_tokens, record.completion_tokens, record.cost_usd, record.ttft_ms, record.latency_ms,
            record.overhead_ms, record.cache_hit, record.error, _encode(record.attempts).decode(), record.cost_estimated,
            record.cached_tokens, record.session)


class SqliteSink(LedgerSink):
    def __init__(self, path: str) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._insert = f"INSERT OR REPLACE INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
        self._insert_prompt = "INSERT OR REPLACE INTO prompts (id, ts, text) VALUES (?, ?, ?)"

    def open(self) -> None:
        # Opened in the starting thread, used only by the writer thread afterwards.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        migrate_sqlite(self._db)  # columns and tables added since SCHEMA (ledger/migrations.py)

    def write(self, records: list[LedgerRecord]) -> None:
        assert self._db is not None
        with self._db:  # one transaction: a batch lands whole or not at all
            self._db.execute("BEGIN")
            rollup = batch_rollup(self._db, records, "?")  # the daily spend sums (ledger/rollup.py), same transaction
            for start in range(0, len(records), SLICE):
                chunk = records[start:start + SLICE]
                self._db.executemany(self._insert, [record_row(r) for r in chunk])
                prompts = [(r.id, r.ts, r.prompt) for r in chunk if r.prompt is not None]
                if prompts:  # learning.store_prompts: the routing text, for training on this traffic
                    self._db.executemany(self._insert_prompt, prompts)
                time.sleep(0)  # hand the GIL to the event loop between slices: a flush never holds it for long
            write_rollup(self._db, rollup, "?")

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
