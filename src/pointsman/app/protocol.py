"""uvicorn's httptools protocol with a deadline and a size bound for a request's headers.

uvicorn has no header timeout: a client that connects and sends nothing, or half a request line, holds
its connection for ever (slowloris). The deadline runs from the connection, or from the first byte of
each later request on a kept-alive connection, to the end of the headers; past it the connection closes.

Nor does it bound their size while they arrive: the parser buffers a header line until it ends, so one
connection could make the process hold 97 MiB of a single header before the application saw it. Bytes
that arrive while the headers are incomplete are counted; past MAX_HEADER_BYTES (plus one read's worth,
since the read that ends the headers may carry the start of the body) the client gets a 431 and the
connection closes. The application checks the exact limits once the headers are complete.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Module-level, not per class: uvicorn pickles its config into each `--workers` process, and each worker
# sets this again from its own config when it builds its gateway (`configure`).
_header_timeout_s = 10.0
MAX_HEADER_COUNT = 100
MAX_HEADER_BYTES = 64 * 1024
_READ_SLACK = 256 * 1024  # asyncio reads up to this much at once: the headers' last read may bring body bytes
_TOO_LARGE = (b'{"error": {"message": "request headers too large: at most %d headers, %d bytes", '
              b'"type": "invalid_request_error", "param": null, "code": "request_header_fields_too_large"}}'
              % (MAX_HEADER_COUNT, MAX_HEADER_BYTES))


def configure(header_timeout_s: float) -> None:
    global _header_timeout_s
    _header_timeout_s = header_timeout_s


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    _header_timer: asyncio.TimerHandle | None = None
    _header_bytes = 0

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._header_timer is not None:  # a request's headers are still arriving
            self._header_bytes += len(data)
            if self._header_bytes > MAX_HEADER_BYTES + _READ_SLACK:
                self._headers_too_large()
                return
        super().data_received(data)

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
            self._header_bytes = 0
            self._header_timer = self.loop.call_later(_header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        self.transport.close()

    def _headers_too_large(self) -> None:
        self._disarm()
        self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                             b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_TOO_LARGE), _TOO_LARGE))
        self.transport.close()
