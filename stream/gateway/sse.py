"""Server-Sent Events on the wire: building a frame, and reading a stream (for the
tests and the benchmark, which stand in for browsers)."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass


def frame(event: str, data: bytes) -> bytes:
    """One message; each line of ``data`` becomes a ``data:`` line (no bare carriage returns)."""
    return b"event: " + event.encode() + b"\n" + b"".join(b"data: " + line + b"\n" for line in data.split(b"\n")) + b"\n"


@dataclass(frozen=True)
class Message:
    event: str
    data: bytes


async def messages(lines: AsyncIterable[bytes]) -> AsyncIterator[Message]:
    """The messages of a stream given as its lines (comments and ``retry:`` skipped)."""
    event, data = "message", list[bytes]()
    async for raw in lines:
        line = raw.rstrip(b"\r\n")
        if not line:
            if data:
                yield Message(event, b"\n".join(data))
            event, data = "message", []
        elif line.startswith(b"event:"):
            event = line[6:].strip().decode()
        elif line.startswith(b"data:"):
            data.append(line[6:] if line[5:6] == b" " else line[5:])
