"""A versioned model registry on a plain directory.

Layout under ``root`` (a setting: ``ModelConfig.registry_dir``)::

    versions/<version>/model.onnx            fp32, always present
    versions/<version>/model.<variant>.onnx  int8, int8_static, fp16 when built
    versions/<version>/metadata.json         version, created, data, metrics, features,
                                             inputs, id maps, per-file sha256 and gates
    versions/<version>/<name>.<ext>          an attachment (the re-ranker trained on this
                                             version's scores, models/reranker.py; its EASE
                                             neighbours, models/ease_neighbours.py)
    CURRENT                                  the promoted version, one line

Writes are atomic (temporary name, then rename), so a reader never sees half an
artifact or half a CURRENT file. Every load verifies the sha256 of the file it loads;
a mismatch raises :class:`ArtifactError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

METADATA = "metadata.json"
CURRENT = "CURRENT"


class ArtifactError(RuntimeError):
    """An artifact is missing, unknown, or its files do not match their sha256."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


class ModelRegistry:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _dir(self, version: str) -> Path:
        if not version or "/" in version or version.startswith("."):
            raise ArtifactError(f"invalid version {version!r}")
        return self.root / "versions" / version

    def publish(self, staging: Path, metadata: dict[str, Any]) -> str:
        """Move the variant files named in ``metadata["variants"]`` from ``staging`` into a
        new version; fills version, created and the sha256 fields. Returns the version."""
        created = datetime.now(timezone.utc)
        fp32 = staging / metadata["variants"]["fp32"]["file"]
        version = f"{created:%Y%m%dT%H%M%S%f}Z-{sha256_of(fp32)[:8]}"
        for info in metadata["variants"].values():
            info["sha256"] = sha256_of(staging / info["file"])
            info["bytes"] = (staging / info["file"]).stat().st_size
        metadata = {**metadata, "version": version, "created": created.isoformat(), "sha256": metadata["variants"]["fp32"]["sha256"]}
        (self.root / "versions").mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(dir=self.root / "versions", prefix=".building-"))
        for info in metadata["variants"].values():
            shutil.move(str(staging / info["file"]), building / info["file"])
        (building / METADATA).write_text(json.dumps(metadata, indent=1))
        os.replace(building, self._dir(version))
        return version

    def versions(self) -> list[str]:
        folder = self.root / "versions"
        return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []

    def metadata(self, version: str) -> dict[str, Any]:
        path = self._dir(version) / METADATA
        try:
            return json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ArtifactError(f"unknown version {version!r} in {self.root}") from exc
        except ValueError as exc:
            raise ArtifactError(f"{path}: unreadable metadata ({exc})") from exc

    def verified_path(self, version: str, variant: str = "fp32") -> Path:
        """The variant's file, after checking its sha256 against the metadata."""
        info = self.metadata(version)["variants"].get(variant)
        if info is None:
            raise ArtifactError(f"version {version} has no {variant} variant")
        return self._checked(version, info)

    def _checked(self, version: str, info: dict[str, Any]) -> Path:
        path = self._dir(version) / info["file"]
        if not path.is_file():
            raise ArtifactError(f"{path} is missing")
        actual = sha256_of(path)
        if actual != info["sha256"]:
            raise ArtifactError(f"{path}: sha256 {actual[:12]}… does not match the recorded {info['sha256'][:12]}…")
        return path

    def verify(self, version: str) -> None:
        """Check every variant file of a version; raises :class:`ArtifactError`."""
        for variant in self.metadata(version)["variants"]:
            self.verified_path(version, variant)

    def attach(self, version: str, name: str, source: Path, info: dict[str, Any]) -> None:
        """Copy ``source`` into ``version`` as ``<name>`` with ``source``'s suffix and record it (``info`` plus
        file, sha256, bytes) under ``metadata[name]``, replacing an earlier attachment of
        that name. Each write is atomic, but a load between the two fails its sha256 check,
        and a loaded bundle does not reload: attach before promoting."""
        folder = self._dir(version)
        meta = self.metadata(version)
        if name in ("variants", "version", "created", "sha256"):
            raise ArtifactError(f"{name!r} is not an attachment name")
        target = folder / f"{name}{source.suffix}"
        handle, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.")
        os.close(handle)
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
        meta[name] = {**info, "file": target.name, "sha256": sha256_of(target), "bytes": target.stat().st_size}
        _write_atomic(folder / METADATA, json.dumps(meta, indent=1))

    def verified_attachment(self, version: str, name: str) -> Path:
        """An attachment's file, after checking its sha256 against the metadata."""
        info = self.metadata(version).get(name)
        if not isinstance(info, dict) or "file" not in info:
            raise ArtifactError(f"version {version} has no {name} attachment")
        return self._checked(version, info)

    def promote(self, version: str) -> None:
        """Mark ``version`` as the one to serve; refuses an artifact that fails verification."""
        self.verify(version)
        self.root.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.root / CURRENT, version + "\n")

    def current_version(self) -> str | None:
        try:
            return (self.root / CURRENT).read_text().strip() or None
        except FileNotFoundError:
            return None

    def current_marker(self) -> tuple[int, int] | None:
        """A cheap change token for CURRENT (mtime ns, inode): one stat call."""
        try:
            stat = (self.root / CURRENT).stat()
        except FileNotFoundError:
            return None
        return stat.st_mtime_ns, stat.st_ino
