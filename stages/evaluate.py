"""Stage `evaluate`: every trained model on the held-out test set; metrics, curves, error analysis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline

from mnist_dvc.arrays import SIDE, load_class_names, load_split, to_features
from mnist_dvc.curves import write_binary_curves
from mnist_dvc.denoise import TEST_STREAM, mean_absolute_error, noisy_pixels
from mnist_dvc.features import ShiftAugmented
from mnist_dvc.figures import new_figure, plot_confusion_matrices, plot_denoising, save_figure
from mnist_dvc.files import json_number, json_value, read_json, write_csv, write_json
from mnist_dvc.metrics import (
    BINARY_FEATURES_DTYPE,
    binary_metrics,
    check_both_classes,
    is_target,
    multilabel_f1,
    multilabel_targets,
    positive_scores,
    rounded,
)
from mnist_dvc.models import load_model
from mnist_dvc.params import load_params
from mnist_dvc.paths import (
    FIGURES_DIR,
    METRICS_DIR,
    MODELS_DIR,
    PLOTS_DIR,
    SELECTED_FILE,
    THRESHOLD_FILE,
    display_path,
)
from mnist_dvc.runner import UserError, log, n_jobs, run_stage
from mnist_dvc.schema import ClassIndex, DenoiseParams, MulticlassModels
from mnist_dvc.tasks import Task, run_tasks

BINARY_MODELS = {"sgd": SGDClassifier, "dummy": DummyClassifier, "forest": RandomForestClassifier}
MULTICLASS_KINDS = (Pipeline, RandomForestClassifier, KNeighborsClassifier, ShiftAugmented)
N_PIXELS = SIDE * SIDE
MISCLASSIFIED_SHOWN = 40
DENOISED_SHOWN = 10
DENOISE_CHUNK = 250  # test images cleaned at once: about 400 MB


def scores_and_predictions(model: Any, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A binary model's scores for the positive class, and its yes/no answers."""
    return positive_scores(model, features), model.predict(features)


def clean_images(denoiser: Any, noisy: np.ndarray) -> np.ndarray:
    """The denoiser's clean pixels (0..255), in chunks: for 784 outputs, scikit-learn's KNN predicts through class
    probabilities of every output, about 1.6 MB per image (measured: 15 GB for 10,000 test images at once)."""
    chunks = range(0, len(noisy), DENOISE_CHUNK)
    return np.concatenate([denoiser.predict(noisy[start : start + DENOISE_CHUNK]) for start in chunks])


def evaluate_binary(
    outputs: dict[str, tuple[np.ndarray, np.ndarray]], target: np.ndarray, cv_threshold: float | None
) -> tuple[dict, dict]:
    """Each binary model's test metrics from its (scores, answers); SGD's also at the threshold chosen in training."""
    scores = {name: model_scores for name, (model_scores, _) in outputs.items()}
    metrics = {
        name: {"test": binary_metrics(target, answers, model_scores)}
        for name, (model_scores, answers) in outputs.items()
    }
    if cv_threshold is not None:
        # Does the threshold chosen on the training folds keep its precision on unseen images?
        chosen = scores["sgd"] >= cv_threshold
        metrics["sgd"]["test"]["precision_at_cv_threshold"] = rounded(precision_score(target, chosen, zero_division=0))
        metrics["sgd"]["test"]["recall_at_cv_threshold"] = rounded(recall_score(target, chosen, zero_division=0))
    return metrics, scores


