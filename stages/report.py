"""Stage `report`: every figure under reports/figures/ and reports/report.md, from what the other stages wrote.

Nothing here trains or scores a model: the stage reads the metrics, the per-image predictions and scores, the data
behind the curves and the images, and draws. A change to a figure or to the report's wording reruns this stage only.
It reads the whole of params.yaml (to print it, and so a misspelled section stops the run).
"""

from __future__ import annotations

import mnist_dvc.runtime.numeric_profile  # noqa: F401  (first: it sets how numpy and scipy compute before they load)

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix

from mnist_dvc.files.arrays import load_array, load_class_names, load_split
from mnist_dvc.files.curves import CURVE_MODELS, point_at_threshold, read_curve
from mnist_dvc.files.disk import json_number, json_value, read_csv, read_json, write_bytes
from mnist_dvc.files.manifest import Manifest, read_manifest
from mnist_dvc.files.paths import (
    BINARY_CV_SCORES_FILE,
    DATA_OVERVIEW_FILE,
    DENOISED_FILE,
    FIGURES_DIR,
    METRICS_DIR,
    MULTICLASS_CV_FILE,
    PREDICTIONS_DIR,
    REPORT_FILE,
    display_path,
)
from mnist_dvc.report.figures import (
    most_confused_pair,
    plot_class_counts,
    plot_confused_pair,
    plot_confusion_matrices,
    plot_curves,
    plot_denoising,
    plot_digit_grid,
    plot_misclassified,
    plot_one_digit,
    plot_precision_recall_vs_threshold,
    save_figure,
)
from mnist_dvc.report.markdown import (
    BINARY_NAMES,
    binary_section,
    data_section,
    multiclass_section,
    multilabel_section,
    render_report,
)
from mnist_dvc.runtime.params import binary_class_name, load_all_params
from mnist_dvc.runtime.runner import run_stage
from mnist_dvc.study.errors import UserError
from mnist_dvc.study.features import SIDE
from mnist_dvc.study.metrics import THRESHOLDED_SGD, threshold_for_precision
from mnist_dvc.study.schema import AllParams, MulticlassModels

Curves = dict[str, dict[str, np.ndarray]]  # (part, kind, model) as "cv/pr/sgd" -> the curve's columns


@dataclass(frozen=True, kw_only=True)
class Inputs:
    """Everything the report shows, read and checked before the first figure is drawn."""

    params: AllParams
    class_names: list[str]
    train: tuple[np.ndarray, np.ndarray]  # images, labels
    test: tuple[np.ndarray, np.ndarray]
    overview: dict[str, Any]
    training: dict[str, Any]  # each task's training-side metrics
    tested: dict[str, Any]  # test.json
    manifest: Manifest
    curves: Curves
    cv_scores: dict[str, np.ndarray]  # truth and SGD's cross-validated score of every training image
    cv_predictions: dict[str, np.ndarray]  # the training images cross-validated, and every model's predictions
    binary: dict[str, np.ndarray]  # test predictions
    multiclass: dict[str, np.ndarray]
    denoised: np.ndarray  # (2, n, 28, 28): the first test images noisy, and cleaned


def read_metrics() -> tuple[dict[str, Any], dict[str, Any]]:
    """The training stages' metrics by task, and the test set's: every file checked to hold its task."""
    training = {}
    for task in ("binary", "multiclass", "multilabel"):
        path = METRICS_DIR / f"{task}_cv.json"
        training[task] = json_value(path, read_json(path), task)
    path = METRICS_DIR / "test.json"
    test = read_json(path)
    for task in ("binary", "multiclass", "multilabel", "multioutput"):
        json_value(path, test, task)
    return training, test


def check_rows(path: Path, column: np.ndarray, expected: int) -> None:
    if len(column) != expected:
        raise UserError(f"{display_path(path)}: {len(column)} rows for {expected} images (run `dvc repro`)")


