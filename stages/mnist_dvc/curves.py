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


def write_binary_curves(
    scored: dict[str, tuple[np.ndarray, np.ndarray]],
    legends: dict[str, str],
    part: str,
    figure_stem: Path,
    title: str,
) -> dict[str, np.ndarray]:
    """SGD's precision-recall curve and the ROC curves of `legends`' models: data for `dvc plots`, and PNGs.

    `scored` maps each model to the truth and the scores of the images it scored (a model fitted on fewer training
    images scores fewer). Data files are named after `part` ('cv' or 'test'), figures start with `figure_stem`;
    returns SGD's curve.
    """
    curve = precision_recall_columns(*scored["sgd"])
    write_csv(PLOTS_DIR / f"binary_{part}_pr_sgd.csv", curve)
    rocs = {}
    for name, legend in legends.items():
        roc = roc_columns(*scored[name])
        write_csv(PLOTS_DIR / f"binary_{part}_roc_{name}.csv", roc)
        rocs[legend] = (roc["fpr"], roc["tpr"])
    pr_figure = plot_curves("precision_recall", {"SGD": (curve["recall"], curve["precision"])}, f"SGD {title}")
    save_figure(Path(f"{figure_stem}precision_vs_recall.png"), pr_figure)
    save_figure(Path(f"{figure_stem}roc.png"), plot_curves("roc", rocs, f"ROC {title}"))
    return curve
