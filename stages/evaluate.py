"""Stage `evaluate`: every model's answers on the held-out images turned into metrics; the multiclass model chosen.

The training stages wrote what each model answered for the images it did not learn from (`data/answers/`); this is
the only stage that reads the test labels, and it loads no model, so it is cheap and a change to one model reruns
that model's stage and this one, not every scoring. It chooses the multiclass model by validation accuracy (the test
set plays no part), and writes the cross-validated and test metrics, every model's answer for every test image, the
curves, the confusion matrix and per-class metrics as data for `dvc plots`, and the first cleaned test images; the
`report` stage draws its figures from them.
"""

from __future__ import annotations

import mnist_dvc.runtime.numeric_profile  # noqa: F401  (first: it sets how numpy and scipy compute before they load)

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import f1_score

from mnist_dvc.files.arrays import load_array, load_class_names, load_split, save_array
from mnist_dvc.files.curves import CURVE_MODELS, write_curves
from mnist_dvc.files.disk import write_csv, write_json
from mnist_dvc.files.manifest import Manifest, write_manifest
from mnist_dvc.files.paths import (
    ANSWERS_DIR,
    DENOISED_FILE,
    METRICS_DIR,
    MODELS_DIR,
    MULTICLASS_CV_FILE,
    PLOTS_DIR,
    PREDICTIONS_DIR,
    display_path,
)
from mnist_dvc.runtime.messages import log
from mnist_dvc.runtime.params import binary_class_name, load_params
from mnist_dvc.runtime.runner import run_stage
from mnist_dvc.study.denoise import as_features, mean_absolute_error
from mnist_dvc.study.errors import UserError
from mnist_dvc.study.features import SIDE
from mnist_dvc.study.metrics import (
    MULTILABEL_NAMES,
    THRESHOLDED_SGD,
    accuracy,
    best_model,
    binary_metrics,
    check_both_classes,
    is_target,
    multilabel_f1,
    multilabel_targets,
    per_class_metrics,
    proportion_with_interval,
    rounded,
    threshold_for_precision,
)
from mnist_dvc.study.schema import ClassIndex, MulticlassModels, Probability

BINARY_MODELS = ("sgd", "dummy", "forest")
N_PIXELS = SIDE * SIDE
DENOISED_SHOWN = 10  # test images the report shows noisy and cleaned

BinaryAnswers = dict[str, tuple[np.ndarray, np.ndarray]]  # a model's scores for 'yes' and its answers at its cutoff


@dataclass(frozen=True)
class MulticlassAnswers:
    """What every multiclass model answered, by model: for the cross-validated training images (the same for every
    model), the validation images that choose among them, and the test images."""

    cv_images: np.ndarray  # positions in the training set
    cv: dict[str, np.ndarray]
    validation_images: np.ndarray
    validation: dict[str, np.ndarray]
    test: dict[str, np.ndarray]


def read_answers(path: Path, dtype: type, shape: tuple[int | None, ...]) -> np.ndarray:
    """An array a training stage wrote, of `dtype` and `shape` (None: any length), or a message naming the file."""
    array = load_array(path, dtype, len(shape))
    if any(size is not None and size != actual for size, actual in zip(shape, array.shape, strict=True)):
        expected = " x ".join("n" if size is None else f"{size:,}" for size in shape)
        raise UserError(f"{display_path(path)}: expected {expected} answers, got {array.shape} (run `dvc repro`)")
    return array


def read_binary_answers(n_test: int) -> tuple[BinaryAnswers, np.ndarray]:
    """Each binary model's test scores and answers, and the deployed SGD's answers at its chosen threshold."""
    folder = ANSWERS_DIR / "binary"
    answers = {
        name: (
            read_answers(folder / f"{name}_scores.npy", np.float64, (n_test,)),
            read_answers(folder / f"{name}_answers.npy", np.bool_, (n_test,)),
        )
        for name in BINARY_MODELS
    }
    return answers, read_answers(folder / f"{THRESHOLDED_SGD}_answers.npy", np.bool_, (n_test,))


