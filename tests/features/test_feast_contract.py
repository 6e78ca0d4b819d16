"""Contract: the fast client and Feast's own SDK see the same online store.

Every value the fast client writes reads back identically through Feast's
``get_online_features``, and what Feast writes, the fast client reads identically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from streamrec.features.online import RedisFeatureStore
from streamrec.features.repo import feature_refs, feature_store
from streamrec.features.schema import GLOBAL_FEATURES, ITEM_FEATURES, USER_FEATURES, VIEWS, FeatureRow, ViewSpec, from_epoch_ms

pytestmark = pytest.mark.integration

T = 1_700_000_000_123


def _values(spec: ViewSpec, seed: int) -> dict[str, Any]:
    """Every feature of ``spec`` with a distinct, awkward value (negatives, unicode, empty lists)."""
    out: dict[str, Any] = {}
    for n, (name, dtype) in enumerate(spec.features):
        k = seed * 100 + n
        out[name] = {
            "float64": (-1) ** k * (k + 0.1) / 7,
            "int64": (-1) ** k * k * 10**9,
            "string": f"s{k}é",
            "string_list": [f"i{k}", "ünï", ""] if k % 2 else [],
            "float64_list": [k / 3, -0.0, 1e300] if k % 2 else [],
        }[dtype]
    return out


ROWS = [
    FeatureRow(USER_FEATURES.name, "u1", _values(USER_FEATURES, 1), T),
    FeatureRow(USER_FEATURES.name, "user 2/ü", _values(USER_FEATURES, 2), T + 1),
    FeatureRow(ITEM_FEATURES.name, "i1", _values(ITEM_FEATURES, 3), T + 2),
    FeatureRow(ITEM_FEATURES.name, "i2", _values(ITEM_FEATURES, 4), T - 10**6),
    FeatureRow(GLOBAL_FEATURES.name, "p0", _values(GLOBAL_FEATURES, 5), T),
]


@pytest.fixture(scope="module")
def feast(feature_repo: Path) -> Any:
    return feature_store(feature_repo)


def _feast_read(feast: Any, view: str, ids: list[str]) -> list[dict[str, Any]]:
    spec = VIEWS[view]
    response = feast.get_online_features(
        features=feature_refs(view), entity_rows=[{spec.join_key: i} for i in ids]
    ).to_dict()
    return [{name: response[name][n] for name in spec.feature_names} for n in range(len(ids))]


async def test_fast_writes_read_back_identically_through_feast(store: RedisFeatureStore, feast: Any) -> None:
    await store.write_batch(ROWS)
    for row in ROWS:
        assert _feast_read(feast, row.view, [row.entity_id]) == [row.values]


async def test_fast_reads_equal_feast_reads(store: RedisFeatureStore, feast: Any) -> None:
    await store.write_batch(ROWS)
    for view in VIEWS:
        ids = [r.entity_id for r in ROWS if r.view == view] + ["never-written"]
        assert await store.read_batch(view, ids) == _feast_read(feast, view, ids)


async def test_what_feast_writes_the_fast_client_reads(store: RedisFeatureStore, feast: Any) -> None:
    for row in ROWS:
        spec = VIEWS[row.view]
        frame = pd.DataFrame(
            [{spec.join_key: row.entity_id, "event_timestamp": from_epoch_ms(row.event_ts_ms), **row.values}]
        )
        feast.write_to_online_store(row.view, frame)
    for row in ROWS:
        assert await store.read_batch(row.view, [row.entity_id]) == [row.values]
        assert await store.read_row_timestamps(row.view, [row.entity_id]) == [row.event_ts_ms]


async def test_a_subset_of_features_reads_like_feast(store: RedisFeatureStore, feast: Any) -> None:
    await store.write_batch(ROWS)
    names = ["rating_mean", "covisit_items", "n_view"]
    response = feast.get_online_features(
        features=feature_refs(ITEM_FEATURES.name, names), entity_rows=[{"item_id": "i1"}, {"item_id": "i2"}]
    ).to_dict()
    expected = [{n: response[n][k] for n in names} for k in range(2)]
    assert await store.read_batch(ITEM_FEATURES.name, ["i1", "i2"], names) == expected
