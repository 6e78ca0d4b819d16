"""Session fixtures: a private embedded stack (Apache Kafka + redis-server) on free
loopback ports, started once per test session and stopped by PID at the end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streamrec.infra.stack import EmbeddedStack, StackConfig


@pytest.fixture(scope="session")
def embedded_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    config = StackConfig.on_free_ports(Path(tmp_path_factory.mktemp("stack")))
    stack = EmbeddedStack(config)
    stack.up()
    try:
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="session")
def redis_url(embedded_stack: EmbeddedStack) -> str:
    """URL of a redis-server private to this test session (db 0)."""
    return embedded_stack.config.redis_url


@pytest.fixture(scope="session")
def bootstrap_servers(embedded_stack: EmbeddedStack) -> str:
    """host:port of an Apache Kafka broker private to this test session."""
    return embedded_stack.config.bootstrap_servers
