"""Every figure of `reports/figures/`, drawn by the `report` stage: one style, byte-stable PNGs, the chapter's kinds
of figure. The data behind them comes from the other stages' outputs; nothing here trains or scores a model."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from skimage.util import montage

from mnist_dvc.files.disk import write_bytes

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
    """Tile images into one picture, `columns` per row; blank cells pad the last row (skimage's `montage`)."""
    return montage(images, grid_shape=(-(-len(images) // columns), columns), fill=0)


def plot_digit_grid(images: np.ndarray, title: str, columns: int = 10) -> Any:
    figure, axis = new_figure(figsize=(columns * 0.6, max(1, -(-len(images) // columns)) * 0.6 + 0.4))
    if len(images):
        axis.imshow(digit_grid(images, columns), cmap="binary", interpolation="nearest")
    axis.set_title(title)
    axis.axis("off")
    return figure


def plot_one_digit(image: np.ndarray, class_name: str) -> Any:
    figure, axis = new_figure(figsize=(2.5, 2.5))
    axis.imshow(image, cmap="binary", interpolation="nearest")
    axis.set_title(f"first training image: {class_name}")
    axis.axis("off")
    return figure


def plot_class_counts(train: dict[str, int], test: dict[str, int]) -> Any:
    figure, axis = new_figure(figsize=(6, 3))
    positions = np.arange(len(train))
    axis.bar(positions - 0.2, list(train.values()), width=0.4, label="train")
    axis.bar(positions + 0.2, list(test.values()), width=0.4, label="test")
    axis.set_xticks(positions, list(train), rotation=30 if max(map(len, train)) > 2 else 0)
    axis.set_ylabel("images")
    axis.set_title("images per class")
    axis.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the bars, never over them
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


def most_confused_pair(matrix: np.ndarray) -> tuple[int, int]:
    """The (true, predicted) pair of distinct classes mixed up most often, counting both directions."""
    errors = matrix + matrix.T
    np.fill_diagonal(errors, -1)
    first, second = np.unravel_index(np.argmax(errors), errors.shape)
    return int(min(first, second)), int(max(first, second))


def plot_confused_pair(
    images: np.ndarray, truth: np.ndarray, predicted: np.ndarray, pair: tuple[int, int], class_names: list[str]
) -> Any:
    """The chapter's grid of a confused pair: rows a-as-a, a-as-b, b-as-a, b-as-b, ten images each."""
    a, b = pair
    rows = [images[(truth == t) & (predicted == p)][:10] for t, p in [(a, a), (a, b), (b, a), (b, b)]]
    tiles = np.concatenate([np.concatenate([row, np.zeros((10 - len(row), 28, 28), np.uint8)]) for row in rows])
    names = class_names[a], class_names[b]
    title = (
        f"rows: {names[0]} as {names[0]}, {names[0]} as {names[1]}, {names[1]} as {names[0]}, {names[1]} as {names[1]}"
    )
    return plot_digit_grid(tiles, title)


def plot_misclassified(
    images: np.ndarray, truth: np.ndarray, predicted: np.ndarray, class_names: list[str], shown: int = 40
) -> Any:
    """The first `shown` misclassified images, each titled true -> predicted."""
    all_wrong = np.flatnonzero(truth != predicted)
    wrong = all_wrong[:shown]
    columns = 10
    rows = max(1, -(-len(wrong) // columns))
    figure, axes = new_figure(rows, columns, figsize=(columns * 0.9, rows * 1.05), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, index in zip(axes.ravel(), wrong, strict=False):
        axis.imshow(images[index], cmap="binary", interpolation="nearest")
        axis.set_title(f"{class_names[truth[index]]} → {class_names[predicted[index]]}", fontsize=7)
    which = f"all {len(wrong)}" if len(wrong) == len(all_wrong) else f"the first {len(wrong)} of {len(all_wrong)}"
    figure.suptitle(f"{which} misclassified test images (true → predicted)", y=1.02)
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
