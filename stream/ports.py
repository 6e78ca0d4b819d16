"""What the pipeline's stages are handed: the sinks they send on, the messages they consume,
the writer they queue feature rows on. Faust's topics and events, the micro-batching writer
and the tests' fakes all fit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeAlias

from streamrec.features.schema import FeatureRow


class Sink(Protocol):
    """A topic to send on; ``partition`` None lets the producer choose by key."""

    async def send(self, *, key: bytes | None = None, value: bytes | None = None, partition: int | None = None) -> Any: ...


class RawMessage(Protocol):
    """What a stage needs of a consumed message (Faust's ``Event`` fits)."""

    key: bytes | None
    value: bytes


Consumed: TypeAlias = tuple[RawMessage, int, int]
"""A consumed message with its partition and offset."""


class RowWriter(Protocol):
    """Where feature rows go: queued in order, written in micro-batches (features/batching.py)."""

    async def submit(self, rows: Sequence[FeatureRow]) -> None: ...

    async def flush(self) -> None: ...