def plot_misclassified(images: np.ndarray, truth: np.ndarray, predicted: np.ndarray, class_names: list[str]) -> Any:
    wrong = np.flatnonzero(truth != predicted)[:MISCLASSIFIED_SHOWN]
    columns = 10
    rows = max(1, -(-len(wrong) // columns))
    figure, axes = new_figure(rows, columns, figsize=(columns * 0.9, rows * 1.05), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, index in zip(axes.ravel(), wrong, strict=False):
        axis.imshow(images[index], cmap="binary", interpolation="nearest")
        axis.set_title(f"{class_names[truth[index]]} → {class_names[predicted[index]]}", fontsize=7)
    figure.suptitle(f"first {len(wrong)} misclassified test images (true → predicted)")
    return figure


def read_training_results() -> tuple[float | None, list[str], str]:
    """SGD's threshold chosen on the training folds, the multiclass models trained, and the one chosen."""
    threshold = json_number(THRESHOLD_FILE, read_json(THRESHOLD_FILE), "threshold", nullable=True)
    path = METRICS_DIR / "multiclass_cv.json"
    names = json_value(path, read_json(path), "multiclass")
    unknown = set(names) - set(MulticlassModels.model_fields) if isinstance(names, dict) else {"(not a mapping)"}
    if not names or unknown:
        raise UserError(
            f"{display_path(path)}: expected CV results of the models {', '.join(MulticlassModels.model_fields)}"
        )
    best = json_value(SELECTED_FILE, read_json(SELECTED_FILE), "best")
    if best not in names:
        raise UserError(f"{display_path(SELECTED_FILE)}: 'best' should name one of {', '.join(names)}, got {best!r}")
    return threshold, list(names), best


def load_models(multiclass_names: list[str]) -> tuple[dict[str, Any], dict[str, Any], tuple[Any, Any]]:
    """Every model, each checked to be the kind its stage writes, before anything is written."""
    binary = {
        name: load_model(MODELS_DIR / "binary" / f"{name}.skops", kind, N_PIXELS)
        for name, kind in BINARY_MODELS.items()
    }
    multiclass = {
        name: load_model(MODELS_DIR / "multiclass" / f"{name}.skops", MULTICLASS_KINDS, N_PIXELS)
        for name in multiclass_names
    }
    knn = load_model(MODELS_DIR / "multilabel" / "knn.skops", KNeighborsClassifier, N_PIXELS)
    denoiser = load_model(MODELS_DIR / "multilabel" / "denoiser.skops", KNeighborsClassifier, N_PIXELS)
    for name, model, outputs in [("knn", knn, 2), ("denoiser", denoiser, N_PIXELS)]:
        if not model.outputs_2d_ or len(model.classes_) != outputs:
            path = display_path(MODELS_DIR / "multilabel" / f"{name}.skops")
            raise UserError(f"{path}: a model with {outputs} outputs was expected, it has {len(model.classes_)}")
    return binary, multiclass, (knn, denoiser)


def evaluate_denoiser(
    images: np.ndarray, noisy: np.ndarray, cleaned: np.ndarray, params: DenoiseParams, figure: Path
) -> dict[str, Any]:
    """Mean absolute pixel error (0..255) of the cleaned test images, beside that of the noisy input itself."""
    noisy_scale = noisy * 255  # back on the pixels' scale
    shown = [pixels[:DENOISED_SHOWN].reshape(-1, SIDE, SIDE) for pixels in (noisy_scale, cleaned, images)]
    title = f"noise up to {params.noise} removed by KNN (k={params.n_neighbors}), first test images"
    save_figure(figure, plot_denoising(*shown, title))
    return {
        "knn": {
            "test": {
                "mean_abs_error": rounded(mean_absolute_error(images, cleaned)),
                "mean_abs_error_noisy": rounded(mean_absolute_error(images, noisy_scale)),
            }
        }
    }


def main() -> None:
    digit = load_params("binary.digit", ClassIndex)
    denoise = load_params("multilabel.denoise", DenoiseParams)
    images, labels = load_split("test")
    class_names = load_class_names()
    if digit >= len(class_names):
        raise UserError(f"params.yaml: binary.digit = {digit}, but the dataset has {len(class_names)} classes")
    target = is_target(labels, digit)
    check_both_classes(target, digit, class_names[digit], "test")
    features = to_features(images)
    cv_threshold, multiclass_names, best = read_training_results()
    binary_models, multiclass_models, (knn, denoiser) = load_models(multiclass_names)
    figures = FIGURES_DIR / "test"

    noisy = noisy_pixels(images, denoise.noise, denoise.seed, TEST_STREAM)
    binary_features = to_features(images, BINARY_FEATURES_DTYPE)
    # Every model's predictions as one task each, the longest first (benchmarks/run_full.py on Fashion-MNIST).
    tasks: dict[str, Task] = {
        "denoiser": (clean_images, (denoiser, noisy)),
        "multilabel": (knn.predict, (features,)),
        **{f"multiclass.{name}": (model.predict, (features,)) for name, model in multiclass_models.items()},
        **{
            f"binary.{name}": (scores_and_predictions, (model, binary_features))
            for name, model in binary_models.items()
        },
    }
    log(f"scoring the test set: {len(tasks)} models on {n_jobs()} workers")
    outputs = dict(zip(tasks, run_tasks(list(tasks.values())), strict=True))

    binary, scores = evaluate_binary({name: outputs[f"binary.{name}"] for name in binary_models}, target, cv_threshold)
    legends = {name: f"{name} (AUC {binary[name]['test']['roc_auc']:.3f})" for name in ("sgd", "forest")}
    question = f"'is it a {class_names[digit]}?'"
    write_binary_curves(
        {name: (target, scores[name]) for name in scores}, legends, "test", figures / "binary_", f"{question}, test set"
    )

    predictions = {name: outputs[f"multiclass.{name}"] for name in multiclass_models}
    multiclass = {
        name: {
            "test": {
                "accuracy": rounded(accuracy_score(labels, predicted)),
                "f1_macro": rounded(f1_score(labels, predicted, average="macro")),
            }
        }
        for name, predicted in predictions.items()
    }
    write_csv(
        PLOTS_DIR / "multiclass_test_confusion.csv",
        {"actual": np.array(class_names)[labels], "predicted": np.array(class_names)[predictions[best]]},
    )
    matrix = confusion_matrix(labels, predictions[best], labels=range(len(class_names)))
    title = f"{MulticlassModels.describe(best)} on the test set (best by validation accuracy)"
    save_figure(figures / "multiclass_confusion_matrices.png", plot_confusion_matrices(matrix, class_names, title))
    save_figure(
        figures / "multiclass_misclassified.png", plot_misclassified(images, labels, predictions[best], class_names)
    )

    multilabel = {"knn": {"test": multilabel_f1(multilabel_targets(labels), outputs["multilabel"])}}
    multioutput = evaluate_denoiser(images, noisy, outputs["denoiser"], denoise, figures / "multioutput_denoising.png")

    results = {"binary": binary, "multiclass": multiclass, "multilabel": multilabel, "multioutput": multioutput}
    write_json(METRICS_DIR / "test.json", results)
    log(f"best multiclass model: {best}, test accuracy {multiclass[best]['test']['accuracy']:.4f}")


if __name__ == "__main__":
    run_stage(main, __doc__)
