"""The network seam of HTTP providers, in the manner of httpx's transports.

Providers speak to a `Transport`, never to a socket, so a test can hand a provider any object with
the same methods. The default, `ReqwestTransport`, is pyreqwest (Rust's reqwest and hyper): pooled
keep-alive connections, TLS and proxies from the environment, at about half the CPU per request of
aiohttp (measured in bench/gateway). Errors of the network itself come out as `ProviderError`,
classified once, here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from pyreqwest import exceptions as reqwest_errors
from pyreqwest.client import Client, ClientBuilder

from pointsman.providers.base import ProviderError

MAX_UPSTREAM_BODY = 32 * 1024 * 1024  # a larger answer is a broken upstream, not an answer
MAX_SSE_LINE = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Timeout:
    connect: float
    read: float  # whole answer for `request`; the longest gap between two chunks for `stream`


class StreamResponse(Protocol):
    status: int
    headers: Mapping[str, str]

    def lines(self) -> AsyncIterator[bytes]: ...
    async def read(self) -> bytes: ...
    async def aclose(self) -> None: ...


class Transport(Protocol):
    async def request(self, url: str, headers: Mapping[str, str], body: bytes, timeout: Timeout) -> tuple[int, Mapping[str, str], bytes]: ...
    async def stream(self, url: str, headers: Mapping[str, str], body: bytes, timeout: Timeout) -> StreamResponse: ...
    async def aclose(self) -> None: ...


def _cause(exc: reqwest_errors.PyreqwestError) -> str:
    details = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else {}
    causes = [c.get("message", "") for c in details.get("causes") or []]
    return causes[-1] if causes else str(exc.args[0] if exc.args else exc)


def _network_error(exc: reqwest_errors.PyreqwestError, url: str) -> ProviderError:
    # pyreqwest reports a wait for the response's headers as a connect timeout too: both are 504s.
    if isinstance(exc, reqwest_errors.RequestTimeoutError):
        return ProviderError(f"upstream timed out ({url})", status=504, kind="timeout")
    if isinstance(exc, reqwest_errors.ConnectError) and "Connect)" in str(exc.args):
        return ProviderError(f"cannot connect to upstream ({url}): {_cause(exc)}", status=502, kind="connect_error")
    return ProviderError(f"upstream connection failed ({url}): {_cause(exc)}", status=502, kind="connection_error")


def _too_large(url: str) -> ProviderError:
    return ProviderError(f"upstream answer too large (over {MAX_UPSTREAM_BODY} bytes, {url})", kind="bad_upstream_response")


async def _read_limited(response: Any, url: str) -> bytes:
    length = response.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_UPSTREAM_BODY:
        raise _too_large(url)
    chunks: list[bytes] = []
    size = 0
    reader = response.body_reader
    while (chunk := await reader.read_chunk()) is not None:
        size += len(chunk)
        if size > MAX_UPSTREAM_BODY:
            raise _too_large(url)
        chunks.append(bytes(chunk))
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class _ReqwestStream:
    def __init__(self, request: Any, response: Any, url: str) -> None:
        self._request = request
        self._response = response
        self._url = url
        self.status: int = response.status
        self.headers: Mapping[str, str] = response.headers

    async def lines(self) -> AsyncIterator[bytes]:
        buffer = b""
        reader = self._response.body_reader
        try:
            while (chunk := await reader.read_chunk()) is not None:
                data = bytes(chunk)
                buffer += data
                if b"\n" not in data:
                    if len(buffer) > MAX_SSE_LINE:
                        raise ProviderError(f"upstream sent an oversized stream line ({self._url})", kind="bad_upstream_response")
                    continue
                *complete, buffer = buffer.split(b"\n")
                for line in complete:
                    yield line
        except reqwest_errors.PyreqwestError as exc:
            raise _network_error(exc, self._url) from exc
        if buffer:
            yield buffer

    async def read(self) -> bytes:
        try:
            return await _read_limited(self._response, self._url)
        except reqwest_errors.PyreqwestError as exc:
            raise _network_error(exc, self._url) from exc

    async def aclose(self) -> None:
        await self._request.__aexit__(None, None, None)


class ReqwestTransport:
    """One pooled client per timeout setting (reqwest sets connect and read timeouts per client)."""

    def __init__(self, max_connections: int = 1024) -> None:
        self._max_connections = max_connections
        self._clients: dict[Timeout, Client] = {}

    def _client(self, timeout: Timeout) -> Client:
        client = self._clients.get(timeout)
        if client is None:
            client = self._clients[timeout] = (
                ClientBuilder().connect_timeout(timedelta(seconds=timeout.connect))
                .read_timeout(timedelta(seconds=timeout.read)).max_connections(self._max_connections)
                .error_for_status(False).follow_redirects(False).build())
        return client

    async def request(self, url: str, headers: Mapping[str, str], body: bytes, timeout: Timeout) -> tuple[int, Mapping[str, str], bytes]:
        request = (self._client(timeout).post(url).headers(headers).body_bytes(body)
                   .timeout(timedelta(seconds=timeout.read)).streamed_read_buffer_limit(0).build_streamed())
        try:
            async with request as response:
                return response.status, response.headers, await _read_limited(response, url)
        except reqwest_errors.PyreqwestError as exc:
            raise _network_error(exc, url) from exc

    async def stream(self, url: str, headers: Mapping[str, str], body: bytes, timeout: Timeout) -> StreamResponse:
        # No buffering before the response is handed over: the first chunk must reach the client at once.
        request = self._client(timeout).post(url).headers(headers).body_bytes(body).streamed_read_buffer_limit(0).build_streamed()
        try:
            response = await request.__aenter__()
        except reqwest_errors.PyreqwestError as exc:
            raise _network_error(exc, url) from exc
        return _ReqwestStream(request, response, url)

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
