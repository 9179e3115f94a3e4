"""Stage `train_multiclass`: SVC (one-vs-one), one-vs-rest SVC, HOG SVC, KNN, random forest and SGD on all classes.

Writes the models with a manifest naming them and the one chosen on the validation images, their cross-validated and
validation accuracy, and every CV prediction (the data behind the `report` stage's error analysis).
"""

from __future__ import annotations

import mnist_dvc.numeric_profile  # noqa: F401  (first: it sets how numpy and scipy compute before they load)

import os
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import accuracy_score
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.multiclass import OneVsRestClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils import get_tags

from mnist_dvc.arrays import first_n, load_dataset_info, load_split, to_features
from mnist_dvc.features import Deskew, HogFeatures, ShiftAugmented
from mnist_dvc.files import write_csv, write_json
from mnist_dvc.manifest import Manifest, write_manifest
from mnist_dvc.memory import LIMIT_VARIABLE, check_memory, memory_limit
from mnist_dvc.messages import UserError, log
from mnist_dvc.metrics import best_model, rounded
from mnist_dvc.models import save_model
from mnist_dvc.params import check_at_least, check_at_most, check_folds, fold_train_size, load_params
from mnist_dvc.paths import METRICS_DIR, MODELS_DIR, MULTICLASS_CV_FILE, SPLIT_DIR
from mnist_dvc.runner import refused_by_estimator, run_stage
from mnist_dvc.schema import HogSVCParams, MulticlassParams, MulticlassSGDParams, SVCParams
from mnist_dvc.workers import Job, run_jobs, workers_at_once


def pca(components: int | None, seed: int | None = None) -> list[tuple[str, Any]]:
    """PCA before a kernel SVC, whose cost grows with the input width: a few dozen or hundred components suffice.

    On raw pixels the covariance's eigenvectors are cheap and exact; on thousands of HOG features a randomized SVD
    (seeded) takes a sixth of the time (measured: 0.7 s against 4.3 s for 200 of 2,809 features on 3,600 images).
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


def build_models(params: MulticlassParams, handwritten: bool) -> dict[str, tuple[Any, int | None]]:
    """Each enabled model with the number of training images it is fitted on (None = all)."""
    return {
        name: (build_model(name, entry, handwritten), getattr(entry, "max_train_samples", None))
        for name, entry in params.models
        if entry is not None
    }


def validation_split(labels: np.ndarray, params: MulticlassParams) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training images the models learn from, and of those that choose among them (stratified)."""
    n_classes = len(np.unique(labels))
    n_validation = int(np.ceil(params.validation_size * len(labels)))
    if n_validation < n_classes or len(labels) - n_validation < n_classes:
        raise UserError(
            f"params.yaml: multiclass.validation_size = {params.validation_size} holds out {n_validation} of "
            f"{len(labels)} training images: each side needs at least {n_classes} (one per class)"
        )
    if np.bincount(labels)[np.unique(labels)].min() < 2:
        raise UserError("data/split: a class has a single training image, which cannot be on both sides of the split")
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
    params: MulticlassParams,
    models: dict[str, tuple[Any, int | None]],
    cv_labels: np.ndarray,
    n_fit: int,
    widths: dict[str, int],
) -> None:
    """Every limit the data puts on the params, checked before the first model is fitted; `widths`: each model's
    `input_width`."""
    subset = "multiclass.cv_max_samples" if params.cv_max_samples is not None else None
    check_folds("multiclass.cv_folds", params.cv_folds, cv_labels, subset)
    fold_size = fold_train_size(len(cv_labels), params.cv_folds)
    if params.models.knn is not None:
        neighbours = params.models.knn.n_neighbors
        check_at_most("multiclass.models.knn.n_neighbors", neighbours, fold_size, f"a CV fold trains on {fold_size}")
    for name, (_, fit_size) in models.items():
        entry = getattr(params.models, name)
        if getattr(entry, "pca_components", None) is None:
            continue
        key = f"multiclass.models.{name}"
        # PCA cannot keep more components than it has images, in a CV fold or in the final fit, or features.
        components = entry.pca_components
        width = widths[name]
        check_at_most(f"{key}.pca_components", components, width, f"the model's input has {width} features")
        check_at_most(f"{key}.pca_components", components, fold_size, f"a CV fold trains on {fold_size} images")
        fitted_on = min(fit_size or n_fit, n_fit)
        check_at_least(f"{key}.max_train_samples", fitted_on, components, f"{key}.pca_components = {components}")


