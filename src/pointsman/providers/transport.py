"""The network seam of HTTP providers, in the manner of httpx's transports.

Providers speak to a `Transport`, never to a socket: the default `AiohttpTransport` keeps pooled
keep-alive connections (one session for the whole gateway), and a test can hand a provider any object
with the same two methods. Errors of the network itself come out as `ProviderError`, classified once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from pointsman.providers.base import ProviderError

MAX_UPSTREAM_BODY = 32 * 1024 * 1024  # a larger answer is a broken upstream, not an answer
MAX_SSE_LINE = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Timeout:
    connect: float
    read: float  # whole body for `request`; the gap between two chunks for `stream`


class StreamResponse(Protocol):
    status: int
    headers: Mapping[str, str]

    def lines(self) -> AsyncIterator[bytes]: ...
    async def read(self) -> bytes: ...
    def close(self) -> None: ...


class Transport(Protocol):
    async def request(self, url: str, headers: Mapping[str, str], body: bytes, timeout: Timeout) -> tuple[int, Mapping[str, str], bytes]: ...
    async def stream(self, url: str, headers: Mapping[str, str], body: bytes, timeout: Timeout) -> StreamResponse: ...
    async def aclose(self) -> None: ...


def _network_error(exc: BaseException, url: str) -> ProviderError:
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return ProviderError(f"upstream timed out ({url})", status=504, kind="timeout")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ProviderError(f"cannot connect to upstream ({url}): {exc.os_error}", status=502, kind="connect_error")
    return ProviderError(f"upstream connection failed ({url}): {type(exc).__name__}: {exc}", status=502, kind="connection_error")


async def _read_limited(response: aiohttp.ClientResponse, url: str) -> bytes:
    length = response.content_length
    if length is not None and length > MAX_UPSTREAM_BODY:
        response.close()
        raise ProviderError(f"upstream answer too large ({length} bytes, {url})", kind="bad_upstream_response")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(256 * 1024):
        size += len(chunk)
        if size > MAX_UPSTREAM_BODY:
            response.close()
            raise ProviderError(f"upstream answer too large (over {MAX_UPSTREAM_BODY} bytes, {url})", kind="bad_upstream_response")
        chunks.append(chunk)
    return b"".join(chunks)


class _AiohttpStream:
    def __init__(self, response: aiohttp.ClientResponse, url: str) -> None:
        self._response = response
        self._url = url
        self.status = response.status
        self.headers = response.headers

    async def lines(self) -> AsyncIterator[bytes]:
        # Split by hand: aiohttp's readline caps a line at twice its read buffer, too small for
        # an answer some servers send as one event.
        buffer = b""
        try:
            async for data in self._response.content.iter_any():
                buffer += data
                if b"\n" not in data:
                    if len(buffer) > MAX_SSE_LINE:
                        raise ProviderError(f"upstream sent an oversized stream line ({self._url})", kind="bad_upstream_response")
                    continue
                *complete, buffer = buffer.split(b"\n")
                for line in complete:
                    yield line
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _network_error(exc, self._url) from exc
        if buffer:
            yield buffer

    async def read(self) -> bytes:
        try:
            return await _read_limited(self._response, self._url)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _network_error(exc, self._url) from exc

    def close(self) -> None:
        self._response.release()


class AiohttpTransport:
    """Pooled keep-alive HTTP/1.1 to every upstream; the session is made inside the running loop."""

    def __init__(self, limit: int = 1024, limit_per_host: int = 256) -> None:
        self._limit = limit
        self._limit_per_host = limit_per_host
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._limit, limit_per_host=self._limit_per_host, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector, read_bufsize=2**16,
                                                  skip_auto_headers=("User-Agent",))
        return self._session

    async def request(self, url: str, headers: Mapping[str, str], body: bytes, timeout: Timeout) -> tuple[int, Mapping[str, str], bytes]:
        client_timeout = aiohttp.ClientTimeout(total=timeout.read, connect=timeout.connect)
        try:
            async with self._get_session().post(url, data=body, headers=headers, timeout=client_timeout) as response:
                return response.status, response.headers, await _read_limited(response, url)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _network_error(exc, url) from exc

    async def stream(self, url: str, headers: Mapping[str, str], body: bytes, timeout: Timeout) -> StreamResponse:
        client_timeout = aiohttp.ClientTimeout(total=None, connect=timeout.connect, sock_read=timeout.read)
        try:
            response = await self._get_session().post(url, data=body, headers=headers, timeout=client_timeout)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _network_error(exc, url) from exc
        return _AiohttpStream(response, url)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
