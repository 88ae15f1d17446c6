"""Every replica's in-memory copy of the virtual keys and limits: a request's key look-up is a dict read.

The copy follows the database by polling its change counter every ``refresh_s`` in a worker thread (one
indexed read when nothing changed), so a key created, rotated or revoked on any replica, or with the CLI, is
honoured by every replica within ``refresh_s`` plus one poll (the stated bound; the replica that made the change
applies it at once). A replica that cannot reach the database keeps its last copy and retries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from pointsman.accounting.keys import KeyStore, Limit, VirtualKey, hash_secret
from pointsman.errors import GatewayError
from pointsman.ledger import LedgerRecord

__all__ = ["KeyDirectory"]

log = logging.getLogger("pointsman.accounting")


class KeyDirectory:
    def __init__(self, open_store: Callable[[], KeyStore], refresh_s: float = 1.0) -> None:
        self._open_store = open_store
        self.refresh_s = refresh_s
        self.store: KeyStore | None = None
        self.version = 0
        self._keys: dict[str, VirtualKey] = {}  # id -> key
        self._by_hash: dict[str, VirtualKey] = {}  # current and (within a rotation's grace) previous hashes
        self.limits: dict[tuple[str, str], list[Limit]] = {}  # (scope, name) -> its limits, one per model filter
        self._task: asyncio.Task[None] | None = None
        self.refresh_errors = 0

    @property
    def closed(self) -> bool:
        """Once a virtual key exists, a gateway without other keys stops being open."""
        return bool(self._keys)

    async def start(self) -> None:
        self.store = await asyncio.to_thread(self._open_store)
        await self.refresh()
        if self.refresh_s > 0:
            self._task = asyncio.create_task(self._follow(), name="pointsman-keys")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.store is not None:
            await asyncio.to_thread(self.store.close)

    async def refresh(self) -> None:
        assert self.store is not None
        version, keys, limits = await asyncio.to_thread(self.store.changes, self.version)
        self.apply(version, keys, limits)

    def apply(self, version: int, keys: Iterable[VirtualKey], limits: Iterable[Limit]) -> None:
        for key in keys:
            old = self._keys.get(key.id)
            if old is not None:
                self._by_hash.pop(old.hash, None)
                if old.previous_hash:
                    self._by_hash.pop(old.previous_hash, None)
            self._keys[key.id] = key
            self._by_hash[key.hash] = key
            if key.previous_hash:
                self._by_hash[key.previous_hash] = key
        for limit in limits:
            scoped = [x for x in self.limits.get((limit.scope, limit.name), []) if x.model != limit.model]
            if not limit.removed:
                scoped.append(limit)
            if scoped:
                self.limits[(limit.scope, limit.name)] = scoped
            else:
                self.limits.pop((limit.scope, limit.name), None)
        self.version = max(self.version, version)

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh()
            except Exception as exc:  # noqa: BLE001 - the database is away: keep the last copy, try again
                self.refresh_errors += 1
                log.warning("virtual keys: refresh from the database failed, keeping the last copy: %s", exc)

    # -- the hot path ------------------------------------------------------------------------------------------
    def authenticate(self, secret: str) -> VirtualKey:
        """The key whose secret this is, or a 401 saying why not."""
        hashed = hash_secret(secret)
        key = self._by_hash.get(hashed)
        if key is None:
            raise GatewayError(401, "invalid API key", code="invalid_api_key")
        now = time.time()
        if key.revoked is not None:
            raise GatewayError(401, "this API key has been revoked", code="revoked_api_key")
        if key.expires is not None and key.expires <= now:
            raise GatewayError(401, "this API key has expired", code="expired_api_key")
        if hashed != key.hash and (key.previous_until is None or key.previous_until <= now):
            raise GatewayError(401, "this API key was rotated: use the new key", code="revoked_api_key")
        return key

    @staticmethod
    def identify(key: VirtualKey, record: LedgerRecord) -> None:
        """A virtual key's user, team and cohort become the request's (its budgets cannot be dodged with a header);
        x-pointsman-cohort (already in ``record.cohort``) stays only when the key allows it."""
        if key.user is not None:
            record.user = key.user
        record.team = key.team
        if not (key.allow_cohort_header and record.cohort):
            record.cohort = key.cohort

    def get(self, key_id: str | None) -> VirtualKey | None:
        return self._keys.get(key_id) if key_id is not None else None

    def all_limits(self) -> list[Limit]:
        return [limit for scoped in self.limits.values() for limit in scoped]

    def keys(self) -> list[VirtualKey]:
        return sorted(self._keys.values(), key=lambda k: k.created)
