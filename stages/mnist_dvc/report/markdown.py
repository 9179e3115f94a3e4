"""`reports/report.md`: one page with a run's results, written by the `report` stage from the same numbers as the
metrics.

Tables are pandas DataFrames rendered as Markdown; figures are linked relative to `reports/`, so the page renders
on GitHub or GitLab beside the files it shows. Nothing in it depends on when or where it was made: a rerun gives
the same bytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import yaml

from mnist_dvc.study.metrics import THRESHOLDED_SGD, per_class_metrics, proportion_with_interval
from mnist_dvc.study.schema import MulticlassModels

BINARY_NAMES = {"sgd": "SGD", "dummy": "dummy (never 'yes')", "forest": "random forest"}
BINARY_COLUMNS = {
    "accuracy": "accuracy",
    "precision": "precision",
    "recall": "recall",
    "f1": "F1",
    "roc_auc": "ROC AUC",
}
FIGURES = {
    "data": ["data/class_counts.png", "data/first_100_images.png"],
    "binary": [
        "binary/cv_precision_recall_vs_threshold.png",
        "binary/cv_precision_vs_recall.png",
        "binary/cv_roc.png",
        "test/binary_precision_vs_recall.png",
        "test/binary_roc.png",
    ],
    "multiclass": [
        "multiclass/cv_confusion_matrices.png",
        "multiclass/cv_most_confused_pair.png",
        "test/multiclass_confusion_matrices.png",
        "test/multiclass_misclassified.png",
    ],
    "multioutput": ["test/multioutput_denoising.png"],
}


def number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def with_interval(successes: int, trials: int) -> str:
    """'0.9870 [0.9787, 0.9923]': a proportion and its 95% interval."""
    value, low, high = proportion_with_interval(successes, trials)
    return f"{number(value)} [{number(low)}, {number(high)}]"


def metric_with_interval(metrics: dict[str, Any], name: str) -> str:
    """A metric written with its `_low` and `_high` companions."""
    return f"{number(metrics[name])} [{number(metrics[f'{name}_low'])}, {number(metrics[f'{name}_high'])}]"


def table(frame: pd.DataFrame, index: bool = True) -> str:
    return frame.to_markdown(index=index, floatfmt=".4f", disable_numparse=True)


def figures(section: str) -> str:
    return "\n".join(f"![{name}](figures/{name})" for name in FIGURES[section])


def data_section(overview: dict[str, Any], n_validation: int) -> str:
    counts = pd.DataFrame(overview["class_counts"])  # one row per class, by name
    counts.loc["total"] = counts.sum()
    return "\n\n".join(
        [
            "## Data",
            f"Dataset `{overview['dataset']}`. Images per class; of the training images, {n_validation:,} are held "
            "out to choose the multiclass model.",
            table(counts.astype(int).astype(str)),
            figures("data"),
        ]
    )


def binary_section(
    training: dict[str, Any], test: dict[str, Any], question: str, truth: np.ndarray, answers: dict[str, np.ndarray]
) -> str:
    """Two tables, models in rows: scores of training images the model did not learn from, then the test set."""
    trained, tested = {}, {}
    for name, label in BINARY_NAMES.items():
        kind = "oob" if "oob" in training[name] else "cv"
        trained[label] = {
            "scores": "out-of-bag" if kind == "oob" else "cross-validated",
            **{column: number(training[name][kind][key]) for key, column in BINARY_COLUMNS.items()},
        }
        tested[label] = {column: number(test[name]["test"][key]) for key, column in BINARY_COLUMNS.items()}
        hits = int(np.count_nonzero(answers[name] == truth))
        tested[label]["accuracy"] = with_interval(hits, len(truth))
    return "\n\n".join(
        [
            f"## Binary: {question}",
            "Training images, each scored by a model that did not learn from it:",
            table(pd.DataFrame(trained).T),
            "Test set (accuracy with its 95% interval):",
            table(pd.DataFrame(tested).T),
            threshold_section(training, test),
            figures("binary"),
        ]
    )


def threshold_section(training: dict[str, Any], test: dict[str, Any]) -> str:
    """The chapter's threshold on cross-validated scores, the deployed one, and how each holds on the test set."""
    choice = training[THRESHOLDED_SGD]["threshold_choice"]
    cv, held, own = training["sgd"]["cv"], test[THRESHOLDED_SGD]["test"], test["sgd"]["test"]
    lines = [
        "### The decision threshold for the target precision",
        f"- The chapter's way, on cross-validated scores: threshold {number(cv['threshold_at_target_precision'])}, "
        f"recall {number(cv['recall_at_target_precision'])}.",
        f"- Deployed: an SGD learns from the other training images and its threshold is chosen on "
        f"{choice['held_out_images']:,} held-out ones, scored by that same SGD: "
        f"threshold {number(choice['threshold'])}, recall {number(choice['recall'])}.",
        f"- On the test set, that threshold gives precision {metric_with_interval(held, 'precision')} "
        f"and recall {metric_with_interval(held, 'recall')} (95% intervals).",
        f"- The test set's own best point (known only afterwards): threshold "
        f"{number(own['threshold_at_target_precision'])}, recall {number(own['recall_at_target_precision'])}.",
    ]
    return "\n".join(lines)


