"""Ledgers: a batching front (base.BatchLedger) and one sink per store (sqlite.py; postgres later)."""

from __future__ import annotations

from pointsman.ledger.base import Attempt, BatchLedger, LedgerRecord, LedgerSink


def sqlite_path(url: str) -> str:
    """The file of a sqlite:/// URL (three slashes: relative, four: absolute)."""
    if not url.startswith("sqlite://"):
        raise ValueError(f"unsupported ledger_url {url!r}: use sqlite:///relative.db or sqlite:////absolute/path.db")
    path = url[len("sqlite://"):]
    return path[1:] if path.startswith("/") else path


def sink_from_url(url: str) -> LedgerSink:
    from pointsman.ledger.sqlite import SqliteSink

    return SqliteSink(sqlite_path(url))


__all__ = ["Attempt", "BatchLedger", "LedgerRecord", "LedgerSink", "sink_from_url", "sqlite_path"]
