"""One JSON line per chat request (``observability.request_log``): the ledger row's fields, for log pipelines
that want the request stream rather than the ledger's tables.

Never prompt text unless ``prompts`` is on, and never a secret: the line passes through the gateway's Redactor
(provider keys, URL credentials) before it is written, and carries the key's hash, never the key.
"""

from __future__ import annotations

import sys
import threading
from typing import IO, Any

import msgspec

from pointsman.app.secrets import Redactor
from pointsman.ledger.base import LedgerRecord
from pointsman.observability.config import RequestLogConfig

__all__ = ["RequestLog"]

_encode = msgspec.json.Encoder().encode
DROPPED = frozenset({"prompt"})  # the ledger's copy of the routing text: only with `prompts`


class RequestLog:
    def __init__(self, config: RequestLogConfig, redactor: Redactor) -> None:
        self.config = config
        self.redactor = redactor
        self._own = config.path is not None
        self._out: IO[bytes] = open(config.path, "ab") if config.path else sys.stderr.buffer  # noqa: SIM115 - kept open
        self._lock = threading.Lock()

    def line(self, record: LedgerRecord, prompt: str | None = None, confidence: float | None = None) -> bytes:
        row: dict[str, Any] = {field: getattr(record, field) for field in record.__struct_fields__ if field not in DROPPED}
        row["event"] = "pointsman.request"
        if confidence is not None:
            row["confidence"] = round(confidence, 4)
        if self.config.prompts and prompt is not None:
            row["prompt"] = prompt
        payload = _encode(row)
        return (self.redactor.body(payload) if self.redactor else payload) + b"\n"

    def write(self, record: LedgerRecord, prompt: str | None = None, confidence: float | None = None) -> None:
        data = self.line(record, prompt, confidence)
        with self._lock:  # one whole line at a time (the shadow sampler's threads never write here, but be safe)
            self._out.write(data)
            self._out.flush()

    def close(self) -> None:
        if self._own:
            self._out.close()
