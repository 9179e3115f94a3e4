"""Stage `evaluate`: every trained model on the held-out test set.

Writes the test metrics, every model's answer for every test image, the curves, the confusion matrix and per-class
metrics as data for `dvc plots`, and the first cleaned test images; the `report` stage draws its figures from the
answers, the curves and the images.
"""

from __future__ import annotations

import mnist_dvc.numeric_profile  # noqa: F401  (first: it sets how numpy and scipy compute before they load)

from typing import Any

import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import FixedThresholdClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline

from mnist_dvc.arrays import SIDE, load_class_names, load_split, save_array, to_features
from mnist_dvc.curves import CURVE_MODELS, write_curves
from mnist_dvc.denoise import TEST_STREAM, mean_absolute_error, noisy_pixels
from mnist_dvc.features import ShiftAugmented
from mnist_dvc.files import write_csv, write_json
from mnist_dvc.manifest import read_manifest
from mnist_dvc.messages import UserError, log
from mnist_dvc.metrics import (
    BINARY_FEATURES_DTYPE,
    MULTILABEL_NAMES,
    THRESHOLDED_SGD,
    binary_metrics,
    check_both_classes,
    decision_cutoff,
    is_target,
    multilabel_f1,
    multilabel_targets,
    per_class_metrics,
    positive_scores,
    proportion_with_interval,
    rounded,
    threshold_for_precision,
)
from mnist_dvc.models import load_model
from mnist_dvc.params import check_at_most, load_params
from mnist_dvc.paths import DENOISED_FILE, METRICS_DIR, MODELS_DIR, PLOTS_DIR, PREDICTIONS_DIR, display_path
from mnist_dvc.runner import run_stage
from mnist_dvc.schema import ClassIndex, NoiseAmplitude, Probability, Seed
from mnist_dvc.workers import Job, run_jobs

# The deployed SGD carries the threshold chosen in training (train_binary.thresholded_sgd).
BINARY_MODELS = {"sgd": FixedThresholdClassifier, "dummy": DummyClassifier, "forest": RandomForestClassifier}
MULTICLASS_KINDS = (Pipeline, RandomForestClassifier, KNeighborsClassifier, ShiftAugmented)
N_PIXELS = SIDE * SIDE
DENOISED_SHOWN = 10  # test images the report shows noisy and cleaned
IMAGES_CLEANED_AT_ONCE = 250  # test images cleaned at once: about 400 MB


def binary_outputs(model: Any, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A binary model's scores for 'yes', its answers at its own cutoff (0 for a decision function, 0.5 for a
    probability, as in cross-validation), and its `predict`: the same, but SGD's applies its chosen threshold."""
    scores = positive_scores(model, features)
    return scores, scores > decision_cutoff(model), model.predict(features)


def clean_images(denoiser: Any, noisy: np.ndarray) -> np.ndarray:
    """The denoiser's clean pixels (0..255), in chunks: for 784 outputs, scikit-learn's KNN predicts through class
    probabilities of every output, about 1.6 MB per image (measured: 15 GB for 10,000 test images at once)."""
    chunks = range(0, len(noisy), IMAGES_CLEANED_AT_ONCE)
    return np.concatenate([denoiser.predict(noisy[start : start + IMAGES_CLEANED_AT_ONCE]) for start in chunks])


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


def evaluate_denoiser(images: np.ndarray, noisy: np.ndarray, cleaned: np.ndarray) -> dict[str, Any]:
    """Mean absolute pixel error (0..255) of the cleaned test images, beside that of the noisy input itself; the first
    ones, noisy and cleaned, saved for the report."""
    noisy_scale = noisy * 255  # back on the pixels' scale
    examples = np.stack([pixels[:DENOISED_SHOWN].reshape(-1, SIDE, SIDE) for pixels in (noisy_scale, cleaned)])
    save_array(DENOISED_FILE, examples.astype(np.float32))
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
    digit = load_params("binary.digit", ClassIndex)
    target_precision = load_params("binary.target_precision", Probability)
    noise = load_params("multilabel.denoise.noise", NoiseAmplitude)
    noise_seed = load_params("multilabel.denoise.seed", Seed)
    images, labels = load_split("test")
    class_names = load_class_names()
    check_at_most("binary.digit", digit, len(class_names) - 1, f"the dataset has {len(class_names)} classes")
    target = is_target(labels, digit)
    check_both_classes(target, digit, class_names[digit], "test")
    features = to_features(images)
    manifest = read_manifest()
    binary_models, multiclass_models, (knn, denoiser) = load_models(manifest.models)

    noisy = noisy_pixels(images, noise, noise_seed, TEST_STREAM)
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

    binary = evaluate_binary(binary_scored, target, target_precision)
    write_curves({name: (target, binary_scored[name][0]) for name in CURVE_MODELS}, "test")
    multiclass = {
        name: {
            "test": {
                "accuracy": rounded(accuracy_score(labels, predicted)),
                "f1_macro": rounded(f1_score(labels, predicted, average="macro")),
            }
        }
        for name, predicted in predictions.items()
    }
    chosen = manifest.chosen
    write_csv(
        PLOTS_DIR / "multiclass_test_confusion.csv",
        {"actual": np.array(class_names)[labels], "predicted": np.array(class_names)[predictions[chosen]]},
    )
    per_class = per_class_metrics(labels, {chosen: predictions[chosen]}, class_names)
    write_csv(
        PLOTS_DIR / "multiclass_test_per_class.csv",
        {"class": np.array(class_names), **{metric: frame[chosen].to_numpy() for metric, frame in per_class.items()}},
    )
    multilabel = {"knn": {"test": multilabel_f1(multilabel_targets(labels), outputs["multilabel"])}}
    multioutput = evaluate_denoiser(images, noisy, outputs["denoiser"])
    write_json(
        METRICS_DIR / "test.json",
        {"binary": binary, "multiclass": multiclass, "multilabel": multilabel, "multioutput": multioutput},
    )
    log(f"chosen multiclass model: {chosen}, test accuracy {multiclass[chosen]['test']['accuracy']:.4f}")


if __name__ == "__main__":
    run_stage(main, __doc__)
