"""Figures saved to files (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from models.training import History  # noqa: E402


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
