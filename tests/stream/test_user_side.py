"""The user side on fakes: events applied to users and shards, rows queued (users', then
shards'), item messages and requests to rank handed on; late events to the DLQ."""

from __future__ import annotations

from datetime import timedelta

from streamrec.features.global_state import GlobalShard
from streamrec.features.messages import ClickEvent, DeadLetter, EventType
from streamrec.features.schema import GLOBAL_VIEW, USER_VIEW
from streamrec.features.user_state import UserState
from streamrec.stream.ingest import Admitted, DeadLetters
from streamrec.stream.metrics import WorkerMetrics
from streamrec.stream.settings import load_settings
from streamrec.stream.state_table import StateTable
from streamrec.stream.user_side import UserSide, user_version
from tests.stream.test_processor_accounting import T0, FakeTable, Message, RecordingSink, RecordingWriter, _event


def _user_side(triggers: frozenset[str] = frozenset()) -> tuple[UserSide, RecordingWriter, RecordingSink, WorkerMetrics]:
    cfg = load_settings(features={"allowed_lateness_s": 60}).features
    writer, dlq, metrics = RecordingWriter(), RecordingSink(), WorkerMetrics("w")
    users = StateTable(FakeTable(), UserState.from_dict, UserState.to_dict, UserState)
    shards = StateTable(FakeTable(), GlobalShard.from_dict, GlobalShard.to_dict, GlobalShard)
    side = UserSide(users, shards, writer, cfg, DeadLetters(dlq, "clickstream", metrics), metrics, triggers=triggers)
    return side, writer, dlq, metrics


def _admitted(events: list[ClickEvent], partition: int = 0) -> list[Admitted]:
    return [Admitted(Message(e.user_id.encode(), e.to_bytes()), e, partition, n) for n, e in enumerate(events)]


async def test_applied_events_queue_the_users_rows_then_the_shards_and_hand_on_item_messages() -> None:
    side, writer, _, _ = _user_side()
    events = [_event(0, T0), _event(1, T0).model_copy(update={"user_id": "u2"})]
    applied = await side.apply(_admitted(events))
    assert [(r.view, r.entity_id) for r in writer.rows] == [(USER_VIEW, "u1"), (USER_VIEW, "u2"), (GLOBAL_VIEW, "p0")]
    assert [m.item_id for m in applied.item_messages] == ["i0", "i1"]
    assert applied.events == 2 and applied.to_rank == []
    assert applied.versions == {"u1": 1, "u2": 1} == {u: user_version(side.users.get(u)) for u in ("u1", "u2")}
    assert side.users.pending == 2 and side.shards.pending == 1


async def test_a_triggering_event_is_a_request_to_rank_with_its_users_state() -> None:
    side, _, _, _ = _user_side(triggers=frozenset({"click"}))
    click = ClickEvent(event_id="c", user_id="u1", item_id="i9", type=EventType.CLICK, ts=T0)
    applied = await side.apply(_admitted([_event(0, T0), click]))
    [request] = applied.to_rank
    assert (request.user_id, request.cause, request.state) == ("u1", click, side.users.get("u1"))


async def test_a_late_event_goes_to_the_dlq_and_a_duplicate_changes_nothing() -> None:
    side, writer, dlq, metrics = _user_side()
    events = [_event(0, T0), _event(1, T0 - timedelta(minutes=5))]
    applied = await side.apply(_admitted(events))
    assert applied.events == 1 and [DeadLetter.model_validate_json(s["value"]).reason for s in dlq.sent] == ["late"]
    rows = len(writer.rows)
    again = await side.apply(_admitted(events[:1]))  # the same record, redelivered
    assert (again.events, again.versions, again.item_messages) == (0, {}, [])
    assert [r.view for r in writer.rows[rows:]] == [GLOBAL_VIEW]  # the pending shard's row only
    assert (metrics.total_counts["skipped_late"], metrics.total_counts["skipped_duplicate"]) == (1, 1)
