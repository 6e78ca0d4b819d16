"""What a worker's stages talk to beyond Kafka, built in one place at start-up.

:func:`build_clients` is the only code that constructs the online store, the
micro-batching writer, the list cache, the online-store marker and the recommender;
the stages are handed them (stream/processor.py), and tests hand fakes instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamrec.features.batching import MicroBatchWriter
from streamrec.features.online import RedisFeatureStore
from streamrec.stream.online_refill import Marker
from streamrec.stream.ports import RowWriter
from streamrec.stream.rec_cache import RecommendationCache
from streamrec.stream.recommend import Recommender, TopMeanRecommender
from streamrec.stream.settings import Settings


@dataclass
class Clients:
    """``writer`` queues feature rows; ``marker`` tells a lost Redis (stream/online_refill.py);
    ``cache`` holds the last lists (None: ``recommend.cache_ttl_s`` is 0); ``recommender``
    ranks (None in the ``features`` role); ``store``: closed last."""

    writer: RowWriter
    marker: Marker | None = None
    cache: RecommendationCache | None = None
    recommender: Recommender | None = None
    store: Any = None

    async def close(self) -> None:
        """Flush what the writer holds, then close each client."""
        for client in (self.writer, self.recommender, self.store, self.cache, self.marker):
            if client is not None and hasattr(client, "close"):
                await client.close()


async def build_clients(settings: Settings) -> Clients:
    """The worker's clients for ``settings.worker.role``, the recommender started."""
    cfg, url, reconnect_s = settings.features, settings.redis.effective_url, settings.redis.reconnect_s
    store = RedisFeatureStore.from_url(url, cfg, reconnect_s=reconnect_s)  # the process's one Redis pool
    marker = Marker(store, settings.worker.id)
    # the marker goes in before any row of this process: from then on, its absence means Redis lost them
    writer = MicroBatchWriter(store, batch_size=cfg.batch_size, flush_ms=cfg.flush_ms, before_first_write=marker.set)
    rec = settings.recommend
    cache = None
    if rec.cache_ttl_s > 0:
        cache = RecommendationCache(store, rec.cache_ttl_s)
    recommender = None
    if settings.worker.role != "features":
        recommender = _build_recommender(settings, store)
        await recommender.start()
    return Clients(writer=writer, marker=marker, cache=cache, recommender=recommender, store=store)


def _build_recommender(settings: Settings, store: RedisFeatureStore) -> Recommender:
    rec = settings.recommend
    if rec.recommender == "top_mean":
        return TopMeanRecommender(store, top_k=rec.top_k, candidates=rec.candidates.max_candidates)
    from streamrec.models.watcher import ModelWatcher  # onnxruntime: only where ranking happens
    from streamrec.stream.ranking import RankingRecommender

    return RankingRecommender(store, ModelWatcher(settings.models, candidates=rec.candidates), rec.candidates,
                              top_k=rec.top_k, near_cache_ms=rec.near_cache_ms)
