"""Stage `train_multiclass`: SVC (one-vs-one), one-vs-rest SVC, random forest and SGD on all classes."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import accuracy_score, confusion_matrix
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from mnist_dvc.arrays import first_n, load_class_names, load_split, to_features
from mnist_dvc.figures import plot_confusion_matrices, plot_digit_grid, save_figure
from mnist_dvc.files import write_json
from mnist_dvc.metrics import best_model, rounded
from mnist_dvc.models import save_model
from mnist_dvc.params import check_at_least, check_at_most, check_folds, fold_train_size, load_params
from mnist_dvc.paths import FIGURES_DIR, METRICS_DIR, MODELS_DIR
from mnist_dvc.runner import log, refused_by_estimator, run_stage
from mnist_dvc.schema import MulticlassModels, MulticlassParams, SVCParams


def svc_pipeline(params: SVCParams, one_vs_rest: bool) -> Pipeline:
    svc = SVC(C=params.C, gamma=params.gamma)
    steps: list[tuple[str, Any]] = []
    if params.pca_components is not None:
        # The kernel's cost grows with the input width: 50 components keep the accuracy at a fraction of it.
        steps.append(("pca", PCA(n_components=params.pca_components, svd_solver="covariance_eigh")))
    steps.append(("svc", OneVsRestClassifier(svc) if one_vs_rest else svc))
    return Pipeline(steps)


def build_models(params: MulticlassParams) -> dict[str, tuple[Any, int | None]]:
    """Each enabled model with the number of training images it is fitted on (None = all)."""
    models: dict[str, tuple[Any, int | None]] = {}
    chosen = params.models
    if chosen.svc_ovo is not None:
        models["svc_ovo"] = (svc_pipeline(chosen.svc_ovo, False), chosen.svc_ovo.max_train_samples)
    if chosen.svc_ovr is not None:
        models["svc_ovr"] = (svc_pipeline(chosen.svc_ovr, True), chosen.svc_ovr.max_train_samples)
    if chosen.forest is not None:
        models["forest"] = (RandomForestClassifier(**chosen.forest.model_dump()), None)
    if chosen.sgd is not None:
        classifier = SGDClassifier(**chosen.sgd.model_dump(exclude={"standardize"}))
        steps = [("sgd", classifier)]
        if chosen.sgd.standardize:
            steps.insert(0, ("scale", StandardScaler()))
        models["sgd"] = (Pipeline(steps), None)
    return models


def check_sizes(params: MulticlassParams, cv_labels: np.ndarray, n_train: int) -> None:
    """Every limit the data puts on the params, checked before the first model is fitted."""
    subset = "multiclass.cv_max_samples" if params.cv_max_samples is not None else None
    check_folds("multiclass.cv_folds", params.cv_folds, cv_labels, subset)
    fold_size = fold_train_size(len(cv_labels), params.cv_folds)
    for name in ("svc_ovo", "svc_ovr"):
        svc = getattr(params.models, name)
        if svc is None or svc.pca_components is None:
            continue
        key = f"multiclass.models.{name}"
        # PCA cannot keep more components than the images it is fitted on, in a CV fold or in the final fit.
        check_at_most(f"{key}.pca_components", svc.pca_components, fold_size, f"a CV fold trains on {fold_size} images")
        fit_size = min(svc.max_train_samples or n_train, n_train)
        check_at_least(
            f"{key}.max_train_samples", fit_size, svc.pca_components, f"{key}.pca_components = {svc.pca_components}"
        )


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


def main() -> None:
    params = load_params("multiclass", MulticlassParams)
    images, labels = load_split("train")
    class_names = load_class_names()
    features = to_features(images)
    cv_images, cv_features, cv_labels = first_n(params.cv_max_samples, images, features, labels)
    check_sizes(params, cv_labels, len(labels))
    folds = StratifiedKFold(n_splits=params.cv_folds)

    metrics: dict[str, Any] = {}
    cv_predictions: dict[str, np.ndarray] = {}
    models = build_models(params)
    for name, (model, fit_size) in models.items():
        log(f"{name}: {params.cv_folds}-fold CV on {len(cv_labels)} images")
        with refused_by_estimator(f"multiclass.models.{name}"):
            cv_predictions[name] = cross_val_predict(model, cv_features, cv_labels, cv=folds)
            metrics[name] = {"cv": {"accuracy": rounded(accuracy_score(cv_labels, cv_predictions[name]))}}
            fit_features, fit_labels = first_n(fit_size, features, labels)
            log(f"{name}: CV accuracy {metrics[name]['cv']['accuracy']:.4f}; fitting on {len(fit_labels)} images")
            model.fit(fit_features, fit_labels)

    # Outputs only once every model is fitted: a refused param leaves nothing behind.
    for name, (model, _) in models.items():
        save_model(MODELS_DIR / "multiclass" / f"{name}.skops", model)
    write_json(METRICS_DIR / "multiclass_cv.json", {"multiclass": metrics})

    best = best_model({name: metrics[name]["cv"]["accuracy"] for name in metrics})
    matrix = confusion_matrix(cv_labels, cv_predictions[best], labels=range(len(class_names)))
    figures = FIGURES_DIR / "multiclass"
    title = f"{MulticlassModels.describe(best)}, cross-validated (best by CV accuracy)"
    save_figure(figures / "cv_confusion_matrices.png", plot_confusion_matrices(matrix, class_names, title))
    pair = most_confused_pair(matrix)
    save_figure(
        figures / "cv_most_confused_pair.png",
        plot_confused_pair(cv_images, cv_labels, cv_predictions[best], pair, class_names),
    )


if __name__ == "__main__":
    run_stage(main, __doc__)
