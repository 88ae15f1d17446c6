"""Ledgers: a batching front (base.BatchLedger) and one sink per store (sqlite.py, postgres.py)."""

from __future__ import annotations

from pointsman.ledger.base import Attempt, BatchLedger, LedgerRecord, LedgerSink


def sqlite_path(url: str) -> str:
    """The file of a sqlite:/// URL (three slashes: relative, four: absolute)."""
    if not url.startswith("sqlite://"):
        raise ValueError(f"unsupported ledger_url {url!r}: use sqlite:///relative.db, sqlite:////absolute/path.db or "
                         "postgresql://user@host:5432/database")
    path = url[len("sqlite://"):]
    return path[1:] if path.startswith("/") else path


def without_password(url: str) -> str:
    """The URL as it may be printed: a password in it replaced by ***."""
    from urllib.parse import urlsplit

    password = urlsplit(url).password
    return url.replace(f":{password}@", ":***@", 1) if password else url


def sink_from_url(url: str) -> LedgerSink:
    if url.startswith(("postgresql://", "postgres://")):
        from pointsman.ledger.postgres import PostgresSink

        return PostgresSink(url)
    from pointsman.ledger.sqlite import SqliteSink

    return SqliteSink(sqlite_path(url))


__all__ = ["Attempt", "BatchLedger", "LedgerRecord", "LedgerSink", "sink_from_url", "sqlite_path", "without_password"]