def read_multilabel_answers(n_test: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The KNN's two labels for each test image, and the test images with noise added (0..255 + noise) and cleaned."""
    folder = ANSWERS_DIR / "multilabel"
    return (
        read_answers(folder / "test_predictions.npy", np.bool_, (n_test, len(MULTILABEL_NAMES))),
        read_answers(folder / "test_noisy.npy", np.int16, (n_test, N_PIXELS)),
        read_answers(folder / "test_cleaned.npy", np.uint8, (n_test, N_PIXELS)),
    )


def remove_stale_models(names: list[str]) -> None:
    """Delete what the stage of a model no longer in params.yaml left: DVC keeps a removed stage's outputs in place,
    and this stage's dependency on the answers' folder would then record them, so its dvc.lock would differ from a
    fresh clone's. Nothing is lost: the files stay in DVC's cache, and the run-cache restores them if the entry
    comes back with the same params."""
    folder = ANSWERS_DIR / "multiclass"
    for answers in sorted(path for path in folder.glob("*/") if path.name not in names):
        model = MODELS_DIR / "multiclass" / f"{answers.name}.skops"
        log(
            f"{answers.name}: no longer in params.yaml's multiclass.models: removing {display_path(answers)}/ and "
            f"{display_path(model)}"
        )
        shutil.rmtree(answers)
        model.unlink(missing_ok=True)


def read_multiclass_answers(names: list[str], n_train: int, n_test: int) -> MulticlassAnswers:
    """Every multiclass model's answers, checked to be for the same training images as the others'."""
    parts: dict[str, dict[str, np.ndarray]] = {
        part: {} for part in ("cv_images", "cv", "validation_images", "validation")
    }
    test = {}
    for name in names:
        folder = ANSWERS_DIR / "multiclass" / name
        for part in ("cv", "validation"):
            images = read_answers(folder / f"{part}_images.npy", np.int64, (None,))
            if len(images) == 0 or images.min() < 0 or images.max() >= n_train:
                raise UserError(f"{display_path(folder / f'{part}_images.npy')}: image numbers out of range")
            parts[f"{part}_images"][name] = images
            parts[part][name] = read_answers(folder / f"{part}_predictions.npy", np.uint8, (len(images),))
        test[name] = read_answers(folder / "test_predictions.npy", np.uint8, (n_test,))
    for part in ("cv_images", "validation_images"):
        first, *others = parts[part].values()
        if any(not np.array_equal(first, other) for other in others):
            raise UserError(
                f"{display_path(ANSWERS_DIR / 'multiclass')}: the models' {part} differ: some stage ran with other "
                "multiclass.* params (run `dvc repro`)"
            )
    first = names[0]
    return MulticlassAnswers(
        parts["cv_images"][first], parts["cv"], parts["validation_images"][first], parts["validation"], test
    )


def evaluate_binary(
    answers: BinaryAnswers, thresholded: np.ndarray, target: np.ndarray, target_precision: float
) -> dict[str, Any]:
    """Each binary model's test metrics at its own cutoff; SGD's also at the threshold chosen in training."""
    metrics = {name: {"test": binary_metrics(target, said, scores)} for name, (scores, said) in answers.items()}
    own = threshold_for_precision(target, answers["sgd"][0], target_precision)
    metrics["sgd"]["test"]["threshold_at_target_precision"] = None if own is None else rounded(own[0])
    metrics["sgd"]["test"]["recall_at_target_precision"] = None if own is None else rounded(own[1])
    metrics[THRESHOLDED_SGD] = {"test": held_threshold_results(target, thresholded)}
    return metrics


def held_threshold_results(target: np.ndarray, answers: np.ndarray) -> dict[str, float | None]:
    """Does the threshold chosen on held-out training images keep its precision on the test set? With 95%
    intervals; `sgd`'s `threshold_at_target_precision` is the test set's own best point, known only afterwards."""
    results: dict[str, float | None] = {}
    hits = int(np.count_nonzero(answers & target))
    for name, trials in (("precision", int(answers.sum())), ("recall", int(target.sum()))):
        value, low, high = proportion_with_interval(hits, trials)
        results |= {name: value, f"{name}_low": low, f"{name}_high": high}
    return results


def choose_model(answers: MulticlassAnswers, train_labels: np.ndarray) -> tuple[dict[str, Any], str]:
    """Each multiclass model's cross-validated and validation accuracy, and the model with the best validation
    accuracy (a tie goes to the cheaper): the test set plays no part in the choice."""
    cv_truth, validation_truth = train_labels[answers.cv_images], train_labels[answers.validation_images]
    metrics = {
        name: {
            "cv": {"accuracy": accuracy(cv_truth, answers.cv[name])},
            "validation": {"accuracy": accuracy(validation_truth, answers.validation[name])},
        }
        for name in answers.cv
    }
    for name, scores in metrics.items():
        log(f"{name}: CV accuracy {scores['cv']['accuracy']:.4f}, validation {scores['validation']['accuracy']:.4f}")
    return metrics, best_model({name: metrics[name]["validation"]["accuracy"] for name in metrics})


def evaluate_denoiser(images: np.ndarray, noisy: np.ndarray, cleaned: np.ndarray) -> dict[str, Any]:
    """Mean absolute pixel error (0..255) of the cleaned test images, beside that of the noisy input itself; the first
    ones, noisy and cleaned, saved for the report. `noisy`: the pixels plus noise, as the denoiser's input was made."""
    noisy_scale = as_features(noisy) * 255  # the denoiser's input, back on the pixels' scale
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
    binary: tuple[BinaryAnswers, np.ndarray],
    multiclass: dict[str, np.ndarray],
    multilabel: np.ndarray,
) -> None:
    """Every model's answer for every test image, small and committed, so that two revisions can be compared image
    by image (tools/compare.py). Binary scores at 6 significant digits: enough for a ROC AUC, stable across CPUs."""
    answers, thresholded = binary
    binary_columns: dict[str, np.ndarray] = {"truth": target.astype(np.int8)}
    for name, (scores, said) in answers.items():
        binary_columns |= {name: said.astype(np.int8), f"{name}_score": scores}
    binary_columns[THRESHOLDED_SGD] = thresholded.astype(np.int8)  # its scores are `sgd_score`
    write_csv(PREDICTIONS_DIR / "binary.csv", binary_columns, digits=6)
    write_csv(PREDICTIONS_DIR / "multiclass.csv", {"truth": labels, **multiclass})
    truth = multilabel_targets(labels)
    columns = {f"truth_{label}": truth[:, i] for i, label in enumerate(MULTILABEL_NAMES)}
    columns |= {f"knn_{label}": multilabel[:, i] for i, label in enumerate(MULTILABEL_NAMES)}
    write_csv(PREDICTIONS_DIR / "multilabel.csv", {name: column.astype(np.int8) for name, column in columns.items()})