def memory_needs(
    params: MulticlassParams,
    models: dict[str, tuple[Any, int | None]],
    features: np.ndarray,
    widths: dict[str, int],
    n_fit: int,
    workers: int,
) -> dict[str, int]:
    """What the stage will hold at most, by what holds it (named by its params), in bytes: the pixels, each model's
    features computed once per image (the HOG SVC's), and the `workers` largest jobs at once, each holding about
    three copies of its training rows (the rows, a scaled or projected copy, the model's own) times five with
    shifted copies."""
    rows = len(features)
    n_cv = min(params.cv_max_samples or n_fit, n_fit)
    fold_rows = fold_train_size(n_cv, params.cv_folds)
    needs = {"the pixels": 2 * features.nbytes}
    jobs = []
    for name, (_, fit_size) in models.items():
        entry = getattr(params.models, name)
        key = f"multiclass.models.{name}"
        width = widths[name]
        if name == "svc_hog":
            hog = f"{key}.orientations, pixels_per_cell, cells_per_block ({width:,} features an image)"
            needs[hog] = rows * width * 4
        copies = 3 * (5 if entry.augment_shifts else 1)
        fit_rows = min(fit_size or n_fit, n_fit)
        what = f"{key}.augment_shifts" if entry.augment_shifts else key
        jobs += [
            (f"{what} (a fit)", copies * fit_rows * width * 4),
            (f"{what} (a CV fold)", copies * fold_rows * width * 4),
        ]
    for what, size in sorted(jobs, key=lambda job: -job[1])[:workers]:
        needs[what] = needs.get(what, 0) + size
    return needs


def split_per_image_steps(model: Any) -> tuple[Pipeline | None, Any]:
    """A Pipeline's leading steps that learn nothing from the images (`requires_fit` tag false), and the rest.

    Those steps give an image the same features whatever they were fitted on, so the stage computes them once per
    image instead of in every CV fold and final fit: with skimage's `hog`, HOG extraction was two thirds of svc_hog's
    time (1.9 s of 2.9 s per fold on the sample). (None, model) when there are none, e.g. a model wrapped in
    `ShiftAugmented`.
    """
    if not isinstance(model, Pipeline):
        return None, model
    steps = model.steps
    n_per_image = next((i for i, (_, step) in enumerate(steps[:-1]) if get_tags(step).requires_fit), len(steps) - 1)
    if n_per_image == 0:
        return None, model
    return Pipeline(steps[:n_per_image]), Pipeline(steps[n_per_image:])


def fit_and_predict(name: str, model: Any, features: np.ndarray, labels: np.ndarray, images: np.ndarray) -> tuple:
    """One job: a clone of `model` fitted on `features` and `labels`, and its predictions for `images`."""
    with refused_by_estimator(f"multiclass.models.{name}"):
        fitted = clone(model).fit(features, labels)
        return fitted, fitted.predict(images)


def fit_and_predict_fold(
    name: str, model: Any, inputs: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray
) -> np.ndarray:
    """One CV job, its predictions only: its rows are copied here, in the worker, and its fitted model is dropped
    when it returns, so a fold's memory lives only while it runs (measured with 100 folds of the KNN on shifted copies
    of the sample: 5.5 GiB at the peak when every fold's model was kept until all were done, 0.5 GiB now)."""
    return fit_and_predict(name, model, inputs[train], labels[train], inputs[test])[1]


