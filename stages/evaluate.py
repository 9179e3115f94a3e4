"""Stage `evaluate`: every trained model on the held-out test set; metrics, curves, error analysis."""

from __future__ import annotations

import mnist_dvc.numeric_profile  # noqa: F401  (first: it sets how numpy and scipy compute before they load)

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
from sklearn.model_selection import FixedThresholdClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline

from mnist_dvc.arrays import SIDE, load_class_names, load_split, to_features
from mnist_dvc.curves import write_binary_curves
from mnist_dvc.denoise import TEST_STREAM, mean_absolute_error, noisy_pixels
from mnist_dvc.features import ShiftAugmented
from mnist_dvc.figures import new_figure, plot_confusion_matrices, plot_denoising, save_figure
from mnist_dvc.files import json_number, json_value, read_json, write_bytes, write_csv, write_json
from mnist_dvc.messages import UserError, log
from mnist_dvc.metrics import (
    BINARY_FEATURES_DTYPE,
    MULTILABEL_NAMES,
    binary_metrics,
    check_both_classes,
    decision_cutoff,
    is_target,
    multilabel_f1,
    multilabel_targets,
    positive_scores,
    proportion_with_interval,
    rounded,
    threshold_for_precision,
)
from mnist_dvc.models import load_model
from mnist_dvc.params import load_params
from mnist_dvc.paths import (
    DATA_OVERVIEW_FILE,
    FIGURES_DIR,
    METRICS_DIR,
    MODELS_DIR,
    PLOTS_DIR,
    PREDICTIONS_DIR,
    REPORT_FILE,
    SELECTED_FILE,
    display_path,
)
from mnist_dvc.report import (
    BINARY_NAMES,
    binary_section,
    data_section,
    multiclass_section,
    multilabel_section,
    per_class_metrics,
    render_report,
)
from mnist_dvc.runner import run_stage
from mnist_dvc.schema import BinaryParams, DenoiseParams, MulticlassModels, MulticlassParams, MultilabelParams
from mnist_dvc.workers import Job, run_jobs

# The deployed SGD carries the threshold chosen in training (train_binary.thresholded_sgd).
BINARY_MODELS = {"sgd": FixedThresholdClassifier, "dummy": DummyClassifier, "forest": RandomForestClassifier}
THRESHOLDED_SGD = "sgd_at_target_precision"  # its answers' column in the predictions file
MULTICLASS_KINDS = (Pipeline, RandomForestClassifier, KNeighborsClassifier, ShiftAugmented)
N_PIXELS = SIDE * SIDE
MISCLASSIFIED_SHOWN = 40
DENOISED_SHOWN = 10
DENOISE_CHUNK = 250  # test images cleaned at once: about 400 MB


def binary_outputs(model: Any, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A binary model's scores for 'yes', its answers at its own cutoff (0 for a decision function, 0.5 for a
    probability, as in cross-validation), and its `predict`: the same, but SGD's applies its chosen threshold."""
    scores = positive_scores(model, features)
    return scores, scores > decision_cutoff(model), model.predict(features)


def clean_images(denoiser: Any, noisy: np.ndarray) -> np.ndarray:
    """The denoiser's clean pixels (0..255), in chunks: for 784 outputs, scikit-learn's KNN predicts through class
    probabilities of every output, about 1.6 MB per image (measured: 15 GB for 10,000 test images at once)."""
    chunks = range(0, len(noisy), DENOISE_CHUNK)
    return np.concatenate([denoiser.predict(noisy[start : start + DENOISE_CHUNK]) for start in chunks])


def evaluate_binary(
    outputs: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], target: np.ndarray, target_precision: float
) -> dict[str, Any]:
    """Each binary model's test metrics at its own cutoff; SGD's also at the threshold chosen in training."""
    metrics = {
        name: {"test": binary_metrics(target, answers, scores)} for name, (scores, answers, _) in outputs.items()
    }
    scores, _, thresholded = outputs["sgd"]
    metrics["sgd"]["test"].update(threshold_results(target, scores, thresholded, target_precision))
    return metrics


