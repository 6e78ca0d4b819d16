"""Redis indexes beside Feast's hashes, for the recommend step's candidates.

Feast stores one hash per entity and cannot answer "which items are best" or
"what has this user already interacted with". The fast client maintains, in the
same pipelined round trip as the feature rows it writes:

* ``<project>:idx:item_mean``  sorted set, item id → mean rating, only items with
  at least ``top_min_count`` ratings (ZADD on each item row, ZREM below the count);
* ``<project>:idx:item_popularity``  sorted set, item id → ``decayed_rank_score``
  (log2 popularity + ref/half-life), which orders items by their decayed
  popularity at any common time without ever rescoring;
* ``<project>:seen_recent:<user_id>``  sorted set, item id → event time (ms) of the
  newest row that touched it, trimmed to the newest ``seen_max_items``: what ranking
  leaves out as already seen. Bounded, so a long-lived user costs the same memory and
  the same read per ranking as a new one; an item seen longer ago than that may be
  recommended again. (``ZADD GT`` keeps the newest time, so rewriting old rows changes nothing.)

All three are idempotent under rewriting the same rows.
"""

from __future__ import annotations

from streamrec.features.config import FeatureConfig
from streamrec.features.formulas import decayed_rank_score
from streamrec.features.resp import command
from streamrec.features.schema import ITEM_VIEW, USER_VIEW, FeatureRow, count_feature


class IndexKeys:
    def __init__(self, project: str) -> None:
        self.item_mean = f"{project}:idx:item_mean"
        self.item_popularity = f"{project}:idx:item_popularity"
        self._seen_prefix = f"{project}:seen_recent:"

    def seen(self, user_id: str) -> str:
        return self._seen_prefix + user_id


def index_commands(row: FeatureRow, keys: IndexKeys, cfg: FeatureConfig) -> list[bytes]:
    """The packed Redis commands that keep the indexes in step with ``row``."""
    return [command(*args) for args in index_args(row, keys, cfg)]


def index_args(row: FeatureRow, keys: IndexKeys, cfg: FeatureConfig) -> list[tuple[bytes, ...]]:
    """The same commands as :func:`index_commands`, each as its arguments (name first)."""
    member = row.entity_id.encode()
    if row.view == USER_VIEW and row.touched:
        key = keys.seen(row.entity_id).encode()
        score = b"%d" % row.event_ts_ms
        pairs = [part for item in row.touched for part in (score, item.encode())]
        return [(b"ZADD", key, b"GT", *pairs), (b"ZREMRANGEBYRANK", key, b"0", b"%d" % -(cfg.seen_max_items + 1))]
    if row.view != ITEM_VIEW:
        return []
    values = row.values
    out: list[tuple[bytes, ...]] = []
    if int(values[count_feature("rating")]) >= cfg.top_min_count:  # type: ignore[arg-type]
        out.append((b"ZADD", keys.item_mean.encode(), repr(float(values["rating_mean"])).encode(), member))  # type: ignore[arg-type]
    else:
        out.append((b"ZREM", keys.item_mean.encode(), member))
    rank = decayed_rank_score(float(values["popularity"]), int(values["popularity_ref_ms"]), cfg.half_life_ms)  # type: ignore[arg-type]
    if rank > float("-inf"):
        out.append((b"ZADD", keys.item_popularity.encode(), repr(rank).encode(), member))
    return out
