"""Where the learning loop keeps its outcomes: client feedback and shadow answers, beside the ledger.

The tables live in the ledger's own database, so a request's row (its owner, its model), its stored
routing text (``prompts``, written by the ledger when ``learning.store_prompts`` is on) and its outcomes
join on the request id:

* ``feedback``: one row per (request, client key), the latest score wins: feedback is idempotent;
* ``shadow``: one row per (request, model), the judge's score of each answer it compared.

A feedback write commits before the client is told it is stored, so an acknowledged row survives the
process being killed (WAL: the commit is in the log file before ``add_feedback`` returns).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from pointsman.ledger.sqlite import SCHEMA as LEDGER_SCHEMA
from pointsman.ledger.tables import LedgerTables, is_postgres_url

__all__ = ["OutcomeRow", "OutcomeStore", "RequestOwner", "SqlOutcomeStore", "outcome_store_from_url"]

# the ledger's tables (ledger/sqlite.py: requests, prompts) and the outcomes'
SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    request_id TEXT NOT NULL, key_id TEXT NOT NULL, score REAL NOT NULL, comment TEXT, ts REAL NOT NULL,
    PRIMARY KEY (request_id, key_id)
);
CREATE TABLE IF NOT EXISTS shadow (
    request_id TEXT NOT NULL, model TEXT NOT NULL, score REAL NOT NULL, judge TEXT NOT NULL, ts REAL NOT NULL,
    propensity REAL NOT NULL, PRIMARY KEY (request_id, model)
);
"""
OPEN_GATEWAY = ""  # the key id stored for feedback on a gateway without keys


@dataclass(frozen=True, slots=True)
class RequestOwner:
    """Who made a request, and what answered it: what feedback on it is checked against."""

    key_id: str | None
    model: str | None
    status: int
    tier: str | None


@dataclass(frozen=True, slots=True)
class OutcomeRow:
    """One known outcome of live traffic: a model's answer to a prompt, scored 0..1."""

    request_id: str
    ts: float
    prompt: str
    model: str
    score: float
    signal: str  # "feedback" (the client's) or "shadow" (a judge's)
    # the probability that this model's answer to this prompt was scored at all: 1 for the routed model, the
    # shadow share over the models a shadow could have come from for a shadow answer (unbiased comparisons)
    propensity: float = 1.0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def long_format(self) -> dict[str, Any]:
        """The row as `pointsman train` reads outcome files (README, "Training data")."""
        row: dict[str, Any] = {"prompt_id": self.request_id, "prompt": self.prompt, "model": self.model,
                               "score": self.score, "source": "traffic", "label_kind": "judge_score",
                               "signal": self.signal, "propensity": self.propensity, "ts": self.ts}
        if self.prompt_tokens:
            row["input_tokens"] = self.prompt_tokens
        if self.completion_tokens:
            row["output_tokens"] = self.completion_tokens
        return row


class OutcomeStore(ABC):
    """The contract: feedback and shadow rows in, training rows and recent prompts out."""

    @abstractmethod
    def owner(self, request_id: str) -> RequestOwner | None:
        """The request's owner and model, None when the ledger has no such request (yet)."""

    @abstractmethod
    def add_feedback(self, request_id: str, key_id: str | None, score: float, comment: str | None) -> bool:
        """Store (or replace) this key's feedback on the request, committed; True if it is new."""

    @abstractmethod
    def add_shadow(self, request_id: str, scores: dict[str, float], judge: str, propensity: dict[str, float]) -> None:
        """A judge's scores of the answers of several models to one request, with each one's propensity."""

    @abstractmethod
    def outcomes(self, since: float = 0.0, until: float | None = None) -> list[OutcomeRow]:
        """Training rows: each scored answer of a request whose routing text was stored, oldest first."""

    @abstractmethod
    def recent_prompts(self, since: float, limit: int = 5000) -> list[str]:
        """Routing texts of requests since ``since``, newest first (drift)."""

    @abstractmethod
    def purge(self, before: float) -> int:
        """Delete stored prompts, feedback and shadow rows older than ``before``; how many."""

    @abstractmethod
    def close(self) -> None: ...


