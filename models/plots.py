"""Figures saved to files (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from streamrec.models.training import History  # noqa: E402


def plot_learning_curves(curves: Mapping[str, History], path: Path, metric: str = "validation RMSE") -> Path:
    """Training loss and validation metric per epoch, one line per model; best epoch marked."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, history in curves.items():
        epochs = range(1, len(history.train_loss) + 1)
        left.plot(epochs, history.train_loss, marker="o", label=name)
        line = right.plot(epochs, history.val_metric, marker="o", label=name)[0]
        right.axvline(history.best_epoch + 1, color=line.get_color(), linestyle=":", linewidth=1)
    left.set(title="training loss", xlabel="epoch")
    right.set(title=metric, xlabel="epoch")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_over_time(series: Mapping[str, Any], path: Path, title: str) -> Path:
    """Per-bucket HR@10 and NDCG@10 of each variant (``streamrec.tools.prequential.over_time``'s
    output), events per bucket shaded behind the left panel."""
    path.parent.mkdir(parents=True, exist_ok=True)
    starts = [datetime.fromtimestamp(s, timezone.utc) for s in series["start"]]
    width = f"{series['bucket_s'] / 86400:g} d" if series["bucket_s"] >= 86400 else f"{series['bucket_s'] / 3600:g} h"
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharex=True)
    for axis, metric in zip(axes, ("hr@10", "ndcg@10")):
        for style, (variant, values) in zip(("-", "--", ":", "-."), series["variants"].items()):
            axis.plot(starts, values[metric], linestyle=style, marker=".", label=variant)
        axis.set(title=f"{title}: {metric} per {width}", xlabel="event time (UTC)")
        axis.grid(alpha=0.3)
    volume = axes[0].twinx()
    volume.bar(starts, series["events"], width=series["bucket_s"] / 86400 * 0.9, color="grey", alpha=0.15)
    volume.set_ylabel("events scored")
    axes[0].legend(loc="upper left")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
