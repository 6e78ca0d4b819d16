"""Hot swap of the serving bundle without a restart.

The worker holds one :class:`ModelWatcher`; it owns what serves (a
:class:`~streamrec.models.serving.ServingBundle`: scorer, feature columns, item vectors,
search index, version) and when to look for a new one. :meth:`ModelWatcher.refresh_if_due`
(called per batch, never blocking) starts a check in a thread at most every
``ModelConfig.poll_interval_s``: one ``stat`` of the registry's CURRENT file when nothing
changed. A new version is verified (sha256), opened and its bundle built before the swap; if
anything fails (a bad file, a feature the online store lacks) the old bundle keeps
serving, the version is refused until another is promoted, and ``last_error`` says why.
``bundle`` is a single attribute read, safe from any thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from streamrec.models.candidates import CandidateConfig
from streamrec.models.config import ModelConfig
from streamrec.models.registry import ModelRegistry
from streamrec.models.scorer import Scorer, open_scorer
from streamrec.models.serving import ServingBundle

log = logging.getLogger(__name__)


class NoModelError(RuntimeError):
    """No version is promoted yet, or none could be loaded."""


class ModelWatcher:
    """``candidates``: how the bundle's item-vector index is built (exact or HNSW)."""

    def __init__(self, cfg: ModelConfig, registry: ModelRegistry | None = None,
                 candidates: CandidateConfig | None = None) -> None:
        self.cfg = cfg
        self.registry = registry or ModelRegistry(cfg.registry_dir)
        self.candidates = candidates or CandidateConfig()
        self._bundle: ServingBundle | None = None
        self._marker: tuple[int, int] | None = None
        self._refused: str | None = None
        self._lock = threading.Lock()
        self._next_poll = 0.0
        self._polling: asyncio.Task[ServingBundle | None] | None = None
        self.last_error: str | None = None

    @property
    def bundle(self) -> ServingBundle | None:
        """What serves now; ``None`` before the first load."""
        return self._bundle

    def current(self) -> tuple[Scorer, str]:
        """The serving (scorer, version). Raises :class:`NoModelError` before the first load."""
        bundle = self._bundle
        if bundle is None:
            raise NoModelError(f"no model loaded from {self.registry.root}; promote one (streamrec models promote VERSION)")
        return bundle.scorer, bundle.version

    def poll(self) -> bool:
        """Blocking: load the promoted version if it changed; True when a new version now serves."""
        marker = self.registry.current_marker()
        if marker == self._marker:
            return False
        self._marker = marker
        version = self.registry.current_version()
        if version is None or version == self._refused:
            return False
        return self.load(version)

    def load(self, version: str) -> bool:
        """Blocking: verify, open and swap in ``version``'s bundle; on failure keep the old one."""
        with self._lock:
            if self._bundle is not None and self._bundle.version == version:
                return False
            try:
                scorer = open_scorer(self.registry, version, self.cfg.provider, self.cfg.variant, self.cfg.intra_op_threads)
                bundle = ServingBundle.load(scorer, version, self.registry, self.candidates, self.cfg.rerank)
            except Exception as exc:  # any failure to load must leave the old model serving
                self._refused, self.last_error = version, f"refused {version}: {exc}"
                log.error(self.last_error)
                return False
            self._bundle, self._refused, self.last_error = bundle, None, None
            log.info("serving model %s (%s on %s)", version, scorer.variant, scorer.providers[0])
            return True

    async def refresh(self) -> ServingBundle | None:
        """Check the registry now (in a thread) and return what serves next. A failed
        check is logged and keeps the serving bundle."""
        self._next_poll = time.monotonic() + self.cfg.poll_interval_s
        try:
            await asyncio.to_thread(self.poll)
        except Exception:
            log.exception("model refresh failed; keeping %s", self._bundle.version if self._bundle else "none")
        return self._bundle

    def refresh_if_due(self) -> None:
        """Start a :meth:`refresh` in the background when ``poll_interval_s`` has passed
        since the last one and none is running. Never blocks; call from the event loop."""
        if time.monotonic() < self._next_poll or (self._polling is not None and not self._polling.done()):
            return
        self._polling = asyncio.get_running_loop().create_task(self.refresh())

    async def close(self) -> None:
        """Wait for a background check still running."""
        if self._polling is not None:
            await asyncio.gather(self._polling, return_exceptions=True)
