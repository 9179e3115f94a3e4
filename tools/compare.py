"""Is the difference between two revisions' test metrics real, or the noise of a finite test set?

`dvc metrics diff` shows that accuracy moved from 0.941 to 0.945, not that four images are well within chance. This
reads every model's per-image test predictions (`reports/predictions/`, written by the `evaluate` stage) at two git
revisions and, per model and metric, gives the difference with a 95% interval from a paired bootstrap (the same
resampled test images for both revisions) and, for accuracy-type metrics, the exact McNemar test's p-value.

Usage: `python tools/compare.py REV_A [REV_B] [--json]` from inside the repo; REV_B defaults to the workspace (the
files on disk).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from functools import cache, partial
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stages"))
from mnist_dvc.study.metrics import THRESHOLDED_SGD  # the deployed SGD's column, as evaluate names it

PREDICTIONS = "reports/predictions"
TASKS = ("multiclass", "binary", "multilabel")
RESAMPLES = 2000
SEED = 0
BATCH = 100  # resamples a metric sees at once
MAX_LABEL = 2**31 - 1  # a class index or a 0/1 answer: any larger number is damage, not a label
ALPHA = 0.05
DECIMALS = 6

# A metric under bootstrap weights: (resamples, images) counts of each image in each resample -> one value each.
Metric = Callable[[np.ndarray], np.ndarray]


class CompareError(Exception):
    """A one-line reason the revisions cannot be compared; shown as `error: ...` with exit code 1."""


@dataclass(frozen=True)
class Paired:
    """One metric of one model at both revisions, ready to be compared on the same resampled images."""

    model: str
    metric: str
    at_a: Metric
    at_b: Metric
    correct: tuple[np.ndarray, np.ndarray] | None  # accuracy-type metrics: each image right or wrong, at A and at B


@dataclass(frozen=True)
class Row:
    model: str
    metric: str
    a: float
    b: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float | None


# Metrics, vectorised over resamples: counts of the resampled images are matrix products with the weights.


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is 0 (a metric undefined on that resample)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return numerator / denominator


def accuracy(weights: np.ndarray, correct: np.ndarray) -> np.ndarray:
    return ratio(weights @ correct, weights.sum(axis=1))


def precision(weights: np.ndarray, truth: np.ndarray, answers: np.ndarray) -> np.ndarray:
    return ratio(weights @ (truth & answers), weights @ answers)


def recall(weights: np.ndarray, truth: np.ndarray, answers: np.ndarray) -> np.ndarray:
    return ratio(weights @ (truth & answers), weights @ truth)


def macro_f1(weights: np.ndarray, truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Mean F1 over the columns of two (images, classes) indicator matrices; as scikit-learn's macro F1, a class
    neither in the truth nor in the answers of a resample does not count."""
    f1 = ratio(2 * (weights @ (truth & predicted)), weights @ truth + weights @ predicted)
    return np.nanmean(f1, axis=1)


