"""The binary task's precision-recall and ROC curves, as data for `dvc plots` and for the `report` stage's figures.

Why not dvclive's `log_sklearn_plot`: it dumps every point of scikit-learn's curve at full float precision, so the
committed file grows with the test set (tens of thousands of rows on full-size data). These CSVs are thinned to
MAX_CURVE_POINTS and written at 4 significant digits, and the figures draw exactly the points `dvc plots` shows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mnist_dvc.files.disk import read_csv, write_csv
from mnist_dvc.files.paths import PLOTS_DIR
from mnist_dvc.study.metrics import precision_recall_columns, roc_columns

CURVE_MODELS = ("sgd", "forest")  # the dummy's curves are a diagonal and a point: not drawn


def curve_file(part: str, kind: str, model: str) -> Path:
    """`part` is 'cv' (training images scored out of sample) or 'test'; `kind` 'pr' or 'roc'."""
    return PLOTS_DIR / f"binary_{part}_{kind}_{model}.csv"


def write_curves(scored: dict[str, tuple[np.ndarray, np.ndarray]], part: str) -> None:
    """Precision-recall and ROC curves of SGD and the forest; `scored` maps a model to the truth and the scores of
    the images it scored (a model fitted on fewer training images scores fewer)."""
    for model in CURVE_MODELS:
        write_csv(curve_file(part, "pr", model), precision_recall_columns(*scored[model]))
        write_csv(curve_file(part, "roc", model), roc_columns(*scored[model]))


def read_curve(part: str, kind: str, model: str) -> dict[str, np.ndarray]:
    columns = ("threshold", "precision", "recall") if kind == "pr" else ("fpr", "tpr")
    return read_csv(curve_file(part, kind, model), columns)


def point_at_threshold(truth: np.ndarray, answers: np.ndarray, threshold: float) -> dict[str, float]:
    """Precision, recall (the true positive rate) and false positive rate of the answers 'yes' given from
    `threshold` on, for the figures' mark."""
    return {
        "threshold": threshold,
        "precision": float(truth[answers].mean()) if answers.any() else 1.0,
        "recall": float(answers[truth].mean()),
        "fpr": float(answers[~truth].mean()),
    }
