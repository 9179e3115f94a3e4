"""Stage `train_binary`: 'is it a 5?' with SGD, a dummy baseline and a random forest, cross-validated."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from common import (
    FIGURES_DIR,
    METRICS_DIR,
    MODELS_DIR,
    check_folds,
    load_class_names,
    load_params,
    load_split,
    log,
    run_stage,
    save_model,
    to_features,
    write_json,
)
from evaluation import binary_metrics, decision_cutoff, is_target, rounded, score_method, threshold_for_precision
from figures import plot_precision_recall_vs_threshold, save_figure, write_binary_curves
from schema import BinaryParams, ComputeParams


def build_models(params: BinaryParams, n_jobs: int) -> dict[str, Any]:
    return {
        "sgd": SGDClassifier(**params.sgd.model_dump()),
        "dummy": DummyClassifier(**params.dummy.model_dump()),
        # Out-of-bag probabilities give honest scores for the ROC curve from a single fit.
        "forest": RandomForestClassifier(**params.forest.model_dump(), oob_score=True, n_jobs=n_jobs),
    }


def out_of_sample_scores(
    name: str, model: Any, features: np.ndarray, target: np.ndarray, folds: Any, n_jobs: int
) -> np.ndarray:
    """Scores for every training image from a model that did not see it (CV folds, or out-of-bag)."""
    if name == "forest":
        model.fit(features, target)
        return model.oob_decision_function_[:, 1]
    scores = cross_val_predict(model, features, target, cv=folds, method=score_method(model), n_jobs=n_jobs)
    return scores if scores.ndim == 1 else scores[:, 1]


def evaluate_scores(truth: np.ndarray, scores: np.ndarray, cutoff: float, target_precision: float) -> dict[str, Any]:
    metrics: dict[str, Any] = binary_metrics(truth, scores > cutoff, scores)
    reached = threshold_for_precision(truth, scores, target_precision)
    # The threshold keeps full precision: evaluate applies it to the test scores.
    metrics["threshold_at_target_precision"] = None if reached is None else reached[0]
    metrics["recall_at_target_precision"] = None if reached is None else rounded(reached[1])
    return metrics


def main() -> None:
    params = load_params("binary", BinaryParams)
    n_jobs = load_params("compute", ComputeParams).n_jobs
    images, labels = load_split("train")
    class_name = load_class_names()[params.digit]
    features, target = to_features(images), is_target(labels, params.digit)
    check_folds("binary.cv_folds", params.cv_folds, target)
    folds = StratifiedKFold(n_splits=params.cv_folds)
    log(f"'is it a {class_name}?': {target.sum()} of {len(target)} training images are positives")

    metrics: dict[str, Any] = {}
    scores: dict[str, np.ndarray] = {}
    for name, model in build_models(params, n_jobs).items():
        log(f"{name}: out-of-sample scores ({'out-of-bag' if name == 'forest' else f'{params.cv_folds}-fold CV'})")
        scores[name] = out_of_sample_scores(name, model, features, target, folds, n_jobs)
        kind = "oob" if name == "forest" else "cv"
        metrics[name] = {kind: evaluate_scores(target, scores[name], decision_cutoff(model), params.target_precision)}
        if name != "forest":
            model.fit(features, target)
        save_model(MODELS_DIR / "binary" / f"{name}.skops", model)
        log(f"{name}: {metrics[name][kind]}")
    write_json(METRICS_DIR / "binary_cv.json", {"binary": metrics})

    question = f"'is it a {class_name}?'"
    legends = {"sgd": "SGD, cross-validated", "forest": "forest, out-of-bag"}
    legends = {
        name: f"{legend} (AUC {metrics[name][kind]['roc_auc']:.3f})"
        for (name, legend), kind in zip(legends.items(), ("cv", "oob"), strict=True)
    }
    figures = FIGURES_DIR / "binary"
    curve = write_binary_curves(
        target, scores, legends, "cv", figures / "cv_", f"{question}, cross-validated / out-of-bag"
    )
    chosen = metrics["sgd"]["cv"]["threshold_at_target_precision"]
    save_figure(
        figures / "cv_precision_recall_vs_threshold.png",
        plot_precision_recall_vs_threshold(
            curve["threshold"], curve["precision"], curve["recall"], chosen, f"SGD {question}, cross-validated"
        ),
    )


if __name__ == "__main__":
    run_stage(main, __doc__)