def multiclass_section(
    training: dict[str, Any],
    test: dict[str, Any],
    best: str,
    labels: np.ndarray,
    predictions: dict[str, np.ndarray],
    class_names: list[str],
) -> str:
    rows = {
        name: {
            "model": MulticlassModels.describe(name) + (" (chosen)" if name == best else ""),
            "CV accuracy": number(training[name]["cv"]["accuracy"]),
            "validation accuracy": number(training[name]["validation"]["accuracy"]),
            "test accuracy (95% CI)": with_interval(int(np.count_nonzero(predicted == labels)), len(labels)),
            "test F1 (macro)": number(test[name]["test"]["f1_macro"]),
        }
        for name, predicted in predictions.items()
    }
    per_class = per_class_metrics(labels, predictions, class_names)
    parts = [
        "## Multiclass",
        "The chosen model has the best validation accuracy (a tie goes to the cheaper model); the test set plays "
        "no part in the choice.",
        table(pd.DataFrame(rows).T.set_index("model")),
    ]
    skipped = [MulticlassModels.describe(name) for name in MulticlassModels.model_fields if name not in predictions]
    if skipped:
        parts.append(f"Not run (no entry in params.yaml's `multiclass.models`): {', '.join(skipped)}.")
    parts.append("### Per class, on the test set")
    names = {name: MulticlassModels.describe(name) for name in predictions}
    for metric in ("precision", "recall", "F1"):
        parts += [f"{metric}:", table(per_class[metric].rename(columns=names).map(number))]
    return "\n\n".join([*parts, figures("multiclass")])


def multilabel_section(training: dict[str, Any], test: dict[str, Any], denoising: dict[str, Any]) -> str:
    frame = pd.DataFrame({"cross-validated": training["knn"]["cv"], "test": test["knn"]["test"]})
    lines = [
        "## Multilabel: digit >= 7, digit is odd (KNN)",
        table(frame.map(number)),
        "## Multioutput: removing noise (KNN)",
        f"Mean absolute pixel error on the 0..255 scale: {number(denoising['mean_abs_error'])} after cleaning, "
        f"{number(denoising['mean_abs_error_noisy'])} for the noisy input.",
        figures("multioutput"),
    ]
    return "\n\n".join(lines)


def render_report(sections: list[str], params: dict[str, Any]) -> str:
    header = (
        "# Results\n\nWritten by the `report` stage of `dvc repro`; every number is also in `reports/metrics/` "
        "(`dvc metrics show`). Intervals are 95% Wilson score intervals. `python tools/compare.py REV` says whether "
        "a difference from another revision is significant."
    )
    params_block = "## Params\n\n```yaml\n" + yaml.safe_dump(params, sort_keys=False) + "```"
    return "\n\n".join([header, *sections, params_block]) + "\n"
