from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streamrec.stream.debounce import Debouncer


def test_first_event_goes_through_and_burst_is_held_until_the_window_ends() -> None:
    d: Debouncer[str] = Debouncer(window_s=0.1)
    assert d.offer("u", "e1", now=0.0) == "e1"
    assert d.offer("u", "e2", now=0.01) is None
    assert d.offer("u", "e3", now=0.02) is None
    assert d.due(now=0.05) == []
    assert d.due(now=0.11) == ["e3"]
    assert d.held == 0


def test_users_are_independent() -> None:
    d: Debouncer[str] = Debouncer(window_s=1.0)
    assert d.offer("a", "a1", 0.0) == "a1"
    assert d.offer("b", "b1", 0.1) == "b1"


def test_zero_window_never_holds() -> None:
    d: Debouncer[int] = Debouncer(window_s=0.0)
    assert [d.offer("u", n, 0.0) for n in range(3)] == [0, 1, 2]


@given(st.lists(st.tuples(st.sampled_from("abc"), st.floats(0, 0.05)), min_size=1, max_size=60))
def test_the_last_event_of_every_user_is_always_ranked(steps: list[tuple[str, float]]) -> None:
    d: Debouncer[int] = Debouncer(window_s=0.1)
    now, ranked, last = 0.0, [], {}
    for n, (user, gap) in enumerate(steps):
        now += gap
        last[user] = n
        got = d.offer(user, n, now)
        if got is not None:
            ranked.append(got)
        ranked.extend(d.due(now))
    ranked.extend(d.due(now + 1.0))
    assert set(last.values()) <= set(ranked)
    sent_per_user = {u: [r for r in ranked if steps[r][0] == u] for u in last}
    assert all(v == sorted(v) for v in sent_per_user.values())


def test_memory_stays_bounded_with_many_users() -> None:
    off: Debouncer[int] = Debouncer(window_s=0.0)
    for n in range(20_000):
        off.offer(f"u{n}", n, float(n))
    assert off.remembered == 0
    on: Debouncer[int] = Debouncer(window_s=0.1)
    for n in range(20_000):
        assert on.offer(f"u{n}", n, n * 0.001) == n  # a new user each time: sent at once
        on.due(n * 0.001)
    assert on.remembered <= 1024 + 200  # only users inside their window (100 of them) plus the slack
    assert on.offer("u19999", -1, 19.999 + 0.05) is None  # a remembered user is still debounced
