"""The fuzzed payloads get the verdict their category says, from the schema alone
(no broker): the broker test (tests/stream/test_bad_input.py) then holds the worker to
these verdicts. Also the bad inputs that once raised out of ``parse_event`` (a worker
crash): timestamps past what ``datetime`` holds."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamrec.features.messages import ClickEvent, Rejection, parse_event, parse_record
from tests.stream.fuzz_payloads import COUNTS, EXPECTED, Fuzzer, all_payloads, any_records

BASE_TS = 1_764_460_800.0  # 2025-11-30T00:00:00Z


@pytest.fixture(scope="module")
def payloads() -> list:  # type: ignore[type-arg]
    return all_payloads(run="t", base_ts=BASE_TS, partitions=2)


@pytest.mark.slow
def test_every_payload_gets_a_verdict_its_category_allows(payloads: list) -> None:  # type: ignore[type-arg]
    wrong = [(p.category, p.verdict(), p.key, p.value[:120]) for p in payloads if p.verdict() not in EXPECTED[p.category]]
    assert wrong == []
    assert Counter(p.category for p in payloads) == Counter({c: n for c, n in COUNTS.items() if n})
    assert len(payloads) >= 10_000


@pytest.mark.slow
def test_the_fuzz_is_mostly_bad_and_covers_every_reason(payloads: list) -> None:  # type: ignore[type-arg]
    verdicts = Counter(p.verdict() for p in payloads)
    assert set(verdicts) == {"applied", "payload_too_large", "invalid_encoding", "invalid_json", "not_an_object",
                             "missing_field", "unknown_field", "invalid_field", "inconsistent_fields",
                             "missing_key", "key_mismatch"}
    assert verdicts["applied"] < len(payloads) / 2


def test_wrong_partition_payloads_are_good_events_for_another_partition() -> None:
    fuzzer = Fuzzer([{"user_id": "7", "item_id": "9", "type": "rating", "rating": 4.0}], run="t", base_ts=BASE_TS,
                    partitions=4)
    from streamrec.features.routing import user_partition

    for _ in range(20):
        p = fuzzer.wrong_partition()
        assert p.verdict() == "applied" and p.partition is not None and p.partition != user_partition("7", 4)


@pytest.mark.parametrize("ts", [1e20, -1e20, float("inf"), float("nan"), 2**63, 253402300800,
                                "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-14:00"])
def test_times_out_of_datetime_range_are_refused_not_raised(ts: object) -> None:
    payload = json.dumps({"event_id": "e", "user_id": "u", "item_id": "i", "type": "view", "ts": ts}).encode()
    parsed = parse_event(payload, max_bytes=4096)
    assert isinstance(parsed, Rejection) and (parsed.reason, parsed.field) == ("invalid_field", "ts")


@pytest.mark.parametrize("rating", [True, False])
def test_a_boolean_is_not_a_rating(rating: bool) -> None:
    payload = json.dumps({"event_id": "e", "user_id": "u", "item_id": "i", "type": "rating", "rating": rating,
                          "ts": 1}).encode()
    parsed = parse_event(payload, max_bytes=4096)
    assert isinstance(parsed, Rejection) and (parsed.reason, parsed.field) == ("invalid_field", "rating")


@pytest.mark.parametrize(("key", "reason"), [(None, "missing_key"), (b"", "key_mismatch"), (b"u2", "key_mismatch"),
                                             (b"\xff", "key_mismatch")])
def test_a_valid_event_must_be_keyed_by_its_user(key: bytes | None, reason: str) -> None:
    payload = json.dumps({"event_id": "e", "user_id": "u1", "item_id": "i", "type": "view", "ts": 1}).encode()
    parsed = parse_record(key, payload, max_bytes=4096)
    assert isinstance(parsed, Rejection) and (parsed.reason, parsed.field) == (reason, "key")
    assert isinstance(parse_record(b"u1", payload, max_bytes=4096), ClickEvent)


@given(any_records(time.time()))
def test_parse_record_never_raises(record: tuple[bytes | None, object]) -> None:
    key, data = record
    assert isinstance(parse_record(key, json.dumps(data).encode(), max_bytes=4096), (ClickEvent, Rejection))
