from __future__ import annotations

import json
from datetime import timezone

import pytest

from streamrec.features.messages import ClickEvent, DeadLetter, EventType, Rejection, parse_event

GOOD = {"event_id": "e1", "user_id": 7, "item_id": "i9", "type": "rating", "rating": 4.5, "ts": 1_700_000_000}


def parse(data: object, **kwargs: object) -> ClickEvent | Rejection:
    payload = data if isinstance(data, bytes) else json.dumps(data).encode()
    return parse_event(payload, max_bytes=4096, **kwargs)  # type: ignore[arg-type]


def test_valid_event_normalises_ids_and_time() -> None:
    event = parse(GOOD)
    assert isinstance(event, ClickEvent)
    assert event.user_id == "7"
    assert event.type is EventType.RATING
    assert event.ts.tzinfo is timezone.utc and event.ts.year == 2023


def test_round_trip_through_bytes() -> None:
    event = parse(GOOD)
    assert isinstance(event, ClickEvent)
    assert parse(event.to_bytes()) == event


@pytest.mark.parametrize(
    ("payload", "reason", "field"),
    [
        (b"\xff\xfe", "invalid_encoding", None),
        (b"{not json", "invalid_json", None),
        (b"[1, 2]", "not_an_object", None),
        ({k: v for k, v in GOOD.items() if k != "event_id"}, "missing_field", "event_id"),
        ({**GOOD, "color": "red"}, "unknown_field", "color"),
        ({**GOOD, "rating": 9}, "invalid_field", "rating"),
        ({**GOOD, "type": "teleport"}, "invalid_field", "type"),
        ({**GOOD, "user_id": ""}, "invalid_field", "user_id"),
        ({**GOOD, "ts": "yesterday"}, "invalid_field", "ts"),
        ({**GOOD, "type": "click"}, "inconsistent_fields", None),
        ({**GOOD, "type": "search", "rating": None}, "inconsistent_fields", None),
    ],
)
def test_each_kind_of_bad_input_has_its_reason(payload: object, reason: str, field: str | None) -> None:
    result = parse(payload)
    assert isinstance(result, Rejection)
    assert (result.reason, result.field) == (reason, field)


def test_payload_over_the_limit_is_refused_before_parsing() -> None:
    result = parse_event(b"x" * 5000, max_bytes=4096)
    assert isinstance(result, Rejection) and result.reason == "payload_too_large"


def test_unknown_fields_can_be_allowed_by_setting() -> None:
    assert isinstance(parse({**GOOD, "color": "red"}, allow_unknown_fields=True), ClickEvent)


def test_search_event_needs_query_but_no_item() -> None:
    search = {"event_id": "s", "user_id": "u", "type": "search", "query": "red shoes", "ts": 1}
    assert isinstance(parse(search), ClickEvent)


@pytest.mark.parametrize("payload", [b"\xff\x00binary", b'{"event_id": 1}'])
def test_dead_letter_keeps_the_exact_payload(payload: bytes) -> None:
    rejection = parse_event(payload, max_bytes=4096)
    assert isinstance(rejection, Rejection)
    letter = DeadLetter.build(payload, rejection, source_topic="clickstream", partition=0, offset=3)
    again = DeadLetter.model_validate_json(letter.model_dump_json())
    assert again.raw_payload() == payload
    assert again.reason == rejection.reason
