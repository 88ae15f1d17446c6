"""The daily spend roll-up: one row per (UTC day, key, team, cohort, model, tier) with sums, kept by the ledger
writer in the same transaction as the requests it sums, so spend reports read thousands of rows, not millions.

A request id written again (a batch retried after its commit was not acknowledged) first takes its earlier row
out of the sums: the roll-up always equals a GROUP BY over ``requests``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from pointsman.ledger.base import Attempt, LedgerRecord

__all__ = ["DIMENSIONS", "MEASURES", "Rollup", "day_of", "escalated"]

DIMENSIONS = ("day", "key_id", "team", "cohort", "model", "tier")
MEASURES = ("requests", "errors", "cache_hits", "escalated", "estimated", "prompt_tokens", "cached_tokens",
            "completion_tokens", "cost_usd")

# NULL tags are stored as '' (a NULL never conflicts in a unique key, which would split a group's row)
SQLITE_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS spend_daily (
    day TEXT NOT NULL, key_id TEXT NOT NULL, team TEXT NOT NULL, cohort TEXT NOT NULL, model TEXT NOT NULL,
    tier TEXT NOT NULL, {', '.join(f'{m} INTEGER NOT NULL' for m in MEASURES[:-1])}, cost_usd REAL NOT NULL,
    PRIMARY KEY ({', '.join(DIMENSIONS)})
)"""
POSTGRES_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS spend_daily (
    day TEXT NOT NULL, key_id TEXT NOT NULL, team TEXT NOT NULL, cohort TEXT NOT NULL, model TEXT NOT NULL,
    tier TEXT NOT NULL, {', '.join(f'{m} BIGINT NOT NULL' for m in MEASURES[:-1])}, cost_usd DOUBLE PRECISION NOT NULL,
    PRIMARY KEY ({', '.join(DIMENSIONS)})
)"""

# what a request's earlier row is read back as (the columns its sums came from)
PREVIOUS = ("id", "ts", "key_id", "team", "cohort", "chosen_model", "tier", "status", "cache_hit", "cost_estimated",
            "prompt_tokens", "cached_tokens", "completion_tokens", "cost_usd", "attempts")
_attempts = msgspec.json.Decoder(list[Attempt])


def day_of(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def escalated(tier: str | None, attempts: Iterable[Attempt]) -> bool:
    """A cascade that called a stronger model after a cheaper one's answer was judged not good enough."""
    if not tier or "+cascade" not in tier:
        return False
    return any((a.verdict or "").startswith("escalated") for a in attempts)


class Rollup:
    """Sums of one batch per group, added to the table with one upsert per group."""

    def __init__(self) -> None:
        self.groups: dict[tuple[str, ...], list[float]] = {}

    def add(self, record: LedgerRecord, sign: int = 1) -> None:
        self._add(record.ts, record.key_id, record.team, record.cohort, record.chosen_model, record.tier, record.status,
                  record.cache_hit, record.cost_estimated, record.prompt_tokens, record.cached_tokens,
                  record.completion_tokens, record.cost_usd, escalated(record.tier, record.attempts), sign)

    def add_row(self, row: Sequence[Any], sign: int = -1) -> None:
        """A row read back from ``requests`` (columns PREVIOUS): its attempts as JSON text or as decoded JSONB."""
        (_, ts, key_id, team, cohort, model, tier, status, cache_hit, estimated, prompt, cached, completion, cost,
         raw_attempts) = row
        if isinstance(raw_attempts, (str, bytes)):
            attempts = _attempts.decode(raw_attempts)
        else:
            attempts = msgspec.convert(raw_attempts or [], list[Attempt])
        self._add(ts, key_id, team, cohort, model, tier, status, bool(cache_hit), bool(estimated), prompt, cached,
                  completion, cost, escalated(tier, attempts), sign)

    def _add(self, ts: float, key_id: str | None, team: str | None, cohort: str | None, model: str | None,
             tier: str | None, status: int, cache_hit: bool, estimated: bool, prompt: int, cached: int, completion: int,
             cost: float, was_escalated: bool, sign: int) -> None:
        group = (day_of(ts), key_id or "", team or "", cohort or "", model or "", tier or "")
        sums = self.groups.get(group)
        if sums is None:
            sums = self.groups[group] = [0] * len(MEASURES)
        for index, value in enumerate((1, status >= 400, cache_hit, was_escalated, estimated, prompt, cached or 0,
                                       completion, cost)):
            sums[index] += sign * value

    def __bool__(self) -> bool:
        return bool(self.groups)

    def rows(self) -> list[tuple[Any, ...]]:
        """One row per group, in key order: concurrent writers lock the same rows in the same order (no deadlock)."""
        return [(*group, *(int(v) for v in sums[:-1]), float(sums[-1])) for group, sums in sorted(self.groups.items())]


def upsert_sql(placeholder: str) -> str:
    columns = (*DIMENSIONS, *MEASURES)
    return (f"INSERT INTO spend_daily ({', '.join(columns)}) VALUES ({', '.join([placeholder] * len(columns))}) "
            f"ON CONFLICT ({', '.join(DIMENSIONS)}) DO UPDATE SET "
            + ", ".join(f"{m} = spend_daily.{m} + excluded.{m}" for m in MEASURES))


def previous_sql(placeholder: str, count: int) -> str:
    columns = ", ".join(f'"{c}"' if c == "user" else c for c in PREVIOUS)
    return f"SELECT {columns} FROM requests WHERE id IN ({', '.join([placeholder] * count)})"


def batch_rollup(cursor: Any, records: list[LedgerRecord], placeholder: str, chunk: int = 500) -> Rollup:
    """The batch's sums, less those of any of its ids already in ``requests`` (call before writing them)."""
    rollup = Rollup()
    latest = {r.id: r for r in records}  # an id twice in one batch: its last row is the one kept
    for record in latest.values():
        rollup.add(record)
    ids = list(latest)
    for start in range(0, len(ids), chunk):
        part = ids[start:start + chunk]
        for row in cursor.execute(previous_sql(placeholder, len(part)), part).fetchall():
            rollup.add_row(row)
    return rollup


def write_rollup(cursor: Any, rollup: Rollup, placeholder: str) -> None:
    if rollup:
        cursor.executemany(upsert_sql(placeholder), rollup.rows())
