"""Stage `train_multiclass@<model>`: one multiclass model on all classes, named on the command line.

`dvc.yaml` runs this script once per entry of `multiclass.models` (SVC one-vs-one, one-vs-rest SVC, HOG SVC, KNN,
random forest, SGD), each a stage of its own that reads only its entry and the shared `multiclass.*` keys, so a change
to one model reruns that model alone. Writes the model and its answers: for the cross-validated training images, for
the validation images that choose among the models, and for the test images (their labels are never read here).
`evaluate` chooses the model and turns the answers into metrics.
"""

from __future__ import annotations

import mnist_dvc.runtime.numeric_profile  # noqa: F401  (first: it sets how numpy and scipy compute before they load)

import os
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import StratifiedKFold, cross_val_predict, train_test_split
from sklearn.multiclass import OneVsRestClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils import get_tags

from mnist_dvc.files.arrays import first_n, load_dataset_info, load_split, load_split_images, save_arrays, to_features
from mnist_dvc.files.models import save_model
from mnist_dvc.files.paths import ANSWERS_DIR, MODELS_DIR, SPLIT_DIR
from mnist_dvc.parallel.workers import Job, map_pieces, map_rows, run_jobs, stage_workers, workers_at_once
from mnist_dvc.runtime.memory import LIMIT_VARIABLE, check_memory, memory_limit
from mnist_dvc.runtime.messages import log
from mnist_dvc.runtime.params import (
    check_at_least,
    check_at_most,
    check_folds,
    check_stratified_split,
    fold_train_size,
    load_keys,
    load_params,
)
from mnist_dvc.runtime.runner import refused_by_estimator, run_stage
from mnist_dvc.study.errors import UserError
from mnist_dvc.study.features import Deskew, HogFeatures, ShiftAugmented
from mnist_dvc.study.metrics import accuracy
from mnist_dvc.study.schema import (
    HogSVCParams,
    MulticlassModels,
    MulticlassSGDParams,
    MulticlassSharedParams,
    SVCParams,
)


def pca(components: int | None, seed: int | None = None) -> list[tuple[str, Any]]:
    """PCA before a kernel SVC, whose cost grows with the input width: a few dozen or hundred components suffice.

    On raw pixels the covariance's eigenvectors are cheap and exact; on thousands of HOG features a randomized SVD
    (seeded) is much faster (measured: docs/design.md).
    """
    if components is None:
        return []
    solver = {"svd_solver": "covariance_eigh"} if seed is None else {"svd_solver": "randomized", "random_state": seed}
    return [("pca", PCA(n_components=components, **solver))]


def svc_pipeline(params: SVCParams, one_vs_rest: bool) -> Pipeline:
    svc = SVC(C=params.C, gamma=params.gamma)
    return Pipeline([*pca(params.pca_components), ("svc", OneVsRestClassifier(svc) if one_vs_rest else svc)])


def deskews(setting: bool | str, handwritten: bool) -> bool:
    """Whether svc_hog deskews: as set, or with `auto` only on handwriting, where a slant says nothing of the class;
    on clothes the lean of a shape is part of what it is."""
    return handwritten if setting == "auto" else bool(setting)


def hog_svc_pipeline(params: HogSVCParams, handwritten: bool) -> Pipeline:
    """Deskewed pixels, their histograms of oriented gradients beside them, then PCA and the kernel SVC."""
    hog = HogFeatures(
        orientations=params.orientations,
        pixels_per_cell=params.pixels_per_cell,
        cells_per_block=params.cells_per_block,
        keep_pixels=params.keep_pixels,
    )
    steps: list[tuple[str, Any]] = [("deskew", Deskew(enabled=deskews(params.deskew, handwritten))), ("hog", hog)]
    if params.standardize:
        steps.append(("scale", StandardScaler()))
    svc = SVC(C=params.C, gamma=params.gamma)
    return Pipeline([*steps, *pca(params.pca_components, params.random_state), ("svc", svc)])


def sgd_pipeline(params: MulticlassSGDParams) -> Pipeline:
    classifier = SGDClassifier(**params.model_dump(exclude={"standardize", "augment_shifts"}))
    return Pipeline([("scale", StandardScaler()), ("sgd", classifier)] if params.standardize else [("sgd", classifier)])


