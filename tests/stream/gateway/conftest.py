"""Helpers for the gateway's tests: serving an app in the test's event loop, a small
catalogue, a gateway process. (Browser-like streams: ``streamrec.tools.gateway_client``.)"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from streamrec.stream.gateway.catalogue import Catalogue, CatalogueItem
from streamrec.stream.gateway.server import GatewayProcess, server_config, spawn_gateway
from streamrec.tools.gateway_client import SseClient, session as client_session
from streamrec.stream.settings import Settings, load_settings


def small_catalogue() -> Catalogue:
    items = [CatalogueItem(f"i{n}", f"Film number {n}", 1990 + n, ("Drama",) if n % 2 else ("Comedy", "Drama"), 100 - n)
             for n in range(20)]
    return Catalogue("test", items, users=["u1", "u2"])


def offline_settings(tmp_path: Path, **gateway: Any) -> Settings:
    """Settings for an app that connects to nothing (``create_app(connect=False)``)."""
    return load_settings(gateway={"port": 0, "data_dir": str(tmp_path), "stats_interval_s": 0.2, **gateway},
                         redis={"url": "redis://127.0.0.1:1/0"})


@contextlib.asynccontextmanager
async def serve(settings: Settings, app: Any) -> AsyncIterator[str]:
    """Run ``app`` with the gateway's uvicorn setup in this event loop; yields its base URL."""
    server = uvicorn.Server(server_config(settings, app, port=0))
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started or task.done():
                break
            await asyncio.sleep(0.02)
        assert server.started, "the gateway did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def wait_until(predicate: Any, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def start_gateway(settings: Settings, log: Path) -> GatewayProcess:
    """``streamrec gateway`` as a child process on a free port; returns once it serves."""
    return spawn_gateway(settings.model_copy(update={"gateway": settings.gateway.model_copy(update={"port": 0})}), log)


@pytest.fixture
def catalogue() -> Catalogue:
    return small_catalogue()
