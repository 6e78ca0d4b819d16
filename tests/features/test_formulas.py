from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamrec.features.formulas import DecayedSum, RunningMean, decay_factor, decayed_rank_score, smoothed_ratio
from tests.features.feature_strategies import exact_mean

values = st.lists(st.floats(-1e6, 1e6, allow_nan=False), max_size=200)
HALF_LIFE_MS = 3_600_000.0


@given(values)
def test_running_mean_equals_exact_mean(xs: list[float]) -> None:
    acc = RunningMean()
    for x in xs:
        acc.add(x)
    assert acc.count == len(xs)
    assert acc.mean == pytest.approx(exact_mean(xs), rel=1e-9, abs=1e-6)


@given(values, st.lists(st.integers(1, 50), max_size=20))
def test_running_mean_is_insensitive_to_batching(xs: list[float], cuts: list[int]) -> None:
    sequential = RunningMean()
    for x in xs:
        sequential.add(x)
    merged, start = RunningMean(), 0
    for size in [*cuts, len(xs)]:
        batch = RunningMean()
        for x in xs[start : start + size]:
            batch.add(x)
        merged = merged.merge(batch)
        start += size
    assert merged.count == sequential.count
    assert merged.mean == pytest.approx(sequential.mean, rel=1e-9, abs=1e-6)
    assert merged.variance == pytest.approx(sequential.variance, rel=1e-6, abs=1e-3)


def test_running_mean_variance_of_known_values() -> None:
    acc = RunningMean()
    for x in (2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0):
        acc.add(x)
    assert (acc.mean, acc.variance) == (5.0, 4.0)


def test_running_mean_is_stable_far_from_zero() -> None:
    acc = RunningMean()
    for x in (1e9 + 4, 1e9 + 7, 1e9 + 13, 1e9 + 16):
        acc.add(x)
    assert acc.mean == 1e9 + 10
    assert acc.variance == pytest.approx(22.5)


events = st.lists(st.tuples(st.floats(0, 10), st.integers(0, 10 * 3_600_000)), min_size=1, max_size=60)


@given(events, st.randoms())
def test_decayed_sum_equals_direct_sum_in_any_order(pairs: list[tuple[float, int]], rnd) -> None:  # type: ignore[no-untyped-def]
    shuffled = list(pairs)
    rnd.shuffle(shuffled)
    acc = DecayedSum()
    for weight, ts in shuffled:
        acc.add(weight, ts, HALF_LIFE_MS)
    ref = max(ts for _, ts in pairs)
    direct = sum(w * 2 ** (-(ref - ts) / HALF_LIFE_MS) for w, ts in pairs)
    assert acc.ref_ms == ref
    assert acc.value == pytest.approx(direct, rel=1e-9, abs=1e-9)


def test_decay_halves_per_half_life() -> None:
    acc = DecayedSum()
    acc.add(8.0, 0, HALF_LIFE_MS)
    assert acc.value_at(int(3 * HALF_LIFE_MS), HALF_LIFE_MS) == pytest.approx(1.0)
    assert decay_factor(HALF_LIFE_MS, HALF_LIFE_MS) == 0.5


@given(
    st.floats(1e-6, 1e6), st.integers(0, 10**7), st.floats(1e-6, 1e6), st.integers(0, 10**7), st.integers(10**7, 10**8)
)
def test_rank_score_orders_like_decayed_value(va: float, ra: int, vb: float, rb: int, at: int) -> None:
    a_now = va * decay_factor(at - ra, HALF_LIFE_MS)
    b_now = vb * decay_factor(at - rb, HALF_LIFE_MS)
    if not math.isclose(a_now, b_now, rel_tol=1e-9):
        assert (a_now > b_now) == (decayed_rank_score(va, ra, HALF_LIFE_MS) > decayed_rank_score(vb, rb, HALF_LIFE_MS))


@given(st.integers(0, 1000), st.integers(0, 1000), st.floats(0, 1), st.floats(0, 100))
def test_smoothed_ratio_matches_formula(num: int, den: int, prior: float, weight: float) -> None:
    ratio = smoothed_ratio(num, den, prior, weight)
    if den + weight > 0:
        assert ratio == pytest.approx((num + prior * weight) / (den + weight))
    else:
        assert ratio == prior


def test_smoothed_ratio_shrinks_small_counts_to_prior() -> None:
    assert smoothed_ratio(1, 1, 0.1, 10.0) == pytest.approx(2 / 11)
    assert smoothed_ratio(1000, 2000, 0.1, 10.0) == pytest.approx(1001 / 2010)
