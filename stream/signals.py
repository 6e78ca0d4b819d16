"""SIGTERM takes Ctrl-C's path in every command that starts services.

A command stopped with SIGTERM (``kill``, systemd, ``docker stop``, a CI timeout) must
stop the broker, redis-server, worker and gateway it started, as it does on Ctrl-C:
:func:`sigterm_as_interrupt` turns SIGTERM into SIGINT, which raises
``KeyboardInterrupt`` (or, inside ``asyncio.run``, cancels the main task), so the
``finally`` blocks and exit stacks that stop those services run. Once one has arrived,
further SIGTERMs are ignored, so that a second one cannot cut that cleanup short.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


def _interrupt(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.raise_signal(signal.SIGINT)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM acts as SIGINT; SIGINT gets its default handler even where
    the shell started us with it ignored (a background job), so ``asyncio.run`` installs
    its own. Both handlers are put back afterwards. Main thread only."""
    previous = signal.signal(signal.SIGTERM, _interrupt), signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