def build_model(name: str, params: Any, handwritten: bool) -> Any:
    """The estimator a `multiclass.models` entry describes, trained on shifted copies too if it asks for them.
    `handwritten`: whether the dataset's images are handwriting (for `deskew: auto`)."""
    builders = {
        "svc_hog": lambda: hog_svc_pipeline(params, handwritten),
        "svc_ovo": lambda: svc_pipeline(params, one_vs_rest=False),
        "svc_ovr": lambda: svc_pipeline(params, one_vs_rest=True),
        "knn": lambda: KNeighborsClassifier(**params.model_dump(exclude={"augment_shifts"})),
        "forest": lambda: RandomForestClassifier(**params.model_dump(exclude={"augment_shifts", "max_train_samples"})),
        "sgd": lambda: sgd_pipeline(params),
    }
    model = builders[name]()
    return shift_augmented(model) if params.augment_shifts else model


def shift_augmented(model: Any) -> Any:
    """`model` trained on shifted copies of its images too: after deskewing, where a model deskews.

    Deskewing moves each image's centre of mass to the image's centre, so copies shifted before it come out as
    their originals (measured on 1,500 digits of the sample: with the shifts before deskewing, the HOG SVC's 300
    predictions were those of the model without them, at five times the cost; after it, 3 differed).
    """
    if isinstance(model, Pipeline) and model.steps[0][0] == "deskew" and model.steps[0][1].enabled:
        return Pipeline([model.steps[0], ("shifted", ShiftAugmented(Pipeline(model.steps[1:])))])
    return ShiftAugmented(model)


def validation_split(labels: np.ndarray, params: MulticlassSharedParams) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training images the models learn from, and of those that choose among them (stratified)."""
    key = "multiclass.validation_size"
    n_validation = check_stratified_split(key, params.validation_size, labels, "training images")
    positions = np.arange(len(labels))
    return train_test_split(positions, test_size=n_validation, stratify=labels, random_state=params.validation_seed)


def input_width(model: Any, features: np.ndarray) -> int:
    """How many features reach the first step of `model` that learns from the images (a scaler, PCA or the
    classifier): the steps before it learn nothing (`requires_fit` tag false), so they run on one image to tell."""
    if isinstance(model, ShiftAugmented):
        return input_width(model.estimator, features)
    if not isinstance(model, Pipeline):
        return features.shape[1]
    for _, step in model.steps:
        if isinstance(step, ShiftAugmented | Pipeline):
            return input_width(step, features)
        if get_tags(step).requires_fit:
            break
        features = step.transform(features[:1])
    return features.shape[1]


def check_sizes(
    name: str, entry: Any, shared: MulticlassSharedParams, cv_labels: np.ndarray, n_fit: int, width: int
) -> None:
    """Every limit the data puts on the model's params, checked before it is fitted; `width`: its `input_width`."""
    subset = "multiclass.cv_max_samples" if shared.cv_max_samples is not None else None
    check_folds("multiclass.cv_folds", shared.cv_folds, cv_labels, subset)
    fold_size = fold_train_size(len(cv_labels), shared.cv_folds)
    key = f"multiclass.models.{name}"
    if name == "knn":
        check_at_most(f"{key}.n_neighbors", entry.n_neighbors, fold_size, f"a CV fold trains on {fold_size}")
    components = getattr(entry, "pca_components", None)
    if components is None:
        return
    # PCA cannot keep more components than it has images, in a CV fold or in the final fit, or features.
    check_at_most(f"{key}.pca_components", components, width, f"the model's input has {width} features")
    check_at_most(f"{key}.pca_components", components, fold_size, f"a CV fold trains on {fold_size} images")
    fitted_on = min(entry.max_train_samples or n_fit, n_fit)
    check_at_least(f"{key}.max_train_samples", fitted_on, components, f"{key}.pca_components = {components}")


