"""Fixtures for the feature tests, on the session's private redis-server.

The feature tests use their own Redis database and Feast project so they never
see keys that other packages' tests write into the same server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from streamrec.features.config import FeatureConfig
from streamrec.features.online import RedisFeatureStore

TEST_DB = 7


@pytest.fixture(scope="session")
def features_redis_url(redis_url: str) -> str:
    base, _, _ = redis_url.rpartition("/")
    return f"{base}/{TEST_DB}"


@pytest.fixture(scope="session")
def features_cfg() -> FeatureConfig:
    return FeatureConfig(project="streamrec_test", top_min_count=2)


@pytest.fixture(scope="session")
def feature_repo(features_redis_url: str, features_cfg: FeatureConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from streamrec.features.repo import apply_repo

    return apply_repo(features_cfg, features_redis_url, tmp_path_factory.mktemp("features"))


@pytest.fixture
async def store(features_redis_url: str, features_cfg: FeatureConfig) -> AsyncIterator[RedisFeatureStore]:
    client = RedisFeatureStore.from_url(features_redis_url, features_cfg)
    await client._client.flushdb()
    yield client
    await client.close()
