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
    thresholds: np.ndarray, precision: np.ndarray, recall: np.ndarray, point: dict[str, float] | None, title: str
) -> Any:
    """The chapter's figure: precision and recall as the decision threshold moves, the chosen threshold marked."""
    figure, axis = new_figure(figsize=(6, 3.5))
    axis.plot(thresholds, precision, "b--", label="precision")
    axis.plot(thresholds, recall, "g-", label="recall")
    if point is not None:
        label = f"threshold {point['threshold']:.4g}: precision {point['precision']:.3f}, recall {point['recall']:.3f}"
        axis.axvline(point["threshold"], color="k", linestyle=":", label=label)
        axis.plot([point["threshold"]] * 2, [point["precision"], point["recall"]], "ko")
    axis.set_xlabel("decision threshold")
    axis.set_ylabel("precision / recall")
    axis.set_ylim(0, 1.02)
    axis.set_title(title)
    axis.legend(loc="center left")  # where the curves are flat: precision low, recall high
    axis.grid(alpha=0.3)
    return figure


CURVE_AXES = {
    "precision_recall": ("recall", "precision", "lower left", ("recall", "precision")),
    "roc": ("false positive rate", "true positive rate (recall)", "lower right", ("fpr", "recall")),
}


def plot_curves(
    kind: str, curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str, point: dict[str, float] | None = None
) -> Any:
    """Precision-recall or ROC curves on one chart; `curves` maps a legend label to (x, y). `point`, SGD's chosen
    threshold with its precision, recall and false positive rate, is marked on the first curve."""
    xlabel, ylabel, legend_place, (x_key, y_key) = CURVE_AXES[kind]
    figure, axis = new_figure(figsize=(5, 4.5))
    if kind == "roc":
        axis.plot([0, 1], [0, 1], "k:", label="chance")
    for label, (x, y) in curves.items():
        axis.plot(x, y, label=label)
    if point is not None:
        label = f"threshold {point['threshold']:.4g}: precision {point['precision']:.3f}, recall {point['recall']:.3f}"
        axis.plot(point[x_key], point[y_key], "ko", label=label)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.02)
    axis.set_title(title, fontsize=9)
    axis.legend(loc=legend_place, fontsize=8)
    axis.grid(alpha=0.3)
    return figure


def plot_confusion_matrices(matrix: np.ndarray, class_names: list[str], title: str) -> Any:
    """The chapter's error analysis: counts; shares of each true class; errors only, as shares of each true class
    and of each predicted class (which predictions are most often wrong).

    Drawn by hand rather than with `ConfusionMatrixDisplay`: empty cells stay blank, so the few errors stand out,
    and the colour bar of a share panel is in percent like its cells."""
    by_true = 100 * matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    errors = matrix * (1 - np.eye(len(matrix), dtype=matrix.dtype))
    errors_by_true = 100 * errors / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    errors_by_predicted = 100 * errors / np.maximum(matrix.sum(axis=0, keepdims=True), 1)
    panels = [
        (matrix, "counts", "images", "Blues", "{:.0f}"),
        (by_true, "% of each true class", "% of the true class", "Blues", "{:.1f}"),
        (errors_by_true, "errors only, % of each true class", "% of the true class", "Reds", "{:.1f}"),
        (errors_by_predicted, "errors only, % of each predicted class", "% of the predicted class", "Reds", "{:.1f}"),
    ]
    size = 3 + 0.45 * len(class_names)
    figure, axes = new_figure(2, 2, figsize=(2 * size + 2, 2 * size - 0.5), layout="constrained")
    rotate = max(map(len, class_names)) > 2
    for axis, (values, name, unit, colours, cell_format) in zip(axes.ravel(), panels, strict=True):
        image = axis.imshow(values, cmap=colours)
        ticks = np.arange(len(class_names))
        axis.set_xticks(ticks, class_names, rotation=45 if rotate else 0, ha="right" if rotate else "center")
        axis.set_yticks(ticks, class_names)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        axis.set_title(name)
        dark = values.max() / 2
        for row, col in np.ndindex(values.shape):
            if values[row, col]:
                color = "white" if values[row, col] > dark else "black"
                axis.text(
                    col, row, cell_format.format(values[row, col]), ha="center", va="center", fontsize=8, color=color
                )
        figure.colorbar(image, ax=axis, fraction=0.046, label=unit)
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
