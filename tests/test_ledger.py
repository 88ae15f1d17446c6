"""The batching ledger: nothing lost on a clean shutdown, nothing dropped when the store fails for a while."""

from __future__ import annotations

import json
import sqlite3
import threading
import time

from pointsman.ledger import Attempt, BatchLedger, LedgerRecord, LedgerSink
from pointsman.ledger.sqlite import SqliteSink


def record(i: int) -> LedgerRecord:
    return LedgerRecord(id=f"r{i}", ts=time.time(), requested_model="auto", status=200, chosen_model="m",
                        attempts=[Attempt("m", "ok", 1.5)])


def test_close_flushes_everything_to_sqlite(tmp_path):
    path = tmp_path / "ledger.db"
    ledger = BatchLedger(SqliteSink(str(path)), flush_interval_s=60, batch_size=10_000)
    ledger.start()
    for i in range(2500):
        ledger.record(record(i))
    ledger.close()
    rows = sqlite3.connect(path).execute("SELECT count(*), min(id), max(attempts) FROM requests").fetchone()
    assert rows[0] == 2500 and json.loads(rows[2]) == [["m", "ok", 1.5, None, None, None, None, None, None]]


def test_records_are_written_within_the_flush_interval(tmp_path):
    path = tmp_path / "ledger.db"
    ledger = BatchLedger(SqliteSink(str(path)), flush_interval_s=0.1)
    ledger.start()
    ledger.record(record(1))
    time.sleep(0.5)
    assert sqlite3.connect(path).execute("SELECT count(*) FROM requests").fetchone()[0] == 1
    ledger.close()


class FlakySink(LedgerSink):
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.rows: list[str] = []
        self.lock = threading.Lock()

    def open(self) -> None: ...

    def write(self, records: list[LedgerRecord]) -> None:
        with self.lock:
            if self.failures > 0:
                self.failures -= 1
                raise OSError("store unavailable")
            self.rows.extend(r.id for r in records)

    def close(self) -> None: ...


def test_a_failing_store_keeps_the_records_for_the_next_flush():
    sink = FlakySink(failures=4)  # more than one flush's three tries
    ledger = BatchLedger(sink, flush_interval_s=0.05)
    ledger.start()
    for i in range(100):
        ledger.record(record(i))
    ledger.close()
    assert sorted(sink.rows, key=lambda r: int(r[1:])) == [f"r{i}" for i in range(100)]
    assert ledger.failed_batches >= 1


def test_a_flush_hands_the_gil_back_between_slices(tmp_path, monkeypatch):
    """A 512-record flush encoded and inserted everything while holding the GIL: the event loop stalled for
    milliseconds (bench/gateway/LEDGER.md). It now yields between slices of SLICE records, in one transaction."""
    from pointsman.ledger import sqlite as sqlite_sink

    yields = []
    monkeypatch.setattr(sqlite_sink.time, "sleep", lambda s: yields.append(s))
    sink = sqlite_sink.SqliteSink(str(tmp_path / "l.db"))
    sink.open()
    sink.write([LedgerRecord(id=f"r{i}", ts=float(i), requested_model="m", status=200) for i in range(100)])
    sink.close()
    assert yields == [0] * -(-100 // sqlite_sink.SLICE)
    assert sqlite3.connect(tmp_path / "l.db").execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 100
