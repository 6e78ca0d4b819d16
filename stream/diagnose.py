"""Where a running worker's partitions stand: what ``kill -USR2 <worker pid>`` logs.

A worker that stops taking records (lag that does not fall, counters that do not move)
has many places to be stuck: flow control suspended by a rebalance or a recovery, a
partition paused by Faust or by aiokafka, records fetched and never handed out, an
agent waiting on a lock, the producer or Redis. :func:`partition_report` reads each of
them, without changing anything, into one log entry; mode's SIGUSR1 (``kill -USR1``)
adds the stack of every task and thread. Both are for an operator and for the tests'
failure messages (tests/stream/accounting.py).

Everything here is read from the outside of Faust and aiokafka (their private fields
included), on the worker's event loop while the consumer thread runs: a snapshot, not a
consistent cut, and every field read is guarded so that a report never fails.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def _get(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except Exception as exc:  # a field missing in this version, a service not started
        return f"<{type(exc).__name__}>"


def _tp(tp: Any) -> str:
    return f"{getattr(tp, 'topic', '?')}[{getattr(tp, 'partition', '?')}]"


def _tps(tps: Any) -> str:
    if not isinstance(tps, (set, frozenset, list, tuple)):
        return str(tps)
    return "{" + ", ".join(sorted(_tp(tp) for tp in tps)) + "}"


def partition_report(app: Any) -> str:
    """The worker's flow, locks, buffers and, per assigned partition, its fetch and commit
    positions, as text."""
    consumer = _get(lambda: app.consumer)
    thread = _get(lambda: consumer._thread)
    kafka = _get(lambda: thread._consumer)
    fetcher = _get(lambda: kafka._fetcher)
    assignment = _get(lambda: kafka._subscription.subscription.assignment)
    processor = getattr(app, "processor", None)
    lines = [
        "where this worker stands (stream/diagnose.py):",
        f"  rebalancing={_get(lambda: app.rebalancing)} in_recovery={_get(lambda: app.tables.recovery.in_recovery)} "
        f"recovery_completed={_get(lambda: app.tables.recovery.completed.is_set())}",
        f"  consumer: {'on the worker loop' if _get(lambda: thread.on_the_loop) is True else 'in its own thread'}",
        f"  flow: app suspended={_get(lambda: app.flow_control._suspend.is_set())} "
        f"consumer flow_active={_get(lambda: consumer.flow_active)}",
        f"  faust partitions: active={_tps(_get(lambda: consumer._active_partitions))} "
        f"paused={_tps(_get(lambda: consumer._paused_partitions))} "
        f"buffered={_tps(_get(lambda: consumer._buffered_partitions))}",
        f"  aiokafka fetcher: task done={_get(lambda: fetcher._fetch_task.done())} "
        f"in flight to nodes={_get(lambda: sorted(fetcher._in_flight))} "
        f"holding records of={_tps(_get(lambda: set(fetcher._records)))}",
        f"  consumer repairs (stream/transport.py): left_out={_get(lambda: consumer.left_out)} "
        f"stale_dropped={_get(lambda: consumer.stale_dropped)} holes={_get(lambda: consumer.holes)} "
        f"reseeks={_get(lambda: consumer.reseeks)} unacked={_get(lambda: len(consumer._unacked_messages))}",
        f"  producer: faust buffer={_get(lambda: app.producer.buffer.size)} "
        f"aiokafka batches waiting={_get(lambda: sum(len(b) for b in app.producer._producer._message_accumulator._batches.values()))}",
    ]
    if processor is not None:
        lines.append(f"  processor locks: applying={_get(lambda: processor._applying.locked())} "
                     f"flushing={_get(lambda: processor._flushing.locked())}")
    for channel in _get(lambda: list(app.topics._topics)) or ():
        lines.append(f"  queue of {_get(lambda: channel.get_topic_name())}: {_get(lambda: channel.queue.qsize())} events")
    for tp in sorted(_get(lambda: consumer.assignment()) or (), key=_tp):
        state = _get(lambda: assignment.state_value(tp))
        lines.append(
            f"  {_tp(tp)}: position={_get(lambda: state.position)} paused={_get(lambda: state.paused)} "
            f"highwater={_get(lambda: consumer.highwater(tp))} read={_get(lambda: consumer._read_offset.get(tp))} "
            f"committed={_get(lambda: consumer._committed_offset.get(tp))} "
            f"acked={_get(lambda: len(consumer._acked.get(tp) or ()))} "
            f"expected={_get(lambda: consumer._expected.get(tp))} refetching={_get(lambda: consumer._refetching.get(tp))}")
    return "\n".join(lines)


def install_report_signal(app: Any, signum: int = signal.SIGUSR2) -> None:
    """Log :func:`partition_report` whenever ``signum`` arrives (on the app's running loop)."""
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signum, lambda: log.warning("%s", partition_report(app)))


__all__ = ["install_report_signal", "partition_report"]
