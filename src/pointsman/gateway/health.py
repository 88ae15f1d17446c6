"""Is each pool model reachable and does it accept the gateway's key? One tiny request each, in parallel.

Used by `GET /health?models=1` (admin key) and `pointsman check`. The probe goes straight to the provider,
not through the dispatcher: it must not retry, cool a model down or be billed as a client's request.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pointsman.gateway.pool import Pool, PoolEntry
from pointsman.providers import ProviderError

__all__ = ["probe_models"]

PING = {"messages": [{"role": "user", "content": "ping"}], "max_tokens": 1, "temperature": 0}


async def _probe(entry: PoolEntry, timeout_s: float) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            await entry.provider.complete({**PING, "model": entry.name})
    except ProviderError as exc:
        status = {"ok": False, "error": exc.kind, "message": exc.message}
    except TimeoutError:
        status = {"ok": False, "error": "timeout", "message": f"no answer within {timeout_s:g} s"}
    else:
        status = {"ok": True}
    return {"id": entry.name, **status, "latency_ms": round((time.perf_counter() - started) * 1000, 1)}


async def probe_models(pool: Pool, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """One row per pool model: ok, or the error kind and message, and how long the probe took."""
    return list(await asyncio.gather(*(_probe(entry, timeout_s) for entry in pool.entries.values())))
