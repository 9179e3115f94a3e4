"""Stage `train_multilabel`: k-nearest neighbours predicting two labels per image (>= 7, odd), and the chapter's
multioutput KNN that removes noise from images.

Writes the models, the cross-validated metrics, and the models' answers for the test images (their labels are never
read here): the two labels of each, and each image with noise added and cleaned. `evaluate` scores them.
"""

from __future__ import annotations

import mnist_dvc.runtime.numeric_profile  # noqa: F401  (first: it sets how numpy and scipy compute before they load)

import numpy as np
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier

from mnist_dvc.files.arrays import first_n, load_split, load_split_images, save_arrays, to_features
from mnist_dvc.files.disk import write_json
from mnist_dvc.files.models import save_model
from mnist_dvc.files.paths import ANSWERS_DIR, METRICS_DIR, MODELS_DIR
from mnist_dvc.parallel.workers import run_jobs, stage_workers
from mnist_dvc.runtime.messages import log
from mnist_dvc.runtime.params import check_at_most, fold_train_size, load_params
from mnist_dvc.runtime.runner import refused_by_estimator, run_stage
from mnist_dvc.study.denoise import TEST_STREAM, TRAIN_STREAM, as_features, clean_targets, noisy_pixels, noisy_sums
from mnist_dvc.study.metrics import multilabel_f1, multilabel_targets
from mnist_dvc.study.schema import DenoiseParams, KNNParams, MultilabelParams

IMAGES_CLEANED_AT_ONCE = 250  # test images cleaned at once, to bound the denoiser's memory (docs/design.md)


def build_model(params: KNNParams) -> KNeighborsClassifier:
    return KNeighborsClassifier(**params.model_dump())


def check_sizes(params: MultilabelParams, n_samples: int) -> None:
    """Every limit the data puts on the params, checked before the model is fitted."""
    subset = " (multilabel.cv_max_samples)" if params.cv_max_samples is not None else ""
    check_at_most(
        "multilabel.cv_folds", params.cv_folds, n_samples, f"it cross-validates on {n_samples} images{subset}"
    )
    fold_size = fold_train_size(n_samples, params.cv_folds)
    check_at_most(
        "multilabel.knn.n_neighbors", params.knn.n_neighbors, fold_size, f"a CV fold trains on {fold_size} images"
    )


def fit_denoiser(params: DenoiseParams, images: np.ndarray) -> KNeighborsClassifier:
    """The chapter's multioutput classifier: noisy pixels in, the 784 clean pixel values out."""
    (clean,) = first_n(params.max_train_samples, images)
    check_at_most("multilabel.denoise.n_neighbors", params.n_neighbors, len(clean), f"it learns from {len(clean)}")
    log(f"denoiser: learning to clean {len(clean)} images with noise up to {params.noise}")
    denoiser = KNeighborsClassifier(n_neighbors=params.n_neighbors)
    with refused_by_estimator("multilabel.denoise"):
        return denoiser.fit(noisy_pixels(clean, params.noise, params.seed, TRAIN_STREAM), clean_targets(clean))


def clean_images(denoiser: KNeighborsClassifier, noisy: np.ndarray) -> np.ndarray:
    """The denoiser's clean pixels (0..255), in chunks: for 784 outputs, scikit-learn's KNN predicts through class
    probabilities of every output, so its memory grows with the images it predicts at once."""
    chunks = range(0, len(noisy), IMAGES_CLEANED_AT_ONCE)
    return np.concatenate([denoiser.predict(noisy[start : start + IMAGES_CLEANED_AT_ONCE]) for start in chunks])


def test_answers(
    model: KNeighborsClassifier, denoiser: KNeighborsClassifier, params: DenoiseParams, images: np.ndarray
) -> dict[str, np.ndarray]:
    """The two labels the KNN gives each test image, and the test images with noise added and cleaned: each
    model's predictions as one job."""
    noisy = noisy_sums(images, params.noise, params.seed, TEST_STREAM)
    jobs = [
        ("denoiser: the test images", clean_images, (denoiser, as_features(noisy))),
        ("knn: the test images", model.predict, (to_features(images),)),
    ]
    cleaned, labels = run_jobs(jobs)
    return {"test_predictions": labels, "test_noisy": noisy, "test_cleaned": cleaned}


def main() -> None:
    params = load_params("multilabel", MultilabelParams)
    images, labels = load_split("train")
    features, targets = to_features(images), multilabel_targets(labels)
    model = build_model(params.knn)

    cv_features, cv_targets = first_n(params.cv_max_samples, features, targets)
    check_sizes(params, len(cv_targets))
    log(f"knn: {params.cv_folds}-fold CV on {len(cv_targets)} images")
    with refused_by_estimator("multilabel.knn"):
        predicted = cross_val_predict(model, cv_features, cv_targets, cv=KFold(n_splits=params.cv_folds))
        model.fit(features, targets)
    metrics = multilabel_f1(cv_targets, predicted)
    log(f"knn: CV {metrics}")

    denoiser = fit_denoiser(params.denoise, images)
    answers = test_answers(model, denoiser, params.denoise, load_split_images("test"))

    save_model(MODELS_DIR / "multilabel" / "knn.skops", model)
    save_model(MODELS_DIR / "multilabel" / "denoiser.skops", denoiser)
    save_arrays(ANSWERS_DIR / "multilabel", answers)
    write_json(METRICS_DIR / "multilabel_cv.json", {"multilabel": {"knn": {"cv": metrics}}})


if __name__ == "__main__":
    run_stage(main, __doc__, workers=stage_workers)
