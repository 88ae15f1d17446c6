"""uvicorn's httptools protocol with a deadline for a request's headers.

uvicorn has no header timeout: a client that connects and sends nothing, or half a request line, holds
its connection for ever (slowloris). The deadline runs from the connection, or from the first byte of
each later request on a kept-alive connection, to the end of the headers; past it the connection closes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Module-level, not per class: uvicorn pickles its config into each `--workers` process, and each worker
# sets this again from its own config when it builds its gateway (`configure`).
_header_timeout_s = 10.0


def configure(header_timeout_s: float) -> None:
    global _header_timeout_s
    _header_timeout_s = header_timeout_s


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(_header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        self.transport.close()
