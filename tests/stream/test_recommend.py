from __future__ import annotations

from datetime import datetime, timezone

from hypothesis import given
from hypothesis import strategies as st

from streamrec.features.messages import ClickEvent, EventType
from streamrec.features.user_state import UserState
from streamrec.stream.recommend import RecommendRequest, coalesce

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def request(user: str, n: int) -> RecommendRequest:
    return RecommendRequest(user, UserState(), ClickEvent(event_id=f"{user}-{n}", user_id=user, item_id="i", type=EventType.CLICK, ts=T0))


@given(st.lists(st.sampled_from("abc"), max_size=30))
def test_coalesce_keeps_each_users_last_request_covering_the_earlier_ones(users: list[str]) -> None:
    requests = [request(u, n) for n, u in enumerate(users)]
    out = coalesce(requests)
    last = {r.user_id: r for r in requests}
    assert [r.user_id for r in out] == sorted(last, key=lambda u: requests.index(last[u]))
    for r in out:
        assert r.cause is last[r.user_id].cause
        assert list(r.covers) == [q.cause.event_id for q in requests if q.user_id == r.user_id][:-1]


def test_superseding_chains_what_the_earlier_request_covered() -> None:
    first, second, third = request("u", 1), request("u", 2), request("u", 3)
    assert third.superseding(second.superseding(first)).covers == ("u-1", "u-2")