def threshold_results(
    target: np.ndarray, scores: np.ndarray, answers: np.ndarray, target_precision: float
) -> dict[str, float | None]:
    """Does the threshold chosen on held-out training images keep its precision on the test set? With 95% intervals,
    beside the test set's own best point: the lowest threshold of the same scores that reaches the target."""
    results: dict[str, float | None] = {}
    hits = int(np.count_nonzero(answers & target))
    for name, trials in (("precision", int(answers.sum())), ("recall", int(target.sum()))):
        value, low, high = proportion_with_interval(hits, trials)
        results |= {f"{name}_at_cv_threshold": value, f"{name}_at_cv_threshold_low": low}
        results[f"{name}_at_cv_threshold_high"] = high
    own = threshold_for_precision(target, scores, target_precision)
    results["threshold_at_target_precision"] = None if own is None else rounded(own[0])
    results["recall_at_target_precision"] = None if own is None else rounded(own[1])
    return results


def plot_misclassified(images: np.ndarray, truth: np.ndarray, predicted: np.ndarray, class_names: list[str]) -> Any:
    all_wrong = np.flatnonzero(truth != predicted)
    wrong = all_wrong[:MISCLASSIFIED_SHOWN]
    columns = 10
    rows = max(1, -(-len(wrong) // columns))
    figure, axes = new_figure(rows, columns, figsize=(columns * 0.9, rows * 1.05), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, index in zip(axes.ravel(), wrong, strict=False):
        axis.imshow(images[index], cmap="binary", interpolation="nearest")
        axis.set_title(f"{class_names[truth[index]]} → {class_names[predicted[index]]}", fontsize=7)
    shown = f"all {len(wrong)}" if len(wrong) == len(all_wrong) else f"the first {len(wrong)} of {len(all_wrong)}"
    figure.suptitle(f"{shown} misclassified test images (true → predicted)", y=1.02)
    return figure


def read_training_results() -> tuple[dict[str, Any], list[str], tuple[str, int]]:
    """The training stages' metrics (for the report), the multiclass models trained, the one chosen and how many
    validation images chose it."""
    training = {
        task: json_value(path, read_json(path), task)
        for task, path in (
            ("binary", METRICS_DIR / "binary_cv.json"),
            ("multiclass", METRICS_DIR / "multiclass_cv.json"),
            ("multilabel", METRICS_DIR / "multilabel_cv.json"),
        )
    }
    path = METRICS_DIR / "multiclass_cv.json"
    names = training["multiclass"]
    unknown = set(names) - set(MulticlassModels.model_fields) if isinstance(names, dict) else {"(not a mapping)"}
    if not names or unknown:
        raise UserError(
            f"{display_path(path)}: expected CV results of the models {', '.join(MulticlassModels.model_fields)}"
        )
    selected = read_json(SELECTED_FILE)
    best = json_value(SELECTED_FILE, selected, "best")
    if best not in names:
        raise UserError(f"{display_path(SELECTED_FILE)}: 'best' should name one of {', '.join(names)}, got {best!r}")
    n_validation = json_number(SELECTED_FILE, selected, "validation_images")
    return training, list(names), (best, int(n_validation))


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


def write_predictions(
    target: np.ndarray,
    labels: np.ndarray,
    binary: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    multiclass: dict[str, np.ndarray],
    multilabel: np.ndarray,
) -> None:
    """Every model's answer for every test image, small and committed, so that two revisions can be compared image
    by image (tools/compare.py). Binary scores at 6 significant digits: enough for a ROC AUC, stable across CPUs."""
    binary_columns: dict[str, np.ndarray] = {"truth": target.astype(np.int8)}
    for name, (scores, answers, _) in binary.items():
        binary_columns |= {name: answers.astype(np.int8), f"{name}_score": scores}
    scores, _, thresholded = binary["sgd"]
    binary_columns |= {THRESHOLDED_SGD: thresholded.astype(np.int8), f"{THRESHOLDED_SGD}_score": scores}
    write_csv(PREDICTIONS_DIR / "binary.csv", binary_columns, digits=6)
    write_csv(PREDICTIONS_DIR / "multiclass.csv", {"truth": labels, **multiclass})
    truth = multilabel_targets(labels)
    columns = {f"truth_{label}": truth[:, i] for i, label in enumerate(MULTILABEL_NAMES)}
    columns |= {f"knn_{label}": multilabel[:, i] for i, label in enumerate(MULTILABEL_NAMES)}
    write_csv(PREDICTIONS_DIR / "multilabel.csv", {name: column.astype(np.int8) for name, column in columns.items()})


def main() -> None:
    params = {
        "binary": load_params("binary", BinaryParams),
        "multiclass": load_params("multiclass", MulticlassParams),
        "multilabel": load_params("multilabel", MultilabelParams),
    }
    digit, denoise = params["binary"].digit, params["multilabel"].denoise
    images, labels = load_split("test")
    class_names = load_class_names()
    if digit >= len(class_names):
        raise UserError(f"params.yaml: binary.digit = {digit}, but the dataset has {len(class_names)} classes")
    target = is_target(labels, digit)
    check_both_classes(target, digit, class_names[digit], "test")
    features = to_features(images)
    training, multiclass_names, (best, n_validation) = read_training_results()
    binary_models, multiclass_models, (knn, denoiser) = load_models(multiclass_names)
    figures = FIGURES_DIR / "test"

    noisy = noisy_pixels(images, denoise.noise, denoise.seed, TEST_STREAM)
    binary_features = to_features(images, BINARY_FEATURES_DTYPE)
    # Every model's predictions as one job each, the longest first (benchmarks/run_full.py on Fashion-MNIST).
    jobs: list[Job] = [
        ("denoiser", clean_images, (denoiser, noisy)),
        ("multilabel", knn.predict, (features,)),
        *[(f"multiclass.{name}", model.predict, (features,)) for name, model in multiclass_models.items()],
        *[(f"binary.{name}", binary_outputs, (model, binary_features)) for name, model in binary_models.items()],
    ]
    log(f"scoring the test set with {len(jobs)} models")
    outputs = dict(zip([name for name, _, _ in jobs], run_jobs(jobs), strict=True))
    binary_scored = {name: outputs[f"binary.{name}"] for name in binary_models}
    predictions = {name: outputs[f"multiclass.{name}"] for name in multiclass_models}
    write_predictions(target, labels, binary_scored, predictions, outputs["multilabel"])

    binary = evaluate_binary(binary_scored, target, params["binary"].target_precision)
    legends = {
        "sgd": f"SGD (ROC AUC {binary['sgd']['test']['roc_auc']:.3f})",
        "forest": f"random forest (ROC AUC {binary['forest']['test']['roc_auc']:.3f})",
    }
    question = f"'is it a {class_names[digit]}?'"
    write_binary_curves(
        {name: (target, binary_scored[name][0]) for name in legends},
        legends,
        "test",
        figures / "binary_",
        f"{question}, test set",
        binary_models["sgd"].threshold,
    )

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

    per_class = per_class_metrics(labels, {best: predictions[best]}, class_names)
    write_csv(
        PLOTS_DIR / "multiclass_test_per_class.csv",
        {"class": np.array(class_names), **{metric: frame[best].to_numpy() for metric, frame in per_class.items()}},
    )
    answers = {name: binary_scored[name][1] for name in BINARY_NAMES}
    sections = [
        data_section(read_json(DATA_OVERVIEW_FILE), n_validation),
        binary_section(training["binary"], binary, question, target, answers),
        multiclass_section(training["multiclass"], multiclass, best, labels, predictions, class_names),
        multilabel_section(training["multilabel"], multilabel, multioutput["knn"]["test"]),
    ]
    report = render_report(sections, {key: section.model_dump() for key, section in params.items()})
    write_bytes(REPORT_FILE, report.encode())
    log(f"best multiclass model: {best}, test accuracy {multiclass[best]['test']['accuracy']:.4f}")


if __name__ == "__main__":
    run_stage(main, __doc__)