class SqlOutcomeStore(LedgerTables, OutcomeStore):
    """The store in the ledger's database (ledger/tables.py: SQLite or PostgreSQL, a connection per thread)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        db = self._conn
        if self.postgres:
            from pointsman.ledger.postgres import SCHEMA as POSTGRES_LEDGER_SCHEMA

            with db.transaction():
                for statement in (POSTGRES_LEDGER_SCHEMA + SCHEMA.replace(" REAL", " DOUBLE PRECISION")).split(";"):
                    if statement.strip():
                        db.execute(statement)
        else:
            db.executescript(LEDGER_SCHEMA + SCHEMA)

    def owner(self, request_id: str) -> RequestOwner | None:
        found = self._fetch("SELECT key_id, chosen_model, status, tier FROM requests WHERE id = ?", (request_id,))
        return RequestOwner(*found[0]) if found else None

    def add_feedback(self, request_id: str, key_id: str | None, score: float, comment: str | None) -> bool:
        db = self._conn
        key = key_id or OPEN_GATEWAY
        with self._write(db):
            existed = db.execute(self._sql("SELECT 1 FROM feedback WHERE request_id = ? AND key_id = ?"),
                                 (request_id, key)).fetchone()
            db.execute(self._sql("INSERT INTO feedback (request_id, key_id, score, comment, ts) VALUES (?, ?, ?, ?, ?) "
                                 "ON CONFLICT (request_id, key_id) DO UPDATE SET score = excluded.score, "
                                 "comment = excluded.comment, ts = excluded.ts"),
                       (request_id, key, score, comment, time.time()))
        return existed is None

    def add_shadow(self, request_id: str, scores: dict[str, float], judge: str, propensity: dict[str, float]) -> None:
        now = time.time()
        db = self._conn
        with self._write(db):
            for model, score in scores.items():
                db.execute(self._sql(
                    "INSERT INTO shadow (request_id, model, score, judge, ts, propensity) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (request_id, model) DO UPDATE SET score = excluded.score, judge = excluded.judge, "
                    "ts = excluded.ts, propensity = excluded.propensity"),
                    (request_id, model, score, judge, now, propensity.get(model, 1.0)))

    def outcomes(self, since: float = 0.0, until: float | None = None) -> list[OutcomeRow]:
        until = float("inf") if until is None else until
        # the client's word first: a judge's score of the same answer is used only where there is no feedback
        rows = self._fetch(
            """
            SELECT r.id, r.ts, p.text, r.chosen_model, AVG(f.score), 'feedback', 1.0, r.prompt_tokens, r.completion_tokens
              FROM feedback f JOIN requests r ON r.id = f.request_id JOIN prompts p ON p.id = r.id
             WHERE r.ts >= ? AND r.ts < ? AND r.status = 200 AND NOT r.cache_hit AND r.chosen_model IS NOT NULL
             GROUP BY r.id, p.text
            UNION ALL
            SELECT r.id, r.ts, p.text, s.model, s.score, 'shadow', s.propensity, 0, 0
              FROM shadow s JOIN requests r ON r.id = s.request_id JOIN prompts p ON p.id = r.id
             WHERE r.ts >= ? AND r.ts < ? AND NOT (s.model = r.chosen_model
                   AND EXISTS (SELECT 1 FROM feedback f WHERE f.request_id = r.id))
            ORDER BY 2, 1
            """, (since, until, since, until))
        return [OutcomeRow(str(i), float(ts), text, model, float(score), signal, float(p), int(pt), int(ct))
                for i, ts, text, model, score, signal, p, pt, ct in rows]

    def recent_prompts(self, since: float, limit: int = 5000) -> list[str]:
        return [text for (text,) in self._fetch("SELECT text FROM prompts WHERE ts >= ? ORDER BY ts DESC LIMIT ?",
                                                (since, limit))]

    def purge(self, before: float) -> int:
        db = self._conn
        deleted = 0
        with self._write(db):
            for table in ("prompts", "feedback", "shadow"):
                deleted += db.execute(self._sql(f"DELETE FROM {table} WHERE ts < ?"), (before,)).rowcount
        return deleted


def outcome_store_from_url(url: str) -> OutcomeStore:
    """The store for a ledger URL (the same database as the ledger)."""
    if not is_postgres_url(url):
        from pointsman.ledger import sqlite_path

        sqlite_path(url)  # refuses an unsupported URL, naming the supported forms
    return SqlOutcomeStore(url)
