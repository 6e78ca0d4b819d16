"""Routing a user's records to the user's partition (features/routing.py): the partition
function, the header, the mark that catches a second copy, and the processor's part.
The broker-level test with three clients is tests/stream/test_partition_routing.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from streamrec.features.config import FeatureConfig
from streamrec.features.messages import ClickEvent, EventType
from streamrec.features.routing import ROUTED_FROM, routed_from, routed_header, user_partition
from streamrec.features.user_state import Skipped, UserState, UserUpdate, apply_user_event
from streamrec.stream.clients import Clients
from streamrec.stream.processor import EventProcessor
from streamrec.stream.settings import load_settings
from tests.stream.test_processor_accounting import T0, FakeTable, RecordingSink, RecordingWriter

CFG = FeatureConfig()


@given(st.text(min_size=1, max_size=64), st.integers(1, 64))
def test_the_users_partition_is_aiokafkas_default_for_the_key(user: str, partitions: int) -> None:
    assert user_partition(user, partitions) == DefaultPartitioner()(user.encode(), list(range(partitions)), [])


def test_the_header_names_the_original_and_reads_back_from_either_form() -> None:
    header = routed_header(3, 12345)
    assert routed_from(header) == (3, 12345)
    assert routed_from(dict(header)) == (3, 12345)  # a Faust event's headers
    assert routed_from(None) is None and routed_from([]) is None and routed_from([("other", b"1:2")]) is None


def test_a_header_that_does_not_read_as_two_offsets_is_no_header() -> None:
    for value in (b"", b"1", b"a:b", b"-1:2", b"1:2:3", b"\xff"):
        assert routed_from([(ROUTED_FROM, value)]) is None


def _event(n: int) -> ClickEvent:
    return ClickEvent(event_id=f"e{n}", user_id="u", item_id=f"i{n}", type=EventType.RATING, rating=4.0, ts=T0)


def test_a_second_copy_of_one_original_is_a_duplicate_after_the_id_window_forgot_it() -> None:
    """After a crash the router sends a copy again, with a new offset on the user's partition."""
    cfg = CFG.model_copy(update={"dedup_max_ids": 1})
    state = UserState()
    first = apply_user_event(state, _event(0), cfg, source=(1, 10), origin=(0, 500))
    other = apply_user_event(state, _event(1), cfg, source=(1, 11))  # pushes e0 out of the id window
    again = apply_user_event(state, _event(0), cfg, source=(1, 12), origin=(0, 500))
    later = apply_user_event(state, _event(2), cfg, source=(1, 13), origin=(0, 501))
    assert isinstance(first, UserUpdate) and isinstance(other, UserUpdate) and isinstance(later, UserUpdate)
    assert again == Skipped("duplicate")
    assert state.features()["n_rating"] == 3
    assert state.applied == {"1": 13, "routed:0": 501}


@dataclass
class Record:
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)


class RoutingRecorder(RecordingSink):
    async def send(self, *, key: bytes | None = None, value: bytes | None = None, partition: int | None = None,
                   headers: Any = None) -> None:
        self.sent.append({"key": key, "value": value, "partition": partition, "headers": headers})


async def test_the_processor_copies_a_stray_record_home_and_applies_the_copy_once() -> None:
    settings = load_settings(recommend={"trigger_types": []}, broker={"partitions": 4})
    reroute, writer = RoutingRecorder(), RecordingWriter()
    processor = EventProcessor(settings, users=FakeTable(), shards=FakeTable(), items=FakeTable(), dlq=RecordingSink(),
                               by_item=RecordingSink(), recommendations=RecordingSink(), reroute=reroute,
                               clients=Clients(writer=writer))
    event = _event(0)
    home = user_partition("u", 4)
    stray = (home + 1) % 4
    await processor.on_clickstream([(Record(b"u", event.to_bytes()), stray, 7)])
    [sent] = reroute.sent
    assert (sent["key"], sent["value"], sent["partition"], routed_from(sent["headers"])) == (b"u", event.to_bytes(), home, (stray, 7))
    assert writer.rows == []  # not applied where it landed
    copy = Record(sent["key"], sent["value"], sent["headers"])
    await processor.on_clickstream([(copy, home, 40), (copy, home, 41)])  # the copy, and a second one
    counts = processor.metrics.total_counts
    assert (counts["events_in"], counts["routed"], counts["events_valid"], counts["skipped_duplicate"]) == (3, 1, 1, 1)
    assert len(reroute.sent) == 1
    assert processor.users.get("u").applied == {str(home): 40, f"routed:{stray}": 7}
