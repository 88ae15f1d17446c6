"""What the gateway must never show a client or write down: the providers' keys and URL credentials.

Upstreams echo things back: a 401 that quotes the key, an error naming the URL with its `?key=` query, a
misbehaving proxy that puts a request header into an answer. Every text and every answer body the gateway
relays or records goes through :class:`Redactor` first. A secret of 8 characters or more is replaced
wherever it occurs; a shorter one (a test or local key) only as a whole token, so that a 3-letter key does
not blank out every word that contains it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlsplit

__all__ = ["Redactor", "url_secrets", "REDACTED"]

REDACTED = "[redacted]"
SHORT = 8
log = logging.getLogger("pointsman.secrets")


def url_secrets(url: str | None) -> list[str]:
    """The credentials a URL carries: its password and its query values (`?key=...`, `?sig=...`)."""
    if not url:
        return []
    parts = urlsplit(url)
    found = [parts.password] if parts.password else []
    raw = [pair.partition("=")[2] for pair in parts.query.split("&")]  # as written, and decoded
    return found + [value for value in raw if value] + [value for _, value in parse_qsl(parts.query) if value]


class Redactor:
    def __init__(self, secrets: Iterable[str | None]) -> None:
        unique = sorted({s for s in secrets if s}, key=len, reverse=True)  # longest first: no partial overlap left
        self._long = [s for s in unique if len(s) >= SHORT]
        short = [s for s in unique if len(s) < SHORT]
        for secret in short:
            log.warning("a provider secret is shorter than %d characters: it is redacted only as a whole token", SHORT)
        self._short = re.compile("|".join(rf"(?<![\w-]){re.escape(s)}(?![\w-])" for s in short)) if short else None
        self._short_bytes = re.compile(self._short.pattern.encode()) if self._short is not None else None
        self._long_bytes = [s.encode() for s in self._long]

    def __bool__(self) -> bool:
        return bool(self._long or self._short)

    def text(self, text: str | None) -> str | None:
        if text:
            for secret in self._long:
                if secret in text:
                    text = text.replace(secret, REDACTED)
            if self._short is not None:
                text = self._short.sub(REDACTED, text)
        return text

    def body(self, payload: bytes) -> bytes:
        """An encoded answer or event with every secret replaced (secrets are printable ASCII, so JSON carries
        them as they are)."""
        for secret in self._long_bytes:
            if secret in payload:
                payload = payload.replace(secret, REDACTED.encode())
        if self._short_bytes is not None:
            payload = self._short_bytes.sub(REDACTED.encode(), payload)
        return payload