def memory_needs(
    name: str, entry: Any, features: np.ndarray, width: int, rows: tuple[int, int], workers: int
) -> dict[str, int]:
    """What the stage will hold at most, by what holds it (named by its params), in bytes: the pixels, the model's
    features computed once per image (the HOG SVC's), and its two jobs (the final fit, the CV's folds one at a time)
    as far as there are workers, each holding about three copies of its training rows (the rows, a scaled or
    projected copy, the model's own) times five with shifted copies. `rows`: the images of the final fit and of a
    CV fold."""
    fit_rows, fold_rows = rows
    key = f"multiclass.models.{name}"
    needs = {"the pixels": 2 * features.nbytes}
    if name == "svc_hog":
        hog = f"{key}.orientations, pixels_per_cell, cells_per_block ({width:,} features an image)"
        needs[hog] = len(features) * width * 4
    copies = 3 * (5 if entry.augment_shifts else 1)
    what = f"{key}.augment_shifts" if entry.augment_shifts else key
    jobs = [(f"{what} (a fit)", copies * fit_rows * width * 4), (f"{what} (a CV fold)", copies * fold_rows * width * 4)]
    for job, size in sorted(jobs, key=lambda job: -job[1])[:workers]:
        needs[job] = needs.get(job, 0) + size
    return needs


def split_per_image_steps(model: Any) -> tuple[Pipeline | None, Any]:
    """A Pipeline's leading steps that learn nothing from the images (`requires_fit` tag false), and the rest.

    Those steps give an image the same features whatever they were fitted on, so the stage computes them once per
    image instead of in every CV fold and final fit, where HOG extraction was most of svc_hog's time (measured:
    docs/design.md). (None, model) when there are none, e.g. a model wrapped in
    `ShiftAugmented`.
    """
    if not isinstance(model, Pipeline):
        return None, model
    steps = model.steps
    n_per_image = next((i for i, (_, step) in enumerate(steps[:-1]) if get_tags(step).requires_fit), len(steps) - 1)
    if n_per_image == 0:
        return None, model
    return Pipeline(steps[:n_per_image]), Pipeline(steps[n_per_image:])


def fit(name: str, model: Any, features: np.ndarray, labels: np.ndarray) -> Any:
    """One job: a clone of `model` fitted on `features` and `labels`."""
    with refused_by_estimator(f"multiclass.models.{name}"):
        return clone(model).fit(features, labels)


def cross_validate(name: str, model: Any, inputs: np.ndarray, labels: np.ndarray, folds: list[Any]) -> np.ndarray:
    """One job: the model's cross-validated predictions, by scikit-learn's `cross_val_predict`, its folds one after
    the other inside the job (each fold's model is dropped once it has predicted, so memory does not grow with the
    folds). The final fit beside it is the longest job, so folds as jobs of their own gain nothing (docs/design.md)."""
    with refused_by_estimator(f"multiclass.models.{name}"):
        return cross_val_predict(model, inputs, labels, cv=folds)


def fit_and_cross_validate(
    name: str, model: Any, fit_size: int | None, fit_on: tuple[np.ndarray, np.ndarray], cv: tuple[int | None, Any]
) -> tuple[Any, np.ndarray]:
    """The model fitted on the first `fit_size` of `fit_on`'s images (None = all), and its cross-validated
    predictions for the first `cv_max_samples` of them, `cv` being (cv_max_samples, the folds).

    The final fit and the cross-validation are independent jobs for the workers, the final fit first: it is the
    longest. The model's per-image steps run first,
    once, on the images the final fit or the folds use; the saved model carries them.
    """
    features, labels = fit_on
    cv_max_samples, folds = cv
    (cv_labels,) = first_n(cv_max_samples, labels)
    fold_indices = list(folds.split(np.zeros((len(cv_labels), 1)), cv_labels))
    steps, rest = split_per_image_steps(model)
    inputs = features
    if steps is not None:
        # Only the rows the final fit or the CV folds use.
        (inputs,) = first_n(None if None in (fit_size, cv_max_samples) else max(fit_size, cv_max_samples), inputs)
        log(f"{name}: {', '.join(steps.named_steps)} of {len(inputs)} images, once")
        with refused_by_estimator(f"multiclass.models.{name}"):
            steps = clone(steps).fit(inputs[:1])  # they learn nothing: one image sets what they check
            inputs = map_rows(steps.transform, inputs)
    final_inputs, final_labels = first_n(fit_size, inputs, labels)
    (cv_inputs,) = first_n(cv_max_samples, inputs)
    jobs: list[Job] = [
        (f"{name}: final fit on {len(final_labels)} images", fit, (name, rest, final_inputs, final_labels)),
        (
            f"{name}: {len(fold_indices)}-fold CV on {len(cv_labels)} images",
            cross_validate,
            (name, rest, cv_inputs, cv_labels, fold_indices),
        ),
    ]
    fitted, predicted = run_jobs(jobs)
    return (fitted if steps is None else Pipeline(steps.steps + fitted.steps)), predicted


