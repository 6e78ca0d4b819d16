"""Offline side: the event log and feature history as parquet, and training sets.

The feature history lands where the Feast repo's file sources point
(``repo.offline_path``), so Feast's offline store, and with it
``get_historical_features``, serves it. Feast is imported inside functions only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from streamrec.features.config import FeatureConfig
from streamrec.features.history import HistoryStats, feature_history
from streamrec.features.messages import ClickEvent, EventType, parse_record
from streamrec.features.repo import feature_refs, feature_store, offline_path
from streamrec.features.routing import routed_from
from streamrec.features.schema import ITEM_KEY, TIMESTAMP_COLUMN, USER_KEY, VIEWS, FeatureRow

EVENT_COLUMNS = ("event_id", "user_id", "item_id", "type", "rating", "query", TIMESTAMP_COLUMN)


def event_frame(events: Iterable[ClickEvent]) -> pd.DataFrame:
    """The event log, one row per event, ``event_timestamp`` as UTC datetimes."""
    rows = [(e.event_id, e.user_id, e.item_id, e.type.value, e.rating, e.query, e.ts) for e in events]
    frame = pd.DataFrame(rows, columns=list(EVENT_COLUMNS))
    frame[TIMESTAMP_COLUMN] = pd.to_datetime(frame[TIMESTAMP_COLUMN], utc=True)
    return frame


def history_frames(rows: Iterable[FeatureRow]) -> dict[str, pd.DataFrame]:
    """Feature rows grouped into one frame per view (join key, features, timestamp).

    Of several rows of one entity at the same event time only the last is kept: it
    holds every event of that instant, and a point-in-time join needs one row there.
    """
    grouped: dict[str, list[dict[str, Any]]] = {view: [] for view in VIEWS}
    for row in rows:
        spec = VIEWS[row.view]
        grouped[row.view].append({spec.join_key: row.entity_id, **row.values, TIMESTAMP_COLUMN: row.event_ts_ms})
    frames = {}
    for view, records in grouped.items():
        spec = VIEWS[view]
        frame = pd.DataFrame(records, columns=[spec.join_key, *spec.feature_names, TIMESTAMP_COLUMN])
        frame = frame.drop_duplicates([spec.join_key, TIMESTAMP_COLUMN], keep="last").reset_index(drop=True)
        frame[TIMESTAMP_COLUMN] = pd.to_datetime(frame[TIMESTAMP_COLUMN], unit="ms", utc=True)
        frames[view] = frame
    return frames


def export(
    events: Sequence[ClickEvent], cfg: FeatureConfig, data_dir: Path, out_dir: Path, *, progress: bool = True
) -> dict[str, Any]:
    """Write ``out_dir/events.parquet`` and every view's history to its offline path.

    ``events`` must be in event-time order (as the agents would see them).
    Returns a summary: paths, row counts, skipped events, seconds.
    """
    began = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    events_path = out_dir / "events.parquet"
    event_frame(events).to_parquet(events_path, index=False)
    stats = HistoryStats()
    bar = tqdm(events, desc="feature history", unit="ev", disable=not progress)
    frames = history_frames(feature_history(bar, cfg, stats))
    paths = {}
    for view, frame in frames.items():
        path = offline_path(Path(data_dir), view)
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path, index=False)
        paths[view] = {"path": str(path), "rows": len(frame)}
    return {
        "events": {"path": str(events_path), "rows": len(events)},
        "views": paths,
        "skipped": stats.skipped,
        "seconds": round(time.perf_counter() - began, 2),
    }


def training_set(
    repo_path: Path, labels: pd.DataFrame, features: Sequence[str] | None = None, *, lookback_ms: int = 1
) -> pd.DataFrame:
    """Point-in-time-correct features for labelled (user, item, time) rows via Feast.

    Feature columns are named ``<view>__<feature>`` (Feast's full names).

    ``labels`` has ``user_id``, ``item_id``, ``event_timestamp`` and any label
    columns. Feature rows are joined as of ``event_timestamp - lookback_ms``: a row
    written at the labelled event's own time already contains that event (its
    rating), so joining at the same instant would leak the label.
    """
    refs = list(features) if features else feature_refs("user_features") + feature_refs("item_features")
    frame = labels.copy()
    frame[TIMESTAMP_COLUMN] = pd.to_datetime(frame[TIMESTAMP_COLUMN], utc=True) - pd.Timedelta(milliseconds=lookback_ms)
    store = feature_store(repo_path)
    by_view: dict[str, list[str]] = {}
    for ref in refs:
        by_view.setdefault(ref.split(":", 1)[0], []).append(ref)
    for view, view_refs in by_view.items():
        # One call per view, once per distinct (key, time): Feast collapses equal entity
        # rows, and drops an entity row outright when another view has no row for it yet.
        keys = [VIEWS[view].join_key, TIMESTAMP_COLUMN]
        entity_df = frame[keys].drop_duplicates().reset_index(drop=True)
        found = store.get_historical_features(entity_df=entity_df, features=view_refs, full_feature_names=True).to_df()
        found[TIMESTAMP_COLUMN] = pd.to_datetime(found[TIMESTAMP_COLUMN], utc=True).astype(frame[TIMESTAMP_COLUMN].dtype)
        frame = frame.merge(found, on=keys, how="left", validate="many_to_one")
    frame[TIMESTAMP_COLUMN] = frame[TIMESTAMP_COLUMN] + pd.Timedelta(milliseconds=lookback_ms)
    return frame


def rating_labels(events: Iterable[ClickEvent]) -> pd.DataFrame:
    """One labelled row per rating event: event id, user, item, time and the rating."""
    rows = [(e.event_id, e.user_id, e.item_id, e.ts, e.rating) for e in events if e.type is EventType.RATING]
    frame = pd.DataFrame(rows, columns=["event_id", USER_KEY, ITEM_KEY, TIMESTAMP_COLUMN, "rating"])
    frame[TIMESTAMP_COLUMN] = pd.to_datetime(frame[TIMESTAMP_COLUMN], utc=True)
    return frame


async def read_topic(consumer: Any, *, idle_s: float = 2.0) -> list[Any]:
    """Every record a started consumer reads until no message arrives for ``idle_s``,
    in the order received (offset order within a partition).

    It stops on an idle timeout rather than at the end offsets, so it also ends on a
    topic that is still being written to.
    """
    records: list[Any] = []
    last = time.monotonic()
    while time.monotonic() - last < idle_s:
        batches = await consumer.getmany(timeout_ms=200)
        for batch in batches.values():
            last = time.monotonic()
            records.extend(batch)
        await asyncio.sleep(0)
    return records


async def read_to_end(consumer: Any, *, timeout_s: float = 120.0) -> list[Any]:
    """Every record up to the end offsets its partitions had when the read began (under
    ``read_committed``, the last stable offsets), in offset order within a partition.

    Unlike :func:`read_topic` it ends on a topic that never falls quiet: the lists of a
    worker under load arrive every few milliseconds, and an idle-timeout read of them never
    returned. Records written meanwhile may be included. TimeoutError after ``timeout_s``.
    """
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    ends: dict[Any, int] | None = None
    while True:
        for batch in (await consumer.getmany(timeout_ms=200)).values():
            records.extend(batch)
        if ends is None and consumer.assignment():
            ends = await consumer.end_offsets(list(consumer.assignment()))
        if ends is not None and all([await consumer.position(tp) >= end for tp, end in ends.items()]):
            return records
        if time.monotonic() > deadline:
            raise TimeoutError(f"not at the end offsets {ends} within {timeout_s:.0f} s")


async def dump_topic(consumer: Any, *, idle_s: float = 2.0, max_bytes: int = 65536) -> list[ClickEvent]:
    """The valid events of :func:`read_topic`, in event-time order, valid as the worker
    reads them (payload and key), each record once: a copy the worker sent to its user's
    partition (features/routing.py) is its original again."""
    events = []
    for record in await read_topic(consumer, idle_s=idle_s):
        if routed_from(record.headers) is not None:
            continue
        parsed = parse_record(record.key, record.value or b"", max_bytes=max_bytes)
        if isinstance(parsed, ClickEvent):
            events.append(parsed)
    return sorted(events, key=lambda e: e.ts)


__all__ = [
    "dump_topic",
    "event_frame",
    "export",
    "history_frames",
    "rating_labels",
    "read_topic",
    "training_set",
]
