"""Ledgers: a batching front (base.BatchLedger) and one sink per store (sqlite.py; postgres later)."""

from __future__ import annotations

from pointsman.ledger.base import Attempt, BatchLedger, LedgerRecord, LedgerSink


def sink_from_url(url: str) -> LedgerSink:
    if url.startswith("sqlite://"):
        from pointsman.ledger.sqlite import SqliteSink

        path = url[len("sqlite://"):]
        return SqliteSink(path[1:] if path.startswith("/") else path)
    raise ValueError(f"unsupported ledger_url {url!r}: use sqlite:///relative.db or sqlite:////absolute/path.db")


__all__ = ["Attempt", "BatchLedger", "LedgerRecord", "LedgerSink", "sink_from_url"]
