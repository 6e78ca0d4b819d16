"""Pure feature formulas: running mean, exponential decay, smoothed ratios.

No I/O, no clocks: every function is a value in, value out, so the property tests
compare each against a direct recomputation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class RunningMean:
    """Count, mean and sum of squared deviations, updated one value at a time.

    Welford's update keeps the mean numerically stable (no large running sum);
    :meth:`merge` is Chan's parallel formula, so the result does not depend on
    how a sequence was split into batches (up to float rounding).
    """

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, value: float) -> None:
        self.count += 1
        delta = value - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (value - self.mean)

    def merge(self, other: RunningMean) -> RunningMean:
        """A new accumulator holding both sequences; neither input changes."""
        total = self.count + other.count
        if total == 0:
            return RunningMean()
        delta = other.mean - self.mean
        mean = self.mean + delta * other.count / total
        m2 = self.m2 + other.m2 + delta * delta * self.count * other.count / total
        return RunningMean(total, mean, m2)

    @property
    def variance(self) -> float:
        """Population variance; 0.0 for fewer than two values."""
        return self.m2 / self.count if self.count > 1 else 0.0

    def to_list(self) -> list[float]:
        return [self.count, self.mean, self.m2]

    @classmethod
    def from_list(cls, data: list[float]) -> RunningMean:
        return cls(int(data[0]), float(data[1]), float(data[2]))


def decay_factor(elapsed_ms: float, half_life_ms: float) -> float:
    """``2 ** (-elapsed / half_life)``: the weight left after ``elapsed_ms``."""
    return math.pow(2.0, -elapsed_ms / half_life_ms)


@dataclass
class DecayedSum:
    """Σ wᵢ · 2^(-(ref - tᵢ)/h), kept as of ``ref_ms`` = the newest tᵢ seen.

    Adding in any order gives the same value (up to rounding), so out-of-order
    events are exact. ``value_at(t)`` decays it forward to a later time.
    """

    value: float = 0.0
    ref_ms: int = 0

    def add(self, weight: float, ts_ms: int, half_life_ms: float) -> None:
        if self.value == 0.0 and self.ref_ms == 0:
            self.value, self.ref_ms = weight, ts_ms
        elif ts_ms >= self.ref_ms:
            self.value = self.value * decay_factor(ts_ms - self.ref_ms, half_life_ms) + weight
            self.ref_ms = ts_ms
        else:
            self.value += weight * decay_factor(self.ref_ms - ts_ms, half_life_ms)

    def value_at(self, ts_ms: int, half_life_ms: float) -> float:
        return self.value * decay_factor(ts_ms - self.ref_ms, half_life_ms)


def decayed_rank_score(value: float, ref_ms: int, half_life_ms: float) -> float:
    """A time-invariant sort key: log2(value) + ref/h.

    For two decayed sums A, B decayed to any common time t, A(t) > B(t) exactly
    when this score of A exceeds B's, so a sorted set never needs rescoring.
    """
    if value <= 0.0:
        return -math.inf
    return math.log2(value) + ref_ms / half_life_ms


def smoothed_ratio(numerator: float, denominator: float, prior: float, prior_weight: float) -> float:
    """(num + prior·w) / (den + w): a ratio shrunk towards ``prior`` when ``den`` is small.

    With ``prior_weight == 0`` and no views it returns ``prior`` instead of 0/0.
    """
    total = denominator + prior_weight
    if total <= 0.0:
        return prior
    return (numerator + prior * prior_weight) / total
