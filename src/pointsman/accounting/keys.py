"""Virtual keys and the limits set on keys, teams, cohorts and models, in the ledger's database.

A key's secret is shown once, when it is created or rotated; the database keeps its SHA-256 (the secrets are 32
random bytes, so a fast unsalted hash is as safe as a slow one and costs a microsecond per request) and its first
characters, for people to recognise it. Every change bumps one counter (``accounting_version``) under a row lock
(PostgreSQL) or the write lock (SQLite), and the changed rows carry the new value: a replica polling for
``version > seen`` never misses a change committed out of order. Revoked keys and removed limits stay as rows,
marked, so that the poll sees them go.

Blocking calls: the gateway runs them in a worker thread (directory.py), the CLI directly.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, get_args

from pointsman.ledger.migrations import Migration, migrate
from pointsman.ledger.tables import LedgerTables, is_postgres_url

__all__ = ["KeyStore", "Limit", "METRICS", "SCOPES", "Scope", "VirtualKey", "hash_secret", "key_store_from_url"]

Scope = Literal["key", "team", "cohort", "model"]
SCOPES: tuple[str, ...] = get_args(Scope)
# a limit's metrics, as the API, the CLI and the 429 name them
METRICS = ("requests_per_minute", "tokens_per_minute", "usd_per_day", "usd_per_month")
SECRET_PREFIX = "sk-pm-"

MIGRATIONS: list[Migration] = [
    (1, [
        "CREATE TABLE accounting_version (id INTEGER PRIMARY KEY, n BIGINT NOT NULL)",
        "INSERT INTO accounting_version (id, n) VALUES (1, 0)",
        """CREATE TABLE virtual_keys (
            id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, prefix TEXT NOT NULL, name TEXT, user_name TEXT,
            team TEXT, cohort TEXT, allow_cohort_header BOOLEAN NOT NULL, created DOUBLE PRECISION NOT NULL,
            expires DOUBLE PRECISION, revoked DOUBLE PRECISION, previous_hash TEXT, previous_until DOUBLE PRECISION,
            version BIGINT NOT NULL)""",
        "CREATE INDEX virtual_keys_version ON virtual_keys (version)",
        """CREATE TABLE limits (
            scope TEXT NOT NULL, name TEXT NOT NULL, model TEXT NOT NULL, requests_per_minute BIGINT,
            tokens_per_minute BIGINT, usd_per_day DOUBLE PRECISION, usd_per_month DOUBLE PRECISION,
            removed BOOLEAN NOT NULL, version BIGINT NOT NULL, PRIMARY KEY (scope, name, model))""",
        "CREATE INDEX limits_version ON limits (version)",
        # reconciling counters from the ledger reads one scope's spend over a day or a month
        "CREATE INDEX IF NOT EXISTS requests_key_ts ON requests (key_id, ts)",
    ]),
]

_KEY_COLUMNS = ("id", "hash", "prefix", "name", "user_name", "team", "cohort", "allow_cohort_header", "created",
                "expires", "revoked", "previous_hash", "previous_until", "version")
_LIMIT_COLUMNS = ("scope", "name", "model", *METRICS, "removed", "version")


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class VirtualKey:
    id: str  # "vk_" + 12 hex: the key's name in the ledger (key_id), the API and budgets; kept across rotations
    hash: str
    prefix: str  # the secret's first characters
    name: str | None
    user: str | None
    team: str | None
    cohort: str | None
    allow_cohort_header: bool  # may x-pointsman-cohort replace the key's cohort (a customer's own cohorts)
    created: float
    expires: float | None
    revoked: float | None
    previous_hash: str | None  # the secret before the last rotation, valid until previous_until
    previous_until: float | None
    version: int

    def public(self) -> dict[str, Any]:
        """What the API and the CLI show: never the hash."""
        out = {k: v for k, v in asdict(self).items() if k not in ("hash", "previous_hash", "version")}
        return {"object": "key", **out}


@dataclass(frozen=True, slots=True)
class Limit:
    scope: Scope
    name: str  # the key id, team, cohort or model
    model: str  # "" = every model; else only requests routed to this model
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    usd_per_day: float | None = None
    usd_per_month: float | None = None
    removed: bool = False
    version: int = 0

    @property
    def ident(self) -> tuple[str, str, str]:
        return self.scope, self.name, self.model

    def label(self) -> str:
        on = f" on model {self.model!r}" if self.model else ""
        return f"{self.scope} {self.name!r}{on}"

    def public(self) -> dict[str, Any]:
        return {"object": "limit", "scope": self.scope, "name": self.name, "model": self.model or None,
                **{m: getattr(self, m) for m in METRICS}}


def check_limit(limit: Limit) -> None:
    if limit.scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, not {limit.scope!r}")
    if not limit.name:
        raise ValueError("a limit needs the name of its key, team, cohort or model")
    for metric in METRICS:
        value = getattr(limit, metric)
        if value is not None and (not math.isfinite(value) or value < 0):
            raise ValueError(f"{metric} must be a number >= 0 (or absent: no limit), not {value!r}")


class KeyStore(LedgerTables):
    """Keys and limits in the ledger's database (ledger/tables.py: SQLite or PostgreSQL, a connection per thread)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.schema_version = migrate(self._conn, "accounting", MIGRATIONS)

    def _on_connect(self, db: Any) -> None:
        # the ledger's requests table: spend is read from it (and indexed by the ledger's migrations)
        if self.postgres:
            from pointsman.ledger.postgres import SCHEMA as POSTGRES_SCHEMA

            for statement in POSTGRES_SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
        else:
            from pointsman.ledger.sqlite import SCHEMA

            db.executescript(SCHEMA)

    def _bump(self, db: Any) -> int:
        """The next version, taken under the write lock: commits come in version order."""
        db.execute("UPDATE accounting_version SET n = n + 1 WHERE id = 1")
        return int(db.execute("SELECT n FROM accounting_version WHERE id = 1").fetchone()[0])

    # -- keys ------------------------------------------------------------------------------------------------
    def create_key(self, *, name: str | None = None, user: str | None = None, team: str | None = None,
                   cohort: str | None = None, allow_cohort_header: bool = False,
                   expires: float | None = None) -> tuple[VirtualKey, str]:
        """A new key and its secret (returned once, never stored)."""
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        key_id = "vk_" + secrets.token_hex(6)
        db = self._conn
        with self._write(db):
            version = self._bump(db)
            db.execute(self._sql(f"INSERT INTO virtual_keys ({', '.join(_KEY_COLUMNS)}) VALUES "
                                 f"({', '.join('?' * len(_KEY_COLUMNS))})"),
                       (key_id, hash_secret(secret), secret[:10], name, user, team, cohort, allow_cohort_header,
                        time.time(), expires, None, None, None, version))
        found = self.get_key(key_id)
        assert found is not None
        return found, secret

    def rotate_key(self, key_id: str, grace_s: float = 0.0) -> tuple[VirtualKey, str] | None:
        """A new secret for the same key (its id, budgets and history stay); the old one works ``grace_s`` more."""
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        now = time.time()
        db = self._conn
        with self._write(db):
            row = db.execute(self._sql("SELECT hash FROM virtual_keys WHERE id = ? AND revoked IS NULL"),
                             (key_id,)).fetchone()
            if row is None:
                return None
            version = self._bump(db)
            db.execute(self._sql("UPDATE virtual_keys SET hash = ?, prefix = ?, previous_hash = ?, previous_until = ?, "
                                 "version = ? WHERE id = ?"),
                       (hash_secret(secret), secret[:10], row[0] if grace_s > 0 else None,
                        now + grace_s if grace_s > 0 else None, version, key_id))
        found = self.get_key(key_id)
        assert found is not None
        return found, secret

    def revoke_key(self, key_id: str) -> VirtualKey | None:
        db = self._conn
        with self._write(db):
            version = self._bump(db)
            changed = db.execute(self._sql("UPDATE virtual_keys SET revoked = ?, previous_hash = NULL, "
                                           "previous_until = NULL, version = ? WHERE id = ? AND revoked IS NULL"),
                                 (time.time(), version, key_id)).rowcount
        return self.get_key(key_id) if changed else None

    def get_key(self, key_id: str) -> VirtualKey | None:
        rows = self._fetch(f"SELECT {', '.join(_KEY_COLUMNS)} FROM virtual_keys WHERE id = ?", (key_id,))
        return _key(rows[0]) if rows else None

    def list_keys(self) -> list[VirtualKey]:
        return [_key(r) for r in self._fetch(f"SELECT {', '.join(_KEY_COLUMNS)} FROM virtual_keys ORDER BY created")]

    # -- limits ----------------------------------------------------------------------------------------------
    def set_limit(self, limit: Limit) -> Limit:
        """Create or replace the limit of (scope, name, model): metrics left None are unlimited."""
        check_limit(limit)
        db = self._conn
        with self._write(db):
            version = self._bump(db)
            values = (*limit.ident, *(getattr(limit, m) for m in METRICS), False, version)
            db.execute(self._sql(f"INSERT INTO limits ({', '.join(_LIMIT_COLUMNS)}) VALUES "
                                 f"({', '.join('?' * len(_LIMIT_COLUMNS))}) ON CONFLICT (scope, name, model) DO UPDATE "
                                 f"SET {', '.join(f'{c} = excluded.{c}' for c in _LIMIT_COLUMNS[3:])}"), values)
        return replace(limit, removed=False, version=version)

    def remove_limit(self, scope: str, name: str, model: str = "") -> bool:
        db = self._conn
        with self._write(db):
            version = self._bump(db)
            changed = db.execute(self._sql("UPDATE limits SET removed = ?, version = ? WHERE scope = ? AND name = ? "
                                           "AND model = ? AND NOT removed"), (True, version, scope, name, model)).rowcount
        return bool(changed)

    def list_limits(self) -> list[Limit]:
        return [_limit(r) for r in self._fetch(f"SELECT {', '.join(_LIMIT_COLUMNS)} FROM limits WHERE NOT removed "
                                               "ORDER BY scope, name, model")]

    # -- what replicas poll ----------------------------------------------------------------------------------
    def version(self) -> int:
        return int(self._fetch("SELECT n FROM accounting_version WHERE id = 1")[0][0])

    def changes(self, since: int) -> tuple[int, list[VirtualKey], list[Limit]]:
        """Every key and limit changed after version ``since``, and the version they bring the reader to."""
        version = self.version()
        if version <= since:
            return since, [], []
        keys = [_key(r) for r in self._fetch(f"SELECT {', '.join(_KEY_COLUMNS)} FROM virtual_keys WHERE version > ?",
                                             (since,))]
        limits = [_limit(r) for r in self._fetch(f"SELECT {', '.join(_LIMIT_COLUMNS)} FROM limits WHERE version > ?",
                                                 (since,))]
        # a change committed between the two reads is in the rows: the reader's version is the newest it holds
        return max([version, *(k.version for k in keys), *(lim.version for lim in limits)]), keys, limits

    # -- the ledger's spend, to reconcile counters from ------------------------------------------------------
    def spend(self, column: str, value: str, since: float, until: float, model: str = "") -> tuple[float, int]:
        """(USD, requests) the ledger holds for one scope between two times."""
        if column not in ("key_id", "team", "cohort", "chosen_model"):
            raise ValueError(f"no ledger column {column!r} for a scope")
        query = f"SELECT COALESCE(SUM(cost_usd), 0), COUNT(*) FROM requests WHERE {column} = ? AND ts >= ? AND ts < ?"
        params: tuple[Any, ...] = (value, since, until)
        if model:
            query += " AND chosen_model = ?"
            params = (*params, model)
        usd, count = self._fetch(query, params)[0]
        return float(usd), int(count)


def _key(row: tuple[Any, ...]) -> VirtualKey:
    values = dict(zip(_KEY_COLUMNS, row))
    values["user"] = values.pop("user_name")
    values["allow_cohort_header"] = bool(values["allow_cohort_header"])
    return VirtualKey(**values)


def _limit(row: tuple[Any, ...]) -> Limit:
    values = dict(zip(_LIMIT_COLUMNS, row))
    values["removed"] = bool(values["removed"])
    return Limit(**values)


def key_store_from_url(url: str) -> KeyStore:
    """The store in the ledger's database (server.ledger_url)."""
    if not is_postgres_url(url):
        from pointsman.ledger import sqlite_path

        sqlite_path(url)  # refuses an unsupported URL, naming the supported forms
    return KeyStore(url)
