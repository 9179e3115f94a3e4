"""Metrics and curves shared by the training stages (cross-validated), `evaluate` (test set) and `report`."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    precision_recall_curve,
    precision_recall_fscore_support,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from mnist_dvc.study.errors import UserError

# The deployed binary detector: the SGD with the threshold chosen for the target precision. Its model file, its
# metrics and its column of answers carry this name; `sgd` is the plain SGD at its own cutoff of 0.
THRESHOLDED_SGD = "sgd_at_target_precision"

# The binary task's scores are reported as curves and a threshold: in float32, a dot product's last digits depend on
# the CPU's BLAS kernel (measured: the threshold moved in its 7th digit under OPENBLAS_CORETYPE=Prescott), in float64
# they stay far below the digits the reports keep.
BINARY_FEATURES_DTYPE = np.float64
MAX_CURVE_POINTS = 500  # plenty for a smooth line; keeps the committed CSVs small


def is_target(labels: np.ndarray, digit: int) -> np.ndarray:
    """The binary task's labels: True where the image shows `digit`."""
    return labels == digit


def one_answer_only(target: np.ndarray) -> str | None:
    """'none' or 'all' where a yes/no target holds a single answer (nothing to learn or to choose a threshold on),
    else None."""
    positives = int(np.count_nonzero(target))
    return "none" if positives == 0 else "all" if positives == len(target) else None


def check_both_classes(target: np.ndarray, digit: int, class_name: str, part: str) -> None:
    """The binary task needs both answers among the `part` ('training' or 'test') images to learn or be scored."""
    some = one_answer_only(target)
    if some:
        raise UserError(
            f"params.yaml: binary.digit = {digit}: {some} of the {len(target)} {part} images are '{class_name}', "
            f"so the binary task cannot be learned or scored: choose a class present in the {part} set among others"
        )


MULTILABEL_NAMES = ("large", "odd")  # the multilabel task's labels, in column order


def multilabel_targets(labels: np.ndarray) -> np.ndarray:
    """The multilabel task's two labels per image: digit >= 7, digit is odd."""
    return np.column_stack([labels >= 7, labels % 2 == 1])


def rounded(value: float) -> float:
    """Metrics are rounded so that `dvc metrics diff` shows real changes, not float noise."""
    return round(float(value), 6)


def score_method(model: Any) -> str:
    """How a binary model scores its 'yes': a decision function where it has one, else probabilities."""
    return "decision_function" if hasattr(model, "decision_function") else "predict_proba"


def decision_cutoff(model: Any) -> float:
    """The score where the model's prediction turns to 'yes'."""
    return 0.0 if score_method(model) == "decision_function" else 0.5


def positive_scores(model: Any, features: np.ndarray) -> np.ndarray:
    scores = getattr(model, score_method(model))(features)
    return scores if scores.ndim == 1 else scores[:, 1]


# The multiclass models from the cheapest to the dearest to train and run (benchmarks/run_full.py on Fashion-MNIST).
CHEAPEST_FIRST = ("sgd", "forest", "knn", "svc_ovo", "svc_hog", "svc_ovr")


def accuracy(truth: np.ndarray, predicted: np.ndarray) -> float:
    return rounded(accuracy_score(truth, predicted))


def best_model(accuracy: dict[str, float]) -> str:
    """The multiclass model with the highest validation accuracy; on a tie, the cheaper one."""
    return max(accuracy, key=lambda name: (accuracy[name], -CHEAPEST_FIRST.index(name)))


def binary_metrics(truth: np.ndarray, predicted: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": rounded(accuracy_score(truth, predicted)),
        "precision": rounded(precision_score(truth, predicted, zero_division=0)),
        "recall": rounded(recall_score(truth, predicted, zero_division=0)),
        "f1": rounded(f1_score(truth, predicted, zero_division=0)),
        "roc_auc": rounded(roc_auc_score(truth, scores)),
    }


def proportion_with_interval(successes: int, trials: int) -> tuple[float | None, float | None, float | None]:
    """A proportion (accuracy, precision, recall) with its 95% Wilson score interval; None for no trials.

    Wilson's interval rather than the normal approximation: it stays inside [0, 1] and holds near 0 and 1, where
    these metrics live.
    """
    if trials == 0:
        return None, None, None
    interval = binomtest(successes, trials).proportion_ci(confidence_level=0.95, method="wilson")
    return rounded(successes / trials), rounded(interval.low), rounded(interval.high)


def threshold_for_precision(truth: np.ndarray, scores: np.ndarray, target: float) -> tuple[float, float] | None:
    """The lowest threshold whose precision reaches `target`, and the recall it leaves (None if unreachable)."""
    precision, recall, thresholds = precision_recall_curve(truth, scores)
    reached = np.flatnonzero(precision[:-1] >= target)
    if len(reached) == 0:
        return None
    return float(thresholds[reached[0]]), float(recall[reached[0]])


def thin(count: int) -> np.ndarray:
    """At most MAX_CURVE_POINTS evenly spaced indices into a curve of `count` points, ends kept."""
    return np.unique(np.linspace(0, count - 1, min(count, MAX_CURVE_POINTS)).round().astype(int))


def precision_recall_columns(truth: np.ndarray, scores: np.ndarray) -> dict[str, np.ndarray]:
    precision, recall, thresholds = precision_recall_curve(truth, scores)
    keep = thin(len(thresholds))
    return {"threshold": thresholds[keep], "precision": precision[keep], "recall": recall[keep]}


def roc_columns(truth: np.ndarray, scores: np.ndarray) -> dict[str, np.ndarray]:
    fpr, tpr, _ = roc_curve(truth, scores)
    keep = thin(len(fpr))
    return {"fpr": fpr[keep], "tpr": tpr[keep]}


def multilabel_f1(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    per_label = f1_score(truth, predicted, average=None)
    return {
        "f1_macro": rounded(f1_score(truth, predicted, average="macro")),
        "f1_weighted": rounded(f1_score(truth, predicted, average="weighted")),
        **{f"f1_{label}": rounded(score) for label, score in zip(MULTILABEL_NAMES, per_label, strict=True)},
        "exact_match": rounded(accuracy_score(truth, predicted)),
    }


def per_class_metrics(
    labels: np.ndarray, predictions: dict[str, np.ndarray], class_names: list[str]
) -> dict[str, pd.DataFrame]:
    """Precision, recall and F1 of every class (rows) for every model (columns)."""
    scores = {
        name: precision_recall_fscore_support(labels, predicted, labels=range(len(class_names)), zero_division=0)[:3]
        for name, predicted in predictions.items()
    }
    return {
        metric: pd.DataFrame({name: values[position] for name, values in scores.items()}, index=class_names)
        for position, metric in enumerate(("precision", "recall", "F1"))
    }
