"""Stage `train_multilabel`: k-nearest neighbours predicting two labels per image (>= 7, odd)."""

from __future__ import annotations

from sklearn.model_selection import KFold, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier

from common import (
    METRICS_DIR,
    MODELS_DIR,
    check_at_most,
    first_n,
    fold_train_size,
    load_params,
    load_split,
    log,
    run_stage,
    save_model,
    to_features,
    write_json,
)
from evaluation import multilabel_f1, multilabel_targets
from schema import ComputeParams, KNNParams, MultilabelParams


def build_model(params: KNNParams, n_jobs: int) -> KNeighborsClassifier:
    return KNeighborsClassifier(**params.model_dump(), n_jobs=n_jobs)


def main() -> None:
    params = load_params("multilabel", MultilabelParams)
    n_jobs = load_params("compute", ComputeParams).n_jobs
    images, labels = load_split("train")
    features, targets = to_features(images), multilabel_targets(labels)
    model = build_model(params.knn, n_jobs)

    cv_features, cv_targets = first_n(params.cv_max_samples, features, targets)
    fold_size = fold_train_size(len(cv_targets), params.cv_folds)
    check_at_most(
        "multilabel.knn.n_neighbors", params.knn.n_neighbors, fold_size, f"a CV fold trains on {fold_size} images"
    )
    log(f"knn: {params.cv_folds}-fold CV on {len(cv_targets)} images")
    predicted = cross_val_predict(model, cv_features, cv_targets, cv=KFold(n_splits=params.cv_folds))
    metrics = multilabel_f1(cv_targets, predicted)
    log(f"knn: CV {metrics}")
    write_json(METRICS_DIR / "multilabel_cv.json", {"multilabel": {"knn": {"cv": metrics}}})

    model.fit(features, targets)
    save_model(MODELS_DIR / "multilabel" / "knn.skops", model)


if __name__ == "__main__":
    run_stage(main, __doc__)