def read_inputs() -> Inputs:
    params = load_all_params()
    class_names = load_class_names()
    train, test = load_split("train"), load_split("test")
    binary_class_name(params.binary.digit, class_names)
    training, tested = read_metrics()
    manifest = read_manifest()
    curves = {
        f"{part}/{kind}/{model}": read_curve(part, kind, model)
        for part in ("cv", "test")
        for kind in ("pr", "roc")
        for model in CURVE_MODELS
    }
    cv_scores = read_csv(BINARY_CV_SCORES_FILE, ("truth", "sgd"))
    check_rows(BINARY_CV_SCORES_FILE, cv_scores["truth"], len(train[1]))
    cv_predictions = read_csv(MULTICLASS_CV_FILE, ("image", "truth", manifest.chosen))
    rows = cv_predictions["image"]
    if len(rows) == 0 or rows.min() < 0 or rows.max() >= len(train[1]):
        raise UserError(f"{display_path(MULTICLASS_CV_FILE)}: image numbers out of range (run `dvc repro`)")
    binary = read_csv(PREDICTIONS_DIR / "binary.csv", ("truth", *BINARY_NAMES, THRESHOLDED_SGD))
    multiclass = read_csv(PREDICTIONS_DIR / "multiclass.csv", ("truth", *manifest.models))
    for name, columns in (("binary.csv", binary), ("multiclass.csv", multiclass)):
        check_rows(PREDICTIONS_DIR / name, columns["truth"], len(test[1]))
    denoised = load_array(DENOISED_FILE, np.float32, 4)
    if denoised.shape[0] != 2 or denoised.shape[2:] != (SIDE, SIDE):
        raise UserError(
            f"{display_path(DENOISED_FILE)}: expected noisy and cleaned {SIDE}x{SIDE} images (run `dvc repro`)"
        )
    overview = read_json(DATA_OVERVIEW_FILE)
    counts = json_value(DATA_OVERVIEW_FILE, overview, "class_counts")
    for part in ("train", "test"):
        json_value(DATA_OVERVIEW_FILE, counts, part)
    return Inputs(
        params=params,
        class_names=class_names,
        train=train,
        test=test,
        overview=overview,
        training=training,
        tested=tested,
        manifest=manifest,
        curves=curves,
        cv_scores=cv_scores,
        cv_predictions=cv_predictions,
        binary=binary,
        multiclass=multiclass,
        denoised=denoised,
    )


def data_figures(inputs: Inputs) -> None:
    images, labels = inputs.train
    folder = FIGURES_DIR / "data"
    save_figure(folder / "first_image.png", plot_one_digit(images[0], inputs.class_names[labels[0]]))
    save_figure(folder / "first_100_images.png", plot_digit_grid(images[:100], "the first 100 training images"))
    counts = inputs.overview["class_counts"]
    save_figure(folder / "class_counts.png", plot_class_counts(counts["train"], counts["test"]))


def curve_figures(
    curves: Curves, part: str, legends: dict[str, str], title: str, point: dict[str, float] | None, stem: str
) -> None:
    """Precision-recall and ROC figures of SGD and the forest, from the curves' data; SGD's threshold marked."""
    pr = {legends[model]: curves[f"{part}/pr/{model}"] for model in CURVE_MODELS}
    roc = {legends[model]: curves[f"{part}/roc/{model}"] for model in CURVE_MODELS}
    pr_curves = {label: (curve["recall"], curve["precision"]) for label, curve in pr.items()}
    roc_curves = {label: (curve["fpr"], curve["tpr"]) for label, curve in roc.items()}
    pr_figure = plot_curves("precision_recall", pr_curves, f"precision vs recall, {title}", point)
    save_figure(FIGURES_DIR / f"{stem}precision_vs_recall.png", pr_figure)
    save_figure(FIGURES_DIR / f"{stem}roc.png", plot_curves("roc", roc_curves, f"ROC, {title}", point))


