"""Static figures for reports and the command line, drawn with matplotlib's Agg backend."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from explorer.core.metrics import ced_curve  # noqa: E402

logger = logging.getLogger(__name__)


def save_ced_plot(errors: Mapping[str, np.ndarray], path: str | Path, threshold: float = 10.0) -> Path:
    """Plot the cumulative error distribution of each named error array ``(N,)`` to a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(6, 4.2), dpi=120)
    for label, values in errors.items():
        x, y = ced_curve(np.asarray(values), threshold)
        axes.plot(np.asarray(x), 100.0 * np.asarray(y), label=f"{label} (NME {np.mean(values):.2f}%)")
    axes.set_xlim(0, threshold)
    axes.set_ylim(0, 100)
    axes.set_xlabel("NME (% of inter-ocular distance)")
    axes.set_ylabel("faces with error below (%)")
    axes.set_title("Cumulative error distribution")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    logger.info("wrote %s", path)
    return path


def save_convergence_plot(
    histories: Mapping[str, Sequence[dict]], path: str | Path, target_nme: float | None = None
) -> Path:
    """Plot validation NME against epoch for each named run history to a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(6.5, 4.2), dpi=120)
    for label, rows in histories.items():
        epochs = [row["epoch"] for row in rows]
        values = [row["nme"] for row in rows]
        axes.plot(epochs, values, marker=".", label=label)
    if target_nme is not None:
        axes.axhline(target_nme, color="grey", linestyle="--", linewidth=1, label=f"target {target_nme:.2f}%")
    axes.set_xlabel("epoch")
    axes.set_ylabel("validation NME (%)")
    axes.set_yscale("log")
    axes.set_title("Convergence on the validation split")
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    logger.info("wrote %s", path)
    return path