def write_chosen_model_data(labels: np.ndarray, predicted: np.ndarray, class_names: list[str], chosen: str) -> None:
    """The chosen model's confusion data and per-class metrics on the test set, for `dvc plots`."""
    names = np.array(class_names)
    write_csv(PLOTS_DIR / "multiclass_test_confusion.csv", {"actual": names[labels], "predicted": names[predicted]})
    per_class = per_class_metrics(labels, {chosen: predicted}, class_names)
    write_csv(
        PLOTS_DIR / "multiclass_test_per_class.csv",
        {"class": names, **{metric: frame[chosen].to_numpy() for metric, frame in per_class.items()}},
    )


def main() -> None:
    digit = load_params("binary.digit", ClassIndex)
    target_precision = load_params("binary.target_precision", Probability)
    names = load_params("multiclass.models", MulticlassModels).names()
    images, labels = load_split("test")
    _, train_labels = load_split("train")
    class_names = load_class_names()
    target = is_target(labels, digit)
    check_both_classes(target, digit, binary_class_name(digit, class_names), "test")
    binary_answers = read_binary_answers(len(labels))
    multilabel, noisy, cleaned = read_multilabel_answers(len(labels))
    remove_stale_models(names)
    answers = read_multiclass_answers(names, len(train_labels), len(labels))
    log(f"scoring the answers of {len(BINARY_MODELS)} binary, {len(names)} multiclass and 2 multilabel models")

    training, chosen = choose_model(answers, train_labels)
    write_manifest(Manifest(models=names, chosen=chosen, validation_images=len(answers.validation_images)))
    write_json(METRICS_DIR / "multiclass_cv.json", {"multiclass": training})
    # The data behind the report's error analysis: which training image each CV prediction is for.
    write_csv(MULTICLASS_CV_FILE, {"image": answers.cv_images, "truth": train_labels[answers.cv_images], **answers.cv})

    write_predictions(target, labels, binary_answers, answers.test, multilabel)
    binary = evaluate_binary(*binary_answers, target, target_precision)
    write_curves({name: (target, binary_answers[0][name][0]) for name in CURVE_MODELS}, "test")
    multiclass = {
        name: {
            "test": {
                "accuracy": accuracy(labels, predicted),
                "f1_macro": rounded(f1_score(labels, predicted, average="macro")),
            }
        }
        for name, predicted in answers.test.items()
    }
    write_chosen_model_data(labels, answers.test[chosen], class_names, chosen)
    multilabel_metrics = {"knn": {"test": multilabel_f1(multilabel_targets(labels), multilabel)}}
    multioutput = evaluate_denoiser(images, noisy, cleaned)
    write_json(
        METRICS_DIR / "test.json",
        {"binary": binary, "multiclass": multiclass, "multilabel": multilabel_metrics, "multioutput": multioutput},
    )
    log(f"chosen multiclass model: {chosen}, test accuracy {multiclass[chosen]['test']['accuracy']:.4f}")


if __name__ == "__main__":
    run_stage(main, __doc__)
