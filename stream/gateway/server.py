"""Serving the gateway with uvicorn (``streamrec gateway``).

uvicorn's HTTP protocol is extended by one thing: each request's ASGI scope carries
an ``abort`` callable (extension ``streamrec.abort``) that closes its connection at
once. The live streams use it to drop a browser that does not read: a plain close
would wait for the unread bytes to drain, which such a browser never lets happen.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from streamrec.infra.settings import SettingsError
from streamrec.infra.stack import port_open
from streamrec.stream.gateway.app import ABORT_EXTENSION, create_app
from streamrec.stream.gateway.catalogue import load_catalogue
from streamrec.stream.runtime import check_services, settings_env, stop_process
from streamrec.stream.settings import Settings


class AbortableHttpProtocol(HttpToolsProtocol):
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {ABORT_EXTENSION: self.transport.abort}  # type: ignore[dict-item]


def server_config(settings: Settings, app: Any, **overrides: Any) -> uvicorn.Config:
    g = settings.gateway
    options: dict[str, Any] = {"host": g.host, "port": g.port, "http": AbortableHttpProtocol, "lifespan": "on",
                               "access_log": False, "log_level": "warning", "timeout_graceful_shutdown": 2}
    return uvicorn.Config(app, **{**options, **overrides})


def run_gateway(settings: Settings) -> int:
    """Blocking: check the services, load the catalogue, serve until SIGINT/SIGTERM."""
    g = settings.gateway
    if g.port and port_open("127.0.0.1" if g.host in ("0.0.0.0", "::") else g.host, g.port, timeout_s=0.5):
        raise SettingsError(f"bad setting STREAMREC_GATEWAY__PORT: {g.host}:{g.port} is already in use; choose another port")
    check_services(settings)
    catalogue = load_catalogue(settings)
    app = create_app(settings, catalogue)
    server = uvicorn.Server(server_config(settings, app))

    async def serve() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if server.started:
            port = server.servers[0].sockets[0].getsockname()[1] if server.servers else g.port
            base = f"http://{g.host}:{port}"
            print(f"gateway serving {base}  shopper page {base}/shop  monitoring page {base}/monitor  docs {base}/docs",
                  file=sys.stderr, flush=True)
        await task

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve())
    return 0 if server.started else 1


@dataclass
class GatewayProcess:
    """``streamrec gateway`` running as a child process."""

    process: subprocess.Popen[bytes]
    base_url: str
    log: Path
    settings: Settings

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        stop_process(self.process)


def spawn_gateway(settings: Settings, log: Path, *, timeout_s: float = 60.0) -> GatewayProcess:
    """Start ``streamrec gateway`` with ``settings`` (on a free port when ``gateway.port`` is 0),
    its output appended to ``log``; returns once it serves, with its address."""
    env = {**os.environ, **settings_env(settings)}
    began = log.stat().st_size if log.exists() else 0
    with open(log, "ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "streamrec.stream.cli", "gateway"], stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            with open(log, "rb") as f:
                f.seek(began)
                found = re.search(rb"gateway serving (http://\S+)", f.read())
            if found:
                return GatewayProcess(process, found.group(1).decode(), log, settings)
            if process.poll() is not None:
                break
            time.sleep(0.05)
    except BaseException:  # Ctrl-C or SIGTERM while it starts: it must not outlive us
        stop_process(process)
        raise
    stop_process(process)
    raise RuntimeError(f"the gateway did not start (log {log}):\n{log.read_text(errors='replace')[-3000:]}")


__all__ = ["AbortableHttpProtocol", "GatewayProcess", "run_gateway", "server_config", "spawn_gateway"]