def binary_figures(inputs: Inputs, question: str) -> None:
    """Training images scored out of sample (cross-validated SGD, out-of-bag forest), then the test set."""
    training, tested = inputs.training["binary"], inputs.tested["binary"]
    truth, scores = inputs.cv_scores["truth"].astype(bool), inputs.cv_scores["sgd"]
    # The chapter's threshold, found again on the scores it was found on: the lowest reaching the target precision.
    reached = threshold_for_precision(truth, scores, inputs.params.binary.target_precision)
    point = None if reached is None else point_at_threshold(truth, scores >= reached[0], reached[0])
    auc = {model: training[model]["oob" if model == "forest" else "cv"]["roc_auc"] for model in CURVE_MODELS}
    legends = {
        "sgd": f"SGD, cross-validated (ROC AUC {auc['sgd']:.3f})",
        "forest": f"random forest, out-of-bag (ROC AUC {auc['forest']:.3f})",
    }
    title = f"{question}, training images scored by models that did not learn from them"
    curve_figures(inputs.curves, "cv", legends, title, point, "binary/cv_")
    curve = inputs.curves["cv/pr/sgd"]
    save_figure(
        FIGURES_DIR / "binary/cv_precision_recall_vs_threshold.png",
        plot_precision_recall_vs_threshold(
            curve["threshold"], curve["precision"], curve["recall"], point, f"SGD {question}, cross-validated scores"
        ),
    )

    threshold = json_number(METRICS_DIR / "binary_cv.json", training, f"{THRESHOLDED_SGD}.threshold_choice.threshold")
    answers = inputs.binary[THRESHOLDED_SGD].astype(bool)
    deployed = point_at_threshold(inputs.binary["truth"].astype(bool), answers, threshold)
    auc = {model: tested[model]["test"]["roc_auc"] for model in CURVE_MODELS}
    legends = {model: f"{BINARY_NAMES[model]} (ROC AUC {auc[model]:.3f})" for model in CURVE_MODELS}
    curve_figures(inputs.curves, "test", legends, f"{question}, test set", deployed, "test/binary_")


def multiclass_figures(inputs: Inputs) -> None:
    """The chapter's error analysis of the chosen model: cross-validated, then on the test set."""
    chosen, class_names = inputs.manifest.chosen, inputs.class_names
    described = MulticlassModels.describe(chosen)
    cv = inputs.cv_predictions
    matrix = confusion_matrix(cv["truth"], cv[chosen], labels=range(len(class_names)))
    title = f"{described}, cross-validated (best by validation accuracy)"
    save_figure(
        FIGURES_DIR / "multiclass/cv_confusion_matrices.png", plot_confusion_matrices(matrix, class_names, title)
    )
    images = inputs.train[0][cv["image"]]
    pair = most_confused_pair(matrix)
    figure = plot_confused_pair(images, cv["truth"], cv[chosen], pair, class_names)
    save_figure(FIGURES_DIR / "multiclass/cv_most_confused_pair.png", figure)

    images, labels = inputs.test
    predicted = inputs.multiclass[chosen]
    matrix = confusion_matrix(labels, predicted, labels=range(len(class_names)))
    title = f"{described} on the test set (best by validation accuracy)"
    save_figure(
        FIGURES_DIR / "test/multiclass_confusion_matrices.png", plot_confusion_matrices(matrix, class_names, title)
    )
    figure = plot_misclassified(images, labels, predicted, class_names)
    save_figure(FIGURES_DIR / "test/multiclass_misclassified.png", figure)


def denoising_figure(inputs: Inputs) -> None:
    noisy, cleaned = inputs.denoised
    denoise = inputs.params.multilabel.denoise
    title = f"noise up to {denoise.noise} removed by KNN (k={denoise.n_neighbors}), first test images"
    figure = plot_denoising(noisy, cleaned, inputs.test[0][: len(noisy)], title)
    save_figure(FIGURES_DIR / "test/multioutput_denoising.png", figure)


def report_page(inputs: Inputs, question: str) -> str:
    binary, multiclass = inputs.binary, inputs.multiclass
    sections = [
        data_section(inputs.overview, inputs.manifest.validation_images),
        binary_section(
            inputs.training["binary"],
            inputs.tested["binary"],
            question,
            binary["truth"].astype(bool),
            {name: binary[name].astype(bool) for name in BINARY_NAMES},
        ),
        multiclass_section(
            inputs.training["multiclass"],
            inputs.tested["multiclass"],
            inputs.manifest.chosen,
            inputs.test[1],
            {name: multiclass[name] for name in inputs.manifest.models},
            inputs.class_names,
        ),
        multilabel_section(
            inputs.training["multilabel"], inputs.tested["multilabel"], inputs.tested["multioutput"]["knn"]["test"]
        ),
    ]
    return render_report(sections, inputs.params.model_dump())


def main() -> None:
    inputs = read_inputs()
    question = f"'is it a {inputs.class_names[inputs.params.binary.digit]}?'"
    data_figures(inputs)
    binary_figures(inputs, question)
    multiclass_figures(inputs)
    denoising_figure(inputs)
    write_bytes(REPORT_FILE, report_page(inputs, question).encode())


if __name__ == "__main__":
    run_stage(main, __doc__)
