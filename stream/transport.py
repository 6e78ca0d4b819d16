"""Faust's aiokafka transport with the consumer fetch wait as a setting.

faust-streaming 0.15.3 hard-codes ``fetch_max_wait_ms=1500`` when it builds the
worker's ``AIOKafkaConsumer``. Kafka answers a fetch as soon as any of its partitions
has data, but aiokafka keeps one fetch in flight per broker and leaves out of it the
partitions whose records still wait in its buffer; data that arrives for those waits
until the in-flight fetch returns, up to the full wait on a quiet topic. These subclasses
set the wait from ``Settings.broker.fetch_max_wait_ms`` without touching faust's files,
serve fetched partitions round-robin (no topic starves behind another's backlog),
and run ``app.before_commit()`` once a commit has chosen its offsets (write-behind
state and feature rows reach their changelogs and Redis, in the same transaction
under exactly_once, before the offsets that produced them). ``send_lingering`` and
``flush_now`` end the producer's linger when a batch is done (aiokafka's own flush
waits it out). Unless ``worker.consumer_thread`` is set, the consumer runs on the
worker's event loop instead of Faust's thread (``_TunedConsumerThread``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, cast

import aiokafka
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.utils.futures import maybe_async
from mode.utils.locks import Event

log = logging.getLogger(__name__)

# A partition whose acked messages cannot commit (one before them was never delivered)
# for this long is sought back to its committed offset (_TunedConsumer._new_offset).
STALLED_HEAD_RESEEK_S = 10.0
# A partition re-read from a hole in its offsets (_TunedConsumer.in_order): how often, how long apart.
REFETCH_ATTEMPTS = 60
REFETCH_RETRY_S = 0.2
REFETCH_AGAIN_S = 2.0  # a re-read that has not brought the missing offset by then is made again
MAX_SKIPS_KEPT = 256  # per partition: ranges the broker skipped, for the hole checks


class ActivePartitions:
    """The live set of partitions Faust takes records of, as aiokafka's ``fetched_records``
    reads it: a membership test that is never empty.

    aiokafka reads an empty ``partitions`` argument as "every partition". Faust passes its
    own live set, and the consumer waits in ``fetched_records`` for up to a second (in its
    thread, or in a task of the worker's loop) while Faust's main loop changes that set: at
    the end of a table recovery it pauses the changelog partitions before it resumes the
    stream's, and for that moment the set is empty. A fetch that came back then handed the
    stream partitions' records out while Faust still counted them paused; Faust left them
    out, the fetch position had passed them, and no seek brought them back (a restarted
    worker never applied 478 of one partition's 500 records, tests/stream/test_routing_crash.py).
    """

    __slots__ = ("tps",)

    def __init__(self, tps: set[Any]) -> None:
        self.tps = tps

    def __contains__(self, tp: Any) -> bool:
        return tp in self.tps

    def __bool__(self) -> bool:
        return True


class _OnTheLoop:
    """Stands in for mode's ``WorkerThread``: runs a ``ServiceThread`` whose thread loop is
    its parent's loop as a task of that loop, in the worker's own thread."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.task: asyncio.Future[Any] | None = None

    def start(self) -> None:
        self.task = asyncio.ensure_future(self.service._serve(), loop=self.service.parent_loop)

    def stop(self) -> None:
        """Nothing to join: ``_TunedConsumerThread.stop`` waits for the task."""


class _TunedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread; with ``worker.consumer_thread`` false, no thread: the consumer
    runs on the worker's event loop (``_OnTheLoop``) and Faust's calls into it are direct
    awaits instead of hand-offs through a method queue to a second loop. With a thread,
    each fetch crossed two loops (a queued call there, a result posted back), and the two
    threads took turns at the GIL: the thread's socket writes and the loop's waited for
    it (README, Settings, ``STREAMREC_WORKER__CONSUMER_THREAD``)."""

    fetched_to: dict[Any, int | None] = {}  # tp -> aiokafka's position once the last fetch returned (replaced whole)
    handed: dict[Any, tuple[int, int]] = {}  # tp -> (first, last) offset the last fetch handed out (replaced whole)
    # (tp, start, end): offsets [start, end) the broker skipped in a fetch (transaction
    # markers, aborted records, compacted keys): no record there to wait for. Taken by the
    # main loop (_TunedConsumer.getmany) between fetches.
    broker_skips: list[tuple[Any, int, int]] = []

    def __init__(self, consumer: Any, *, loop: asyncio.AbstractEventLoop, **kwargs: Any) -> None:
        self.on_the_loop = not consumer.app.settings.worker.consumer_thread
        if self.on_the_loop:
            kwargs.update(thread_loop=loop, Worker=_OnTheLoop)
        super().__init__(consumer, loop=loop, **kwargs)

    async def call_thread(self, fun: Any, *args: Any, **kwargs: Any) -> Any:
        if self.on_the_loop:
            return await maybe_async(fun(*args, **kwargs))
        return await super().call_thread(fun, *args, **kwargs)

    async def stop(self) -> None:
        await super().stop()
        task = self._thread.task if isinstance(self._thread, _OnTheLoop) else None
        if task is not None and task is not asyncio.current_task():
            await asyncio.wait([task])  # what joining the thread did: the service has wound down

    async def _gather_remaining_tasks(self) -> None:
        # mode cancels every task left on the thread's loop once the thread's service has
        # stopped: on the worker's loop those are the worker's own.
        if not self.on_the_loop:
            await super()._gather_remaining_tasks()

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it builds its Fetcher, which happens later.
        consumer._fetch_max_wait_ms = self.app.fetch_max_wait_ms  # type: ignore[attr-defined]
        return consumer

    async def _fetch_records(
        self, consumer: aiokafka.AIOKafkaConsumer, active_partitions: Any, timeout: float | None = None,
        max_records: int | None = None,
    ) -> Any:
        # aiokafka hands out fetched records partition by partition in the order they were
        # fetched, up to max_records: a backlog on the clickstream kept the item topic's
        # records waiting for seconds. Partitions served now go to the back of the line.
        # (Runs where the consumer runs, its thread or the worker's loop, which owns the fetcher's buffer.)
        starts = {tp: position(consumer, tp) for tp in active_partitions or ()}
        only = None if active_partitions is None else ActivePartitions(active_partitions)
        records = await super()._fetch_records(consumer, only, timeout=timeout,  # type: ignore[arg-type]  # a set's reads
                                               max_records=max_records)
        to_back_of_line(consumer._fetcher._records, records)
        self.fetched_to = {tp: position(consumer, tp) for tp in records}  # see _TunedConsumer.getmany
        self.handed = {tp: (batch[0].offset, batch[-1].offset) for tp, batch in records.items() if batch}
        skips = broker_skips(records, starts)
        if skips:
            self.broker_skips = [*self.broker_skips, *skips]
        return records

    def sought_since_fetch(self, tp: Any) -> bool:
        """Whether ``tp`` was sought after the last fetch returned its records (read on the
        main loop: a position is an int, replaced whole by the consumer thread)."""
        return self.fetch_position(tp) != self.fetched_to.get(tp)

    def fetch_position(self, tp: Any) -> int | None:
        consumer = self._consumer
        return None if consumer is None else position(consumer, tp)


def broker_skips(records: Mapping[Any, list[Any]], starts: Mapping[Any, int | None]) -> list[tuple[Any, int, int]]:
    """(tp, start, end) for each range of offsets a fetch from ``starts`` passed over: the
    first record after its start, or after the record before it, has a higher offset."""
    skips = []
    for tp, batch in records.items():
        expect = starts.get(tp)
        for record in batch:
            if expect is not None and record.offset > expect:
                skips.append((tp, expect, record.offset))
            expect = record.offset + 1
    return skips


def position(consumer: aiokafka.AIOKafkaConsumer, tp: Any) -> int | None:
    """aiokafka's fetch position of ``tp``: the offset after the records it handed out last,
    or the target of a seek since; None when not assigned."""
    subscription = consumer._subscription.subscription
    state = subscription.assignment.state_value(tp) if subscription is not None and subscription.assignment else None
    return state.position if state is not None and state.has_valid_position else None


def to_back_of_line(pending: dict[Any, Any], served: Iterable[Any]) -> None:
    """Move the ``served`` keys of ``pending`` (an insertion-ordered buffer) to its end."""
    for key in served:
        if key in pending:
            pending[key] = pending.pop(key)


class _FlowSuspension(Event):
    """``Consumer.suspend_flow`` whose ``wait()`` never returns.

    Faust's drain loop races each fetched message's delivery against
    ``suspend_flow.wait()`` (set while partitions are revoked or tables recover) and
    marks the message read either way, so a delivery that lost the race was a message
    dropped: seen after a worker's restart, up to 30 events of a fetch never reached
    the agent while the offsets after them were read, and the partition's commit stalled
    behind them until the next restart. Nothing else waits on this event, so with a
    ``wait()`` that never returns every started delivery completes, in order; stopping
    still ends the wait (the drain loop also waits on the service's stop).
    """

    async def wait(self) -> bool:
        await asyncio.get_running_loop().create_future()
        return True  # not reached


class _TunedConsumer(faust_aiokafka.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.suspend_flow = _FlowSuspension()  # type: ignore[assignment]  # mode's Event, where Faust declares asyncio's
        self._stalled_since: dict[Any, float] = {}
        self.reseeks = 0
        self.stale_dropped = 0  # records of a fetch whose partition was sought while Faust handed them out
        self.left_out = 0  # fetches whose records Faust left out in part (their partition paused meanwhile): read again
        self.holes = 0  # times a partition's next offset never reached the agents (refetched)
        self._expected: dict[Any, int] = {}  # tp -> the offset the agents should see next
        self._refetching: dict[Any, int] = {}  # tp -> the offset sought back to after a hole
        self._skipped: dict[Any, list[tuple[int, int]]] = {}  # tp -> [start, end) ranges the broker skipped
        self._held: weakref.WeakSet[Any] = weakref.WeakSet()  # messages not applied: their acks must not commit

    # -- no record skipped ---------------------------------------------------------------
    # Faust reads a fetch lazily, one record at a time, while its recovery seeks the stream
    # partitions to their committed offsets. Records of a fetch made before the seek went on
    # to the agents after it; then the drain loop saw its read offset jump (the seek had set
    # it back), recorded the offsets in between as a "gap" that counts as acknowledged, and
    # dropped the re-fetched records as already read. The commit passed events that were
    # never applied (the rebalance fault test's lost events, tests/stream/test_faults.py).
    # Three guards: such stale records are dropped before Faust sees them (``getmany``),
    # so the re-fetch delivers them; under at_least_once (read_uncommitted: a partition's
    # offsets have no holes but transaction markers) a jump is never a gap to commit over
    # and the committed offset must be the first acked one; and the agents apply a
    # partition's records only in offset order without a hole (``in_order``), re-fetching
    # from the first missing offset, because per-partition offset marks
    # (features/window.py) would take an applied later offset for proof that the earlier
    # ones were applied.

    async def getmany(self, timeout: float) -> Any:
        thread, stale = cast(_TunedConsumerThread, self._thread), 0  # made by _new_consumer_thread
        last: dict[Any, int] = {}  # tp -> the last offset handed on
        async for tp, message in super().getmany(timeout):
            if thread.broker_skips:  # before the records after them reach the agents
                await self._take_broker_skips(thread)
            if thread.sought_since_fetch(tp):
                stale += 1  # the seek's position re-fetches it
                self._read_from_seek(thread, tp)
                continue
            last[tp] = message.offset
            yield tp, message
        await self._take_broker_skips(thread)
        for tp in thread.fetched_to:
            if thread.sought_since_fetch(tp):
                self._read_from_seek(thread, tp)
        if stale:
            self.stale_dropped += stale
            log.info("%d records fetched before a seek of their partition left out (read again from the seek)", stale)
        await self._read_again_what_faust_left_out(thread, last)

    async def _read_again_what_faust_left_out(self, thread: _TunedConsumerThread, last: Mapping[Any, int]) -> None:
        """Faust hands a fetch's records on lazily and leaves out, without a word, those of a
        partition paused meanwhile (and the rest of the fetch when a rebalance starts); the
        fetch position has passed them. A hole before a later record is found by
        ``in_order``, but the tail of a partition that gets no later record would wait for
        good. Each partition whose fetched records did not all go on is sought back to the
        first one that did not, unless a seek (a recovery's) already moved it; or further
        back, to the first one the agents have not taken: a record handed on waits in its
        channel's queue, which a rebalance clears. Sought past such a record, the agents
        took the next one for the partition's next (the seek sets ``_expected``), and the
        users' offset marks then took the dropped one, re-read later, for a duplicate
        (tests/stream/test_faults.py, the join-and-leave cycles, lost one event so)."""
        for tp, (first, end) in thread.handed.items():
            done = last.get(tp)
            if (done is not None and done >= end) or thread.sought_since_fetch(tp) or tp not in self.assignment():
                continue
            start = first if done is None else done + 1
            taken_to = self._expected.get(tp)
            if taken_to is not None:
                start = min(start, taken_to)
            self.left_out += 1
            # At a rebalance Faust stops handing a fetch on by design (the recovery then seeks to
            # the committed offsets, which re-reads these too, but not where nothing is committed).
            expected = self.app.rebalancing or not self.flow_active  # type: ignore[attr-defined]
            log.log(logging.INFO if expected else logging.WARNING,
                    "%s: offsets %d..%d were fetched but never handed to the agents%s; reading them again",
                    tp, start, end, " (a rebalance began)" if expected else "")
            try:
                await self.seek(tp, start)
            except Exception as exc:  # reassigned meanwhile: its new owner starts from the committed offset
                log.warning("%s: re-reading from %d failed (%s)", tp, start, exc)

    async def _take_broker_skips(self, thread: _TunedConsumerThread) -> None:
        """Under at_least_once, ranges the broker skipped are the only holes allowed: kept
        for ``in_order`` and the head check, and counted as gaps the commit may pass."""
        skips, thread.broker_skips = thread.broker_skips, []
        if self.in_transaction:
            return
        for tp, start, end in skips:
            confirmed = self._skipped.setdefault(tp, [])
            confirmed.append((start, end))
            if len(confirmed) > MAX_SKIPS_KEPT:
                del confirmed[: len(confirmed) - MAX_SKIPS_KEPT]
            await super()._add_gap(tp, start, end - 1)

    def _skipped_by_broker(self, tp: Any, start: int, end: int) -> bool:
        """Whether the broker passed over every offset in [start, end) of ``tp``."""
        for low, high in sorted(self._skipped.get(tp, ())):
            if low <= start < high:
                start = high
            if start >= end:
                return True
        return start >= end

    def _read_from_seek(self, thread: _TunedConsumerThread, tp: Any) -> None:
        """Faust's read offset of ``tp`` back to the seek's position: the drain loop, still
        delivering a record of the earlier fetch when the seek set it, set it to that
        record's offset afterwards, and then dropped the re-fetched records as already read."""
        target = thread.fetch_position(tp)
        if target is not None:
            self._read_offset[tp] = target

    async def _add_gap(self, tp: Any, offset_from: int, offset_to: int) -> None:
        if self.in_transaction:  # read_committed: aborted records are real holes
            await super()._add_gap(tp, offset_from, offset_to)
            return
        log.warning("%s: offsets %d..%d were skipped on the way to the agents; not committed over them",
                    tp, offset_from, offset_to)

    async def perform_seek(self) -> None:
        await super().perform_seek()
        for tp, offset in self._committed_offset.items():
            if offset is not None:
                self._expected[tp] = offset
            self._refetching.pop(tp, None)

    async def seek(self, partition: Any, offset: int) -> None:
        await super().seek(partition, offset)
        self._expected[partition] = offset

    async def on_partitions_revoked(self, revoked: Any) -> None:
        for tp in revoked:
            self._expected.pop(tp, None)
            self._refetching.pop(tp, None)
        await super().on_partitions_revoked(revoked)

    def hold(self, messages: Iterable[Any]) -> None:
        """Messages taken but not applied (a hole before them, or their partition revoked):
        Faust's ``take_events`` acks them all the same, and an ack lets the commit pass its
        offset once the offsets before it are acked. Their acks are not recorded."""
        self._held.update(messages)

    def ack(self, message: Any) -> bool:
        if message in self._held:
            self._held.discard(message)
            message.acked = True
            self._unacked_messages.discard(message)  # nothing to wait for on a rebalance or a stop
            return False
        return bool(super().ack(message))

    def in_order(self, events: Sequence[Any]) -> list[Any]:
        """The events (Faust ``EventT``) to apply: each partition's, up to a hole in its
        offsets. At a hole, the partition is sought back to the first missing offset
        (once), and its later events wait for the re-fetch. Under exactly_once every event
        (markers and aborted records leave holes there; stale fetches are dropped anyway)."""
        if self.in_transaction:
            return list(events)
        kept, held = [], set()
        for event in events:
            tp, offset = event.message.tp, event.message.offset
            if tp in held:
                self._held.add(event.message)
                continue
            want = self._expected.get(tp)
            if want is None or offset <= want or self._skipped_by_broker(tp, want, offset):
                # the next one (past what the broker skipped), or one applied already (deduplicated)
                self._expected[tp] = max(offset + 1, want or 0)
                if self._refetching.get(tp, offset + 1) <= offset:
                    del self._refetching[tp]
                kept.append(event)
                continue
            held.add(tp)
            self._held.add(event.message)
            if self._refetching.get(tp) != want:
                self._refetching[tp] = want
                self.holes += 1
                log.warning("%s: offset %d reached the agents before %d; re-reading from %d", tp, offset, want, want)
                asyncio.ensure_future(self._refetch(tp, want))
        return kept

    def _new_offset(self, tp: Any) -> int | None:
        """Faust's next committable offset, and a watch on the partition's head.

        Faust commits only the acked offsets that follow the committed one without a gap,
        skipping one (a transaction marker): under at_least_once no marker is skipped
        here, since a record missing at the head was not applied. When messages right
        after a restart's seek were fetched but never reached the agent (a race between
        Faust's recovery and its fetcher: the channel queues are cleared when the flow
        resumes, after the seek), the acks after them cannot commit: the partition stalls.
        ``in_order`` re-reads such a partition at once; should its head still stall for
        ``STALLED_HEAD_RESEEK_S``, the partition is sought back to its committed offset
        (tests/stream/test_exactly_once.py).
        """
        if tp not in self.assignment():
            # Acks of messages handled after their partition was revoked: Faust keeps them (and
            # never commits them), and they read as a head that never arrives. Its new owner,
            # maybe this worker again, starts from the committed offset with a fresh list.
            self._acked.pop(tp, None)
            self._acked_index.pop(tp, None)
            self._stalled_since.pop(tp, None)
            return None
        acked, committed = self._acked.get(tp), self._committed_offset.get(tp)
        head = min(acked or [committed or 0])
        head_missing = (not self.in_transaction and committed is not None and head > committed
                        and not self._skipped_by_broker(tp, committed, head))
        offset = None if head_missing else super()._new_offset(tp)
        if offset is not None or not acked:
            self._stalled_since.pop(tp, None)
            return offset
        since = self._stalled_since.setdefault(tp, time.monotonic())
        if time.monotonic() - since >= STALLED_HEAD_RESEEK_S:
            committed = self._committed_offset.get(tp)
            self._stalled_since.pop(tp, None)
            if committed is not None:
                self.reseeks += 1
                log.warning("%s: acked up from %d but offset %d never delivered for %.0f s; seeking back to it",
                            tp, min(self._acked[tp]), committed, STALLED_HEAD_RESEEK_S)
                asyncio.ensure_future(self._reseek(tp, committed))
        return None

    async def _refetch(self, tp: Any, offset: int) -> None:
        """Seek ``tp`` back to ``offset``, the first offset missing before records held by
        ``in_order``, until that offset reaches the agents (``in_order`` then drops
        ``_refetching``): once a rebalance under way has ended, and again every
        ``REFETCH_AGAIN_S`` (the re-read's records can be lost on the way too), unless a
        seek meanwhile (the recovery's, to the committed offset) made it moot or the
        partition moved away. The held records are not acked, so nothing else would bring
        them back."""
        for attempt in range(REFETCH_ATTEMPTS):
            while self.app.rebalancing and not self.should_stop:  # type: ignore[attr-defined]
                await asyncio.sleep(REFETCH_RETRY_S)
            if self.should_stop or self._refetching.get(tp) != offset or tp not in self.assignment():
                return
            try:
                await self.seek(tp, offset)
            except Exception as exc:  # reassigned between the check and the seek, or the broker away
                log.warning("%s: re-reading from %d failed (%s, attempt %d)", tp, offset, exc, attempt + 1)
            await asyncio.sleep(REFETCH_AGAIN_S)
            if self._refetching.get(tp) == offset:
                log.warning("%s: offset %d still missing %.0f s after re-reading from it; again", tp, offset,
                            REFETCH_AGAIN_S)
        log.error("%s: offset %d never reached the agents after %d re-reads; the partition waits", tp, offset,
                  REFETCH_ATTEMPTS)

    async def _reseek(self, tp: Any, offset: int) -> None:
        """Seek ``tp`` back unless it moved away meanwhile: a partition revoked during a
        rebalance has no position to seek (aiokafka raises IllegalStateError, which went
        unretrieved in a task), and its new owner starts from the committed offset anyway."""
        if self.app.rebalancing or tp not in self.assignment():  # type: ignore[attr-defined]
            log.info("%s: not sought back to %d, it is being reassigned", tp, offset)
            return
        try:
            await self.seek(tp, offset)
        except Exception as exc:  # reassigned between the check and the seek: the same case
            log.warning("%s: seeking back to %d failed (%s); the next stall check tries again", tp, offset, exc)

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _TunedConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def force_commit(self, topics: Any = None, start_new_transaction: bool = True) -> bool:
        if not self.in_transaction:
            return await super().force_commit(topics, start_new_transaction=start_new_transaction)
        # exactly_once: a transaction must hold each batch whole or not at all (a batch's
        # outputs with its offsets), so no batch runs while the commit chooses offsets and
        # commits (app.commit_gate, taken by each batch from its first effect to its ack).
        async with self.app.commit_gate:  # type: ignore[attr-defined]  # StreamrecApp
            return await super().force_commit(topics, start_new_transaction=start_new_transaction)

    async def _commit_offsets(self, offsets: Any, start_new_transaction: bool = True) -> bool:
        # The offsets are chosen: write what their events changed (write-behind state, feature
        # rows) before committing them. Flushing before choosing them (as force_commit would)
        # let events acked meanwhile commit ahead of their state.
        await self.app.before_commit()  # type: ignore[attr-defined]  # StreamrecApp
        if self.in_transaction:
            # Faust flushes its producer before a plain offset commit, not before committing a
            # transaction: sends still in flight would land in the next transaction.
            await self.app.producer.flush()
        return bool(await super()._commit_offsets(offsets, start_new_transaction=start_new_transaction))


class TunedTransport(faust_aiokafka.Transport):
    """Drop-in aiokafka transport whose worker consumer uses ``app.fetch_max_wait_ms``."""

    Consumer = _TunedConsumer


# -- the producer's linger ends with a batch ---------------------------------------------
# An agent's batch is the worker's unit of batching: its outputs (lists, item messages,
# changelog states) are made together, and the producer's linger only delayed them (the
# broker hop of a list: p50 ~3.7 ms at a 2 ms linger against 0.7 ms at none, README's
# broker row). Without a linger, though, what a batch sends before its first await (item
# messages) leaves alone and starts the item agent's work while the batch still ranks.
# So the worker keeps its linger and ends it when a batch is done (``send_lingering``).
# aiokafka 0.14 has no call for that: its ``flush()`` waits the linger out, where the Java
# producer's flush makes every buffered record sendable at once. ``flush_now`` is the
# Java one.


def kafka_producer(app: Any) -> aiokafka.AIOKafkaProducer | None:
    """The aiokafka producer under the Faust app's (None until it has started)."""
    return cast("aiokafka.AIOKafkaProducer | None", getattr(app.producer, "_producer", None))


def send_lingering(producer: aiokafka.AIOKafkaProducer | None) -> int:
    """Make every record ``producer`` holds for its linger sendable now and wake its sender
    (aiokafka's own ``flush_for_commit`` does the same, then waits); returns how many
    batches were closed. Does not wait for delivery; ``None`` (not started): 0."""
    if producer is None:
        return 0
    accumulator = producer._message_accumulator
    closed = 0
    for batches in accumulator._batches.values():
        for batch in batches:
            if not batch._builder.closed():
                batch._builder.close()  # full for the sender: drained without its linger
                closed += 1
    if closed and not accumulator._waiter_future.done():
        accumulator._waiter_future.set_result(None)  # the sender waits on it between drains
    return closed


async def flush_now(producer: aiokafka.AIOKafkaProducer | None) -> None:
    """Deliver every record sent so far without waiting out the linger (the Java producer's
    ``flush``)."""
    if producer is None:
        return
    send_lingering(producer)
    await producer.flush()


# -- exactly_once: outputs in the transaction of the input that caused them ----------------
# Faust (0.15) runs one transactional producer per input partition number and commits each
# partition's offsets in its own transaction, but it picks the producer for an output by the
# output's partition, and sends to topics the worker does not consume (recommendations, the
# DLQ) outside any transaction. Both break exactly-once: an item message for an event of
# clickstream partition 1 sent in partition 3's transaction survives a crash that aborts
# partition 1's, and a recommendation sent outside a transaction is seen again when its event
# is reprocessed. While a batch of one input partition is handled, ``transaction_of`` names
# that partition, and ``SourceRoutedSink`` sends in its transaction.
_source: contextvars.ContextVar[tuple[str, int] | None] = contextvars.ContextVar("streamrec_source", default=None)


@contextlib.contextmanager
def transaction_of(topic: str, partition: int) -> Iterator[None]:
    """Within this block, ``SourceRoutedSink`` sends belong to the transaction of topic/partition."""
    token = _source.set((topic, partition))
    try:
        yield
    finally:
        _source.reset(token)


class SourceRoutedSink:
    """A Faust topic whose sends go in the transaction of the input partition being handled
    (``transaction_of``); a plain ``topic.send`` outside one or without exactly_once."""

    def __init__(self, app: Any, topic: Any) -> None:
        self.app, self.topic = app, topic

    async def send(self, *, key: bytes | None = None, value: bytes | None = None, partition: int | None = None,
                   headers: Sequence[tuple[str, bytes]] | None = None) -> Any:
        source = _source.get()
        if source is None or not self.app.in_transaction:
            return await self.topic.send(key=key, value=value, partition=partition, headers=headers)
        topic, source_partition = source
        transactional_id = f"{self.app.conf.id}-{self.app.assignor.group_for_topic(topic)}-{source_partition}"
        return await self.app.producer.send(self.topic.get_topic_name(), key, value, partition, None, headers,
                                            transactional_id=transactional_id)