def roc_auc(weights: np.ndarray, truth: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The chance that a positive image scores above a negative one (ties count half), with each image counted as
    often as it was drawn; NaN where a resample holds one class only."""
    order = np.argsort(scores, kind="stable")
    ordered, positive = scores[order], truth[order].astype(bool)
    drawn = weights[:, order]
    positives, negatives = np.where(positive, drawn, 0), np.where(positive, 0, drawn)
    below = np.concatenate([np.zeros((len(weights), 1)), np.cumsum(negatives, axis=1)], axis=1)
    lower = below[:, np.searchsorted(ordered, ordered, side="left")]
    tied = below[:, np.searchsorted(ordered, ordered, side="right")] - lower
    return ratio((positives * (lower + tied / 2)).sum(axis=1), positives.sum(axis=1) * negatives.sum(axis=1))


def indicators(labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """One boolean column per class: the layout macro_f1 takes."""
    return labels[:, None] == classes[None, :]


# The statistical tests.


@cache
def bootstrap_counts(images: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """How often each test image is drawn in each resample (with replacement). The same draws for every row, from a
    fixed seed: a row's interval does not depend on which other models or metrics are compared (cached, read-only).
    Small integers, drawn a batch of resamples at a time (the same draws as all at once), so that their memory stays a
    fraction of floats drawn at once (measured: docs/design.md)."""
    rng = np.random.default_rng(seed)
    counts = np.empty((resamples, images), dtype=np.min_scalar_type(images))
    for start in range(0, resamples, BATCH):
        draws = rng.integers(0, images, size=(min(BATCH, resamples - start), images))
        offsets = np.arange(len(draws))[:, None] * images
        counts[start : start + len(draws)] = np.bincount((draws + offsets).ravel(), minlength=draws.size).reshape(
            draws.shape
        )
    counts.flags.writeable = False
    return counts


def paired_bootstrap(
    at_a: Metric, at_b: Metric, images: int, resamples: int = RESAMPLES, seed: int = SEED
) -> tuple[float, float]:
    """95% percentile interval of B - A, both computed on the same resampled images: pairing removes the variation
    the two revisions share (the images that are hard for both), which is most of it. The metrics see BATCH
    resamples at a time, so their intermediate arrays stay small however large the test set (docs/design.md)."""
    counts = bootstrap_counts(images, resamples, seed)
    batches = (counts[start : start + BATCH].astype(float) for start in range(0, resamples, BATCH))
    differences = np.concatenate([at_b(weights) - at_a(weights) for weights in batches])
    low, high = np.nanpercentile(differences, [2.5, 97.5])
    return float(low), float(high)


def mcnemar_p(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Exact McNemar p-value: only the images exactly one revision gets right carry evidence, and under no
    difference each of them is equally likely to favour A or B."""
    only_a = int(np.count_nonzero(correct_a & ~correct_b))
    only_b = int(np.count_nonzero(correct_b & ~correct_a))
    if only_a + only_b == 0:
        return 1.0  # no image tells them apart
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def clean(value: float, digits: int = DECIMALS) -> float:
    """Rounded, and never -0.0, so the output's bytes are stable."""
    return round(float(value), digits) + 0.0


def compare(pair: Paired, images: int) -> Row | None:
    """The row of one paired metric; None where the metric is undefined at a revision."""
    everything = np.ones((1, images))
    a, b = float(pair.at_a(everything)[0]), float(pair.at_b(everything)[0])
    if np.isnan(a) or np.isnan(b):
        return None
    low, high = paired_bootstrap(pair.at_a, pair.at_b, images)
    p_value = None if pair.correct is None else float(f"{mcnemar_p(*pair.correct):.{DECIMALS}g}")
    return Row(pair.model, pair.metric, clean(a), clean(b), clean(b - a), clean(low), clean(high), p_value)


def significant(row: Row) -> bool:
    """The p-value decides where there is one, else whether the interval leaves out 0."""
    if row.p_value is not None:
        return row.p_value < ALPHA
    return row.ci_low > 0 or row.ci_high < 0


def verdict(row: Row) -> str:
    if not significant(row):
        return "no significant difference"
    return "B is better (significant)" if row.difference > 0 else "A is better (significant)"


# The tasks: which models a predictions file holds, and which metrics each gets.


def truth_columns(task: str, frame: pd.DataFrame) -> list[str]:
    return [name for name in frame.columns if name.startswith("truth")] if task == "multilabel" else ["truth"]


def model_names(task: str, frame: pd.DataFrame) -> list[str]:
    """Models in the file's column order; a multilabel model has one column per label (`knn_large`, `knn_odd`)."""
    others = [name for name in frame.columns if name not in truth_columns(task, frame)]
    if task == "binary":
        return [name for name in others if not name.endswith("_score")]
    if task == "multilabel":
        return list(dict.fromkeys(name.rsplit("_", 1)[0] for name in others))
    return others


def paired(model: str, metric: str, function: Callable, a: dict, b: dict, correct: tuple | None = None) -> Paired:
    """`function` with the inputs of revision A, and of revision B."""
    return Paired(model, metric, partial(function, **a), partial(function, **b), correct)


def binary_pairs(model: str, a: pd.DataFrame, b: pd.DataFrame) -> list[Paired]:
    truth = a["truth"].to_numpy(dtype=bool)
    answers = [frame[model].to_numpy(dtype=bool) for frame in (a, b)]
    if model == THRESHOLDED_SGD:  # SGD's answers at its chosen threshold; its scores, and so its AUC, are SGD's
        inputs = [{"truth": truth, "answers": answers[0]}, {"truth": truth, "answers": answers[1]}]
        return [paired(model, "precision", precision, *inputs), paired(model, "recall", recall, *inputs)]
    scores = [frame[f"{model}_score"].to_numpy(dtype=float) for frame in (a, b)]
    auc = paired(
        model, "roc_auc", roc_auc, {"truth": truth, "scores": scores[0]}, {"truth": truth, "scores": scores[1]}
    )
    correct = (answers[0] == truth, answers[1] == truth)
    return [paired(model, "accuracy", accuracy, {"correct": correct[0]}, {"correct": correct[1]}, correct), auc]


def multiclass_pairs(model: str, a: pd.DataFrame, b: pd.DataFrame) -> list[Paired]:
    truth = a["truth"].to_numpy()
    predicted = (a[model].to_numpy(), b[model].to_numpy())
    classes = np.unique(np.concatenate([truth, *predicted]))
    correct = (predicted[0] == truth, predicted[1] == truth)
    f1 = [{"truth": indicators(truth, classes), "predicted": indicators(p, classes)} for p in predicted]
    return [
        paired(model, "accuracy", accuracy, {"correct": correct[0]}, {"correct": correct[1]}, correct),
        paired(model, "f1_macro", macro_f1, *f1),
    ]


def multilabel_pairs(model: str, a: pd.DataFrame, b: pd.DataFrame) -> list[Paired]:
    truth_names = truth_columns("multilabel", a)
    truth = a[truth_names].to_numpy(dtype=bool)
    labels = [name.removeprefix("truth") for name in truth_names]
    predicted = [frame[[model + label for label in labels]].to_numpy(dtype=bool) for frame in (a, b)]
    correct = ((predicted[0] == truth).all(axis=1), (predicted[1] == truth).all(axis=1))
    return [
        paired(
            model,
            "f1_macro",
            macro_f1,
            {"truth": truth, "predicted": predicted[0]},
            {"truth": truth, "predicted": predicted[1]},
        ),
        paired(model, "exact_match", accuracy, {"correct": correct[0]}, {"correct": correct[1]}, correct),
    ]


PAIRS = {"multiclass": multiclass_pairs, "binary": binary_pairs, "multilabel": multilabel_pairs}


def task_rows(task: str, a: pd.DataFrame, b: pd.DataFrame) -> tuple[list[Row], list[str]]:
    """Rows for every model at both revisions, and a note for each model or metric left out."""
    check_same_test_set(task, a, b)
    names_a, names_b = model_names(task, a), model_names(task, b)
    notes = [f"{name} is only at A; skipped" for name in names_a if name not in names_b]
    notes += [f"{name} is only at B; skipped" for name in names_b if name not in names_a]
    rows = []
    for model in (name for name in names_a if name in names_b):
        for pair in PAIRS[task](model, a, b):
            row = compare(pair, len(a))
            if row is None:
                notes.append(f"{model} {pair.metric} is undefined at A or B (no positive answer or one class); skipped")
            else:
                rows.append(replace(row, model=f"{task}.{model}"))
    return rows, notes


# Reading the predictions.


def check_same_test_set(task: str, a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Image-by-image comparison needs the same images in the same order: the truth must match exactly."""
    columns = truth_columns(task, a)
    if len(a) != len(b):
        raise CompareError(f"{task}: A has {len(a)} test images, B {len(b)}: another dataset or split, not comparable")
    if columns != truth_columns(task, b) or not a[columns].equals(b[columns]):
        raise CompareError(f"{task}: the test labels differ between A and B: another dataset or split, not comparable")


def damage(task: str, frame: pd.DataFrame) -> str | None:
    """What is wrong with a predictions table, or None: the truth columns, numbers only, 0/1 answers or class
    indices, an answer column and a score column for each binary model, a column per label for a multilabel one."""
    missing = [name for name in truth_columns(task, frame) if name not in frame.columns]
    if missing or not truth_columns(task, frame):
        return f"no column {(missing or ['truth_*'])[0]!r}"
    if frame.empty:
        return "no rows"
    numbers = frame.apply(pd.to_numeric, errors="coerce")
    if numbers.isna().any().any():
        return "a missing or non-numeric value"
    labels = numbers[[name for name in frame.columns if not name.endswith("_score")]]
    if not ((labels % 1 == 0) & (labels >= 0) & (labels <= MAX_LABEL)).all().all():
        return f"a class index or answer that is not a whole number from 0 to {MAX_LABEL:,}"
    if task != "multiclass" and (labels > 1).any().any():
        return "an answer that is neither 0 nor 1"
    if task == "binary":
        scored = {name.removesuffix("_score") for name in frame.columns if name.endswith("_score")}
        unpaired = sorted((scored ^ set(model_names(task, frame))) - {THRESHOLDED_SGD})  # its scores are sgd's
        return f"answers and scores do not pair up ({', '.join(unpaired)})" if unpaired else None
    if task == "multilabel":
        suffixes = [name.removeprefix("truth") for name in truth_columns(task, frame)]
        models = model_names(task, frame)
        partial_models = [model for model in models if any(model + suffix not in frame for suffix in suffixes)]
        return f"{partial_models[0]!r} does not answer every label" if partial_models else None
    return None


def parse(task: str, content: bytes, source: str) -> pd.DataFrame:
    """A predictions CSV, checked, with whole-number columns as integers."""
    try:
        frame = pd.read_csv(io.BytesIO(content))
    except (ValueError, UnicodeDecodeError) as error:  # pandas' parser and empty-data errors are ValueErrors
        raise CompareError(f"{source}: damaged CSV ({str(error).splitlines()[0]})") from error
    problem = damage(task, frame)
    if problem is not None:
        raise CompareError(f"{source}: damaged CSV: {problem}")
    numbers = frame.apply(pd.to_numeric)
    return numbers.astype({name: int for name in frame.columns if not name.endswith("_score")})


def git(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """A git command, its output captured; no git on this machine is said as such."""
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True)
    except FileNotFoundError as error:
        raise CompareError("git is not installed, or not on PATH: compare.py reads the revisions with git") from error


def repo_root() -> Path:
    result = git("rev-parse", "--show-toplevel")
    if result.returncode != 0:
        raise CompareError("not inside a git repository: run it from the project's folder")
    return Path(result.stdout.decode().strip())


def read_revision(root: Path, revision: str | None) -> dict[str, pd.DataFrame]:
    """The three predictions files at a revision (`git show`), or on disk for None (the workspace)."""
    if revision is not None and git("rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}", cwd=root).returncode:
        raise CompareError(f"unknown revision {revision!r}")
    frames = {}
    for task in TASKS:
        path = f"{PREDICTIONS}/{task}.csv"
        if revision is None:
            if not (root / path).is_file():
                raise CompareError(f"the workspace has no {path}: run `dvc repro`")
            content, source = (root / path).read_bytes(), path
        else:
            shown = git("show", f"{revision}:{path}", cwd=root)
            if shown.returncode != 0:
                raise CompareError(f"{revision} has no {path}: run `dvc repro` and commit the predictions there")
            content, source = shown.stdout, f"{revision}:{path}"
        frames[task] = parse(task, content, source)
    return frames


# Output.


def number(value: float) -> str:
    return f"{value:.4f}"


def markdown(rows: list[Row]) -> str:
    if not rows:
        return "(no model at both revisions)"
    table = pd.DataFrame(
        {
            "model": [row.model.split(".", 1)[1] for row in rows],
            "metric": [row.metric for row in rows],
            "A": [number(row.a) for row in rows],
            "B": [number(row.b) for row in rows],
            "B - A": [f"{row.difference:+.4f}" for row in rows],
            "95% CI of B - A": [f"[{row.ci_low:+.4f}, {row.ci_high:+.4f}]" for row in rows],
            "McNemar p": ["-" if row.p_value is None else f"{row.p_value:.3g}" for row in rows],
            "verdict": [verdict(row) for row in rows],
        }
    )
    return table.to_markdown(index=False, disable_numparse=True)


def report(results: dict[str, tuple[list[Row], list[str]]], a: str, b: str, images: int) -> str:
    lines = [
        f"A = {a}, B = {b}: {images} test images; 95% intervals from a paired bootstrap ({RESAMPLES} resamples, "
        f"seed {SEED}); p: exact McNemar test (accuracy-type metrics); significant: p < {ALPHA}, else an interval "
        "without 0."
    ]
    for task, (rows, notes) in results.items():
        lines += ["", f"## {task}", "", markdown(rows)]
        lines += [""] + [f"note: {note}." for note in notes] if notes else []
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rev_a", metavar="REV_A", help="the revision to compare against (e.g. main)")
    parser.add_argument("rev_b", metavar="REV_B", nargs="?", help="the other revision (default: the workspace)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON (notes go to stderr)")
    args = parser.parse_args(argv)
    try:
        root = repo_root()
        a, b = read_revision(root, args.rev_a), read_revision(root, args.rev_b)
        results = {task: task_rows(task, a[task], b[task]) for task in TASKS}
    except CompareError as error:
        if os.environ.get("MNIST_DVC_DEBUG", "").strip() not in ("", "0"):
            traceback.print_exception(error)  # what led to the message, as the stages do
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    if args.json:
        for task, (_, notes) in results.items():
            for note in notes:
                print(f"note: {task}: {note}.", file=sys.stderr)
        print(json.dumps([asdict(row) for rows, _ in results.values() for row in rows], indent=2))
    else:
        print(report(results, args.rev_a, args.rev_b or "the workspace", len(a["multiclass"])))


if __name__ == "__main__":
    main()
