"""What every HTTP provider shares: its endpoint URL, timeouts, headers and how it sends its key."""

from __future__ import annotations

from pointsman.config.schema import ModelConfig
from pointsman.providers.base import Provider
from pointsman.providers.transport import Timeout, Transport


class HttpProvider(Provider):
    default_base_url: str
    path: str  # appended to the base URL
    protocol_headers: dict[str, str] = {}

    def __init__(self, config: ModelConfig, transport: Transport) -> None:
        super().__init__(config)
        self._transport = transport
        self._url = (config.base_url or self.default_base_url).rstrip("/") + self.path
        self._timeout = Timeout(connect=config.connect_timeout_s, read=config.timeout_s)
        # config.headers last, so a pool entry can pin an API version or add a beta flag.
        self._static_headers = {"content-type": "application/json", **self.protocol_headers, **config.headers}

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"}

    def _headers(self) -> dict[str, str]:
        key = self.api_key
        return {**self._static_headers, **self.auth_headers(key)} if key else self._static_headers