def load_entry(name: str) -> Any:
    """The params of `multiclass.models.<name>`, the model this stage trains."""
    key = f"multiclass.models.{name}"
    if name not in MulticlassModels.model_fields:
        raise UserError(f"params.yaml: {key}: unknown model (allowed: {', '.join(MulticlassModels.model_fields)})")
    # The key spelled out in the call: test_dvc_yaml reads it there to check the stage's params in dvc.yaml.
    entry = load_params(f"multiclass.models.{name}", MulticlassModels.model_fields[name].annotation)
    if entry is None:
        raise UserError(f"params.yaml: {key} is empty: give the model's params, or delete the entry to skip it")
    return entry


def main(name: str) -> None:
    entry = load_entry(name)
    shared = load_keys("multiclass", MulticlassSharedParams)
    images, labels = load_split("train")
    features = to_features(images)
    learn, choose = validation_split(labels, shared)
    fit_features, fit_labels = features[learn], labels[learn]
    cv_rows, cv_labels = first_n(shared.cv_max_samples, learn, fit_labels)
    info = load_dataset_info(SPLIT_DIR)
    if name == "svc_hog" and entry.deskew == "auto":
        kind = "handwriting" if info.handwritten else "not handwriting"
        log(f"svc_hog: deskew auto: {'on' if info.handwritten else 'off'} ({info.name}'s images are {kind})")
    estimator = build_model(name, entry, info.handwritten)
    fit_size = getattr(entry, "max_train_samples", None)
    width = input_width(estimator, features)
    check_sizes(name, entry, shared, cv_labels, len(fit_labels), width)
    test_features = to_features(load_split_images("test"))  # the images only: no training stage reads a test label
    limit = memory_limit(os.environ.get(LIMIT_VARIABLE))
    n_fit = min(fit_size or len(fit_labels), len(fit_labels))
    rows = (n_fit, fold_train_size(len(cv_labels), shared.cv_folds))
    check_memory(memory_needs(name, entry, features, width, rows, workers_at_once()), limit)
    log(f"{name}: learns from {n_fit} of {len(fit_labels)} training images; {len(choose)} choose the best model")

    folds = StratifiedKFold(n_splits=shared.cv_folds)
    fitted, cv_predicted = fit_and_cross_validate(
        name, estimator, fit_size, (fit_features, fit_labels), (shared.cv_max_samples, folds)
    )
    answers = map_pieces(
        f"{name}: validation and test images", fitted.predict, np.concatenate([features[choose], test_features])
    )
    validation_predicted, test_predicted = answers[: len(choose)], answers[len(choose) :]
    cv, validation = accuracy(cv_labels, cv_predicted), accuracy(labels[choose], validation_predicted)
    log(f"{name}: CV accuracy {cv:.4f}, validation {validation:.4f}")

    # Outputs only once the model is fitted and has answered: a refused param leaves nothing behind.
    save_model(MODELS_DIR / "multiclass" / f"{name}.skops", fitted)
    save_arrays(
        ANSWERS_DIR / "multiclass" / name,
        {
            "cv_images": cv_rows,  # which training images were cross-validated, and what the model said of each
            "cv_predictions": cv_predicted,
            "validation_images": choose,
            "validation_predictions": validation_predicted,
            "test_predictions": test_predicted,
        },
    )


if __name__ == "__main__":
    run_stage(
        main,
        __doc__,
        workers=stage_workers,
        arguments={"name": "the entry of multiclass.models to train (svc_hog, knn, ...)"},
    )
