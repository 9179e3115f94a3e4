"""The binary task's curves, written twice: as data for `dvc plots` and as PNG figures.

Why not dvclive's `log_sklearn_plot` for the data: it dumps every point of scikit-learn's curve at full float
precision, so the committed file grows with the test set (tens of thousands of rows on full-size data) and its bytes
change with the CPU's BLAS kernel. These CSVs are thinned to MAX_CURVE_POINTS and written at 4 significant digits.
Why not `RocCurveDisplay.from_predictions` / `PrecisionRecallDisplay.from_predictions` for the PNGs: they recompute
the full curve, while these figures draw exactly the points `dvc plots` shows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mnist_dvc.figures import plot_curves, save_figure
from mnist_dvc.files import write_csv
from mnist_dvc.metrics import precision_recall_columns, roc_columns
from mnist_dvc.paths import PLOTS_DIR


def point_at_threshold(truth: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Precision, recall (the true positive rate) and false positive rate of answering 'yes' from `threshold` on."""
    chosen = scores >= threshold
    return {
        "threshold": threshold,
        "precision": float(truth[chosen].mean()) if chosen.any() else 1.0,
        "recall": float(chosen[truth].mean()),
        "fpr": float(chosen[~truth].mean()),
    }


def write_binary_curves(
    scored: dict[str, tuple[np.ndarray, np.ndarray]],
    legends: dict[str, str],
    part: str,
    figure_stem: Path,
    title: str,
    threshold: float | None,
) -> dict[str, np.ndarray]:
    """Precision-recall and ROC curves of `legends`' models: data for `dvc plots`, and PNGs; returns SGD's PR curve.

    `scored` maps each model to the truth and the scores of the images it scored (a model fitted on fewer training
    images scores fewer). SGD's point at `threshold` is marked on both figures. Data files are named after `part`
    ('cv' or 'test'), figures start with `figure_stem`.
    """
    pr_curves, roc_curves = {}, {}
    for name, legend in legends.items():
        pr = precision_recall_columns(*scored[name])
        roc = roc_columns(*scored[name])
        write_csv(PLOTS_DIR / f"binary_{part}_pr_{name}.csv", pr)
        write_csv(PLOTS_DIR / f"binary_{part}_roc_{name}.csv", roc)
        pr_curves[legend] = (pr["recall"], pr["precision"])
        roc_curves[legend] = (roc["fpr"], roc["tpr"])
    point = None if threshold is None else point_at_threshold(*scored["sgd"], threshold)
    pr_figure = plot_curves("precision_recall", pr_curves, f"precision vs recall, {title}", point)
    save_figure(Path(f"{figure_stem}precision_vs_recall.png"), pr_figure)
    save_figure(Path(f"{figure_stem}roc.png"), plot_curves("roc", roc_curves, f"ROC, {title}", point))
    return precision_recall_columns(*scored["sgd"])
