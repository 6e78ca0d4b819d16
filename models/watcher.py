"""Hot swap of the serving model without a restart.

The worker holds one :class:`ModelWatcher`. It calls :meth:`ModelWatcher.poll` as
often as it likes (one ``stat`` of the registry's CURRENT file when nothing changed;
the worker may also rate-limit with ``ModelConfig.poll_interval_s``), or
:meth:`ModelWatcher.load` to serve a given version at once.
A new version is verified (sha256) and opened before the swap; if anything fails
the old scorer keeps serving and ``last_error`` says why. ``current()`` is a single
attribute read, safe from any thread.
"""

from __future__ import annotations

import logging
import threading

from streamrec.models.config import ModelConfig
from streamrec.models.registry import ModelRegistry
from streamrec.models.scorer import Scorer, open_scorer

log = logging.getLogger(__name__)


class NoModelError(RuntimeError):
    """No version is promoted yet, or none could be loaded."""


class ModelWatcher:
    def __init__(self, cfg: ModelConfig, registry: ModelRegistry | None = None) -> None:
        self.cfg = cfg
        self.registry = registry or ModelRegistry(cfg.registry_dir)
        self._serving: tuple[Scorer, str] | None = None
        self._marker: tuple[int, int] | None = None
        self._refused: str | None = None
        self._lock = threading.Lock()
        self.last_error: str | None = None

    def current(self) -> tuple[Scorer, str]:
        """The serving (scorer, version). Raises :class:`NoModelError` before the first load."""
        serving = self._serving
        if serving is None:
            raise NoModelError(f"no model loaded from {self.registry.root}; promote one (streamrec models promote VERSION)")
        return serving

    def poll(self) -> bool:
        """Load the promoted version if it changed; True when a new version now serves."""
        marker = self.registry.current_marker()
        if marker == self._marker:
            return False
        self._marker = marker
        version = self.registry.current_version()
        if version is None or version == self._refused:
            return False
        return self.load(version)

    def load(self, version: str) -> bool:
        """Verify, open and swap in ``version``; on failure keep the old one serving."""
        with self._lock:
            if self._serving is not None and self._serving[1] == version:
                return False
            try:
                scorer = open_scorer(self.registry, version, self.cfg.provider, self.cfg.variant, self.cfg.intra_op_threads)
            except Exception as exc:  # any failure to open must leave the old model serving
                self._refused, self.last_error = version, f"refused {version}: {exc}"
                log.error(self.last_error)
                return False
            self._serving, self._refused, self.last_error = (scorer, version), None, None
            log.info("serving model %s (%s on %s)", version, scorer.variant, scorer.providers[0])
            return True
