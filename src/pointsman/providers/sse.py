"""Reading server-sent events from an upstream: the `data:` payloads of each event, in order."""

from __future__ import annotations

from collections.abc import AsyncIterator


async def sse_events(lines: AsyncIterator[bytes]) -> AsyncIterator[tuple[str | None, bytes]]:
    """Yield (event name, data) per event; multi-line data is joined with newlines as the spec says."""
    event: str | None = None
    data: list[bytes] = []
    async for raw in lines:
        line = raw.rstrip(b"\r")
        if not line:
            if data:
                yield event, b"\n".join(data)
            event, data = None, []
            continue
        if line.startswith(b"data:"):
            data.append(line[6:] if line[5:6] == b" " else line[5:])
        elif line.startswith(b"event:"):
            event = line[6:].strip().decode()
        # comments (":") and other fields (id, retry) carry nothing a chat stream needs
    if data:
        yield event, b"\n".join(data)