def fit_everything(
    models: dict[str, tuple[Any, int | None]],
    fit_on: tuple[np.ndarray, np.ndarray],
    validation_images: np.ndarray,
    cv: tuple[int | None, StratifiedKFold],
) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Every model's final fit with its validation predictions, and its cross-validated predictions.

    The final fits and the CV folds of all models are independent jobs for the workers, the final fits first: they
    are the longest. The CV predictions are assembled fold by fold, as `cross_val_predict` does. Each model's
    per-image steps run first, once, on its training and validation images; the saved model carries them.
    """
    fit_features, fit_labels = fit_on
    cv_max_samples, folds = cv
    (cv_labels,) = first_n(cv_max_samples, fit_labels)
    fold_indices = list(folds.split(np.zeros((len(cv_labels), 1)), cv_labels))
    per_image: dict[str, Pipeline] = {}
    finals: list[Job] = []
    fold_jobs: list[Job] = []
    for name, (model, fit_size) in models.items():
        steps, rest = split_per_image_steps(model)
        inputs, validation_inputs = fit_features, validation_images
        if steps is not None:
            # Only the rows the final fit or the CV folds use.
            (inputs,) = first_n(None if None in (fit_size, cv_max_samples) else max(fit_size, cv_max_samples), inputs)
            log(f"{name}: {', '.join(steps.named_steps)} of {len(inputs) + len(validation_images)} images, once")
            per_image[name] = steps = clone(steps)
            with refused_by_estimator(f"multiclass.models.{name}"):
                inputs, validation_inputs = steps.fit_transform(inputs), steps.transform(validation_images)
        final_features, final_labels = first_n(fit_size, inputs, fit_labels)
        finals.append(
            (f"{name}: final fit", fit_and_predict, (name, rest, final_features, final_labels, validation_inputs))
        )
        (cv_inputs,) = first_n(cv_max_samples, inputs)
        fold_jobs += [
            (f"{name}: CV fold {i}", fit_and_predict_fold, (name, rest, cv_inputs, cv_labels, *fold))
            for i, fold in enumerate(fold_indices, start=1)
        ]
    log(f"{len(finals)} final fits and {len(fold_jobs)} CV folds")
    results = run_jobs(finals + fold_jobs)
    final_results, fold_results = results[: len(finals)], iter(results[len(finals) :])
    fitted = {
        name: Pipeline(per_image[name].steps + model.steps) if name in per_image else model
        for name, (model, _) in zip(models, final_results, strict=True)
    }
    validation = {name: predicted for name, (_, predicted) in zip(models, final_results, strict=True)}
    cv_predictions = {}
    for name in models:
        predicted = np.empty_like(cv_labels)
        for _, test in fold_indices:
            predicted[test] = next(fold_results)
        cv_predictions[name] = predicted
    return fitted, validation, cv_predictions


def main() -> None:
    params = load_params("multiclass", MulticlassParams)
    images, labels = load_split("train")
    features = to_features(images)
    learn, choose = validation_split(labels, params)
    fit_features, fit_labels = features[learn], labels[learn]
    cv_rows, cv_labels = first_n(params.cv_max_samples, learn, fit_labels)
    info = load_dataset_info(SPLIT_DIR)
    if params.models.svc_hog is not None and params.models.svc_hog.deskew == "auto":
        kind = "handwriting" if info.handwritten else "not handwriting"
        log(f"svc_hog: deskew auto: {'on' if info.handwritten else 'off'} ({info.name}'s images are {kind})")
    models = build_models(params, info.handwritten)
    widths = {name: input_width(model, features) for name, (model, _) in models.items()}
    check_sizes(params, models, cv_labels, len(fit_labels), widths)
    limit = memory_limit(os.environ.get(LIMIT_VARIABLE))
    check_memory(memory_needs(params, models, features, widths, len(fit_labels), workers_at_once()), limit)
    folds = StratifiedKFold(n_splits=params.cv_folds)
    log(f"{len(fit_labels)} training images to learn from, {len(choose)} to choose the best model")

    fitted, validation, cv_predictions = fit_everything(
        models, (fit_features, fit_labels), features[choose], (params.cv_max_samples, folds)
    )
    metrics = {
        name: {
            "cv": {"accuracy": rounded(accuracy_score(cv_labels, cv_predictions[name]))},
            "validation": {"accuracy": rounded(accuracy_score(labels[choose], validation[name]))},
        }
        for name in models
    }
    for name, scores in metrics.items():
        log(f"{name}: CV accuracy {scores['cv']['accuracy']:.4f}, validation {scores['validation']['accuracy']:.4f}")
    best = best_model({name: metrics[name]["validation"]["accuracy"] for name in metrics})

    # Outputs only once every model is fitted: a refused param leaves nothing behind.
    for name, model in fitted.items():
        save_model(MODELS_DIR / "multiclass" / f"{name}.skops", model)
    write_manifest(Manifest(models=list(fitted), chosen=best, validation_images=len(choose)))
    write_json(METRICS_DIR / "multiclass_cv.json", {"multiclass": metrics})
    # The data behind the report's error analysis: which training image each CV prediction is for.
    write_csv(MULTICLASS_CV_FILE, {"image": cv_rows, "truth": cv_labels, **cv_predictions})
    log(f"best by validation accuracy: {best}")


if __name__ == "__main__":
    run_stage(main, __doc__)
