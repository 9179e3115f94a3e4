"""Plotting shared by the stages: one style, byte-stable PNGs, the chapter's kinds of figure."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from mnist_dvc.files import write_bytes

plt.rcParams.update({"figure.dpi": 100, "font.size": 9, "axes.spines.top": False, "axes.spines.right": False})


def new_figure(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    return plt.subplots(*args, **kwargs)


def save_figure(path: Path, figure: Any) -> None:
    """Save a PNG without software/time metadata, so the same figure always gives the same bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None}, bbox_inches="tight")
    plt.close(figure)
    write_bytes(path, buffer.getvalue())


def digit_grid(images: np.ndarray, columns: int) -> np.ndarray:
    """Tile images into one picture, `columns` per row; blank cells pad the last row."""
    rows = -(-len(images) // columns)
    padded = np.zeros((rows * columns, *images.shape[1:]), dtype=images.dtype)
    padded[: len(images)] = images
    height, width = images.shape[1:]
    return padded.reshape(rows, columns, height, width).swapaxes(1, 2).reshape(rows * height, columns * width)


def plot_digit_grid(images: np.ndarray, title: str, columns: int = 10) -> Any:
    figure, axis = new_figure(figsize=(columns * 0.6, max(1, -(-len(images) // columns)) * 0.6 + 0.4))
    if len(images):
        axis.imshow(digit_grid(images, columns), cmap="binary", interpolation="nearest")
    axis.set_title(title)
    axis.axis("off")
    return figure


def plot_precision_recall_vs_threshold(
    thresholds: np.ndarray, precision: np.ndarray, recall: np.ndarray, chosen: float | None, title: str
) -> Any:
    figure, axis = new_figure(figsize=(6, 3.5))
    axis.plot(thresholds, precision, "b--", label="precision")
    axis.plot(thresholds, recall, "g-", label="recall")
    if chosen is not None:
        axis.axvline(chosen, color="k", linestyle=":", label=f"threshold {chosen:.4g}")
    axis.set_xlabel("decision threshold")
    axis.set_ylim(0, 1.02)
    axis.set_title(title)
    axis.legend(loc="best")
    axis.grid(alpha=0.3)
    return figure


CURVE_AXES = {
    "precision_recall": ("recall", "precision", "lower left"),
    "roc": ("false positive rate", "true positive rate (recall)", "lower right"),
}


def plot_curves(kind: str, curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str) -> Any:
    """Precision-recall or ROC curves on one chart; `curves` maps a legend label to (x, y)."""
    xlabel, ylabel, legend_place = CURVE_AXES[kind]
    figure, axis = new_figure(figsize=(4.5, 4))
    if kind == "roc":
        axis.plot([0, 1], [0, 1], "k:", label="chance")
    for label, (x, y) in curves.items():
        axis.plot(x, y, label=label)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.02)
    axis.set_title(title)
    axis.legend(loc=legend_place)
    axis.grid(alpha=0.3)
    return figure


def cell_label(value: float, share: bool) -> str:
    """A count, or a share with a decimal where whole percents would round a real error to 0%."""
    if not share:
        return str(int(value))
    return f"{value:.0%}" if value >= 0.01 else f"{value:.1%}"


def plot_confusion_matrices(matrix: np.ndarray, class_names: list[str], title: str) -> Any:
    """The chapter's error analysis: raw counts, rows normalized, and errors only (diagonal zeroed).

    Drawn by hand rather than with `ConfusionMatrixDisplay`, which takes one number format per panel: here a share
    below 1% keeps a decimal, so that a real error never shows as "0%"."""
    normalized = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    errors = normalized.copy()
    np.fill_diagonal(errors, 0)
    figure, axes = new_figure(1, 3, figsize=(16, 4.8), gridspec_kw={"wspace": 0.35})
    panels = [(matrix, "counts"), (normalized, "share of each true class"), (errors, "errors only")]
    for axis, (values, name) in zip(axes, panels, strict=True):
        image = axis.imshow(values, cmap="Blues" if name != "errors only" else "Reds")
        ticks = np.arange(len(class_names))
        axis.set_xticks(ticks, class_names, rotation=45 if max(map(len, class_names)) > 2 else 0, ha="right")
        axis.set_yticks(ticks, class_names)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        axis.set_title(name)
        dark = values.max() / 2
        for row, col in np.ndindex(values.shape):
            if values[row, col]:
                color = "white" if values[row, col] > dark else "black"
                label = cell_label(values[row, col], share=name != "counts")
                axis.text(col, row, label, ha="center", va="center", fontsize=6, color=color)
        figure.colorbar(image, ax=axis, fraction=0.046)
    figure.suptitle(title)
    return figure


def plot_denoising(noisy: np.ndarray, cleaned: np.ndarray, original: np.ndarray, title: str) -> Any:
    """The chapter's multioutput example: rows of noisy inputs, what the model made of them, and the originals."""
    rows = {"noisy": noisy, "cleaned": cleaned, "original": original}
    figure, axes = new_figure(len(rows), 1, figsize=(len(original) * 0.7, len(rows) * 0.85 + 0.3))
    for axis, (name, images) in zip(axes, rows.items(), strict=True):
        axis.imshow(digit_grid(np.clip(images, 0, 255), len(images)), cmap="binary", interpolation="nearest")
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_ylabel(name)
    figure.suptitle(title)
    return figure
