"""tools/compare.py: the statistics on synthetic predictions, the command in a small git repo, and on real runs."""

from __future__ import annotations

import json
import shutil
import sys
import tracemalloc
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from compare import (
    CompareError,
    Row,
    accuracy,
    indicators,
    macro_f1,
    mcnemar_p,
    paired_bootstrap,
    parse,
    precision,
    recall,
    roc_auc,
    task_rows,
    verdict,
)
from conftest import ROOT, built_once, dvc, run

TOOL = ROOT / "tools" / "compare.py"
KEYS = ["model", "metric", "a", "b", "difference", "ci_low", "ci_high", "p_value"]


def wrong_at(labels: np.ndarray, images: np.ndarray) -> np.ndarray:
    """The labels, with the given images answered as the next class."""
    answers = labels.copy()
    answers[images] = (answers[images] + 1) % 10
    return answers


@pytest.fixture
def labels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 10, 400)


def multiclass(truth: np.ndarray, **models: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"truth": truth, **models})


# The statistics.


@pytest.mark.parametrize("weights", [np.ones(400), np.random.default_rng(1).integers(0, 4, 400)], ids=["all", "drawn"])
def test_the_vectorised_metrics_agree_with_scikit_learn(weights):
    """Counting each image as often as a resample drew it is scikit-learn's sample_weight."""
    rng = np.random.default_rng(2)
    truth, predicted = rng.integers(0, 10, 400), rng.integers(0, 10, 400)
    target, answers = truth == 5, rng.random(400) < 0.2
    scores = np.round(rng.normal(size=400) + target, 1)  # rounded: ties, which count half
    resample = weights[None, :].astype(float)
    classes = np.arange(10)
    assert accuracy(resample, truth == predicted)[0] == pytest.approx(
        accuracy_score(truth, predicted, sample_weight=weights)
    )
    f1 = macro_f1(resample, indicators(truth, classes), indicators(predicted, classes))[0]
    assert f1 == pytest.approx(f1_score(truth, predicted, average="macro", sample_weight=weights))
    assert precision(resample, target, answers)[0] == pytest.approx(
        precision_score(target, answers, sample_weight=weights)
    )
    assert recall(resample, target, answers)[0] == pytest.approx(recall_score(target, answers, sample_weight=weights))
    assert roc_auc(resample, target, scores)[0] == pytest.approx(roc_auc_score(target, scores, sample_weight=weights))


def test_identical_predictions_give_no_difference_and_p_one(labels):
    frame = multiclass(labels, knn=wrong_at(labels, np.arange(0, 400, 9)))
    rows, notes = task_rows("multiclass", frame, frame.copy())
    assert notes == [] and [(row.model, row.metric) for row in rows] == [
        ("multiclass.knn", "accuracy"),
        ("multiclass.knn", "f1_macro"),
    ]
    for row in rows:
        assert (row.difference, row.ci_low, row.ci_high) == (0, 0, 0)
        assert verdict(row) == "no significant difference"
    assert [row.p_value for row in rows] == [1.0, None]


def test_mcnemar_is_the_exact_binomial_test_on_the_discordant_images():
    # 3 images only A gets right, 12 only B, 80 both, 5 neither
    correct_a = np.array([True] * 3 + [False] * 12 + [True] * 80 + [False] * 5)
    correct_b = np.array([False] * 3 + [True] * 12 + [True] * 80 + [False] * 5)
    assert mcnemar_p(correct_a, correct_b) == pytest.approx(binomtest(3, 15, 0.5).pvalue)
    assert mcnemar_p(correct_b, correct_a) == pytest.approx(binomtest(3, 15, 0.5).pvalue)
    assert mcnemar_p(correct_a, correct_a) == 1.0


def test_the_bootstrap_interval_covers_the_difference_and_is_reproducible():
    rng = np.random.default_rng(3)
    correct_a, correct_b = rng.random(400) < 0.85, rng.random(400) < 0.9
    at_a, at_b = (lambda w: accuracy(w, correct_a)), (lambda w: accuracy(w, correct_b))
    low, high = paired_bootstrap(at_a, at_b, 400)
    assert low < correct_b.mean() - correct_a.mean() < high
    assert paired_bootstrap(at_a, at_b, 400) == (low, high)
    assert paired_bootstrap(at_a, at_b, 400, seed=1) != (low, high)


def test_verdict_says_which_revision_is_better():
    row = Row("multiclass.knn", "accuracy", 0.9, 0.95, 0.05, 0.02, 0.08, 0.001)
    assert verdict(row) == "B is better (significant)"
    assert verdict(Row(**{**row.__dict__, "difference": -0.05, "p_value": 0.01})) == "A is better (significant)"
    assert verdict(Row(**{**row.__dict__, "p_value": 0.2})) == "no significant difference"  # the p-value decides
    no_test = {**row.__dict__, "p_value": None}
    assert verdict(Row(**no_test)) == "B is better (significant)"  # else the interval, here without 0
    assert verdict(Row(**{**no_test, "ci_low": -0.01})) == "no significant difference"


def test_another_test_set_is_a_clear_error(labels):
    a = multiclass(labels, knn=labels)
    with pytest.raises(CompareError, match="test labels differ between A and B"):
        task_rows("multiclass", a, multiclass(wrong_at(labels, [0]), knn=labels))
    with pytest.raises(CompareError, match="A has 400 test images, B 399"):
        task_rows("multiclass", a, a.iloc[:-1])


def test_a_model_at_one_revision_only_is_skipped_with_a_note(labels):
    a = multiclass(labels, knn=labels, forest=labels)
    rows, notes = task_rows("multiclass", a, multiclass(labels, knn=labels, sgd=labels))
    assert {row.model for row in rows} == {"multiclass.knn"}
    assert notes == ["forest is only at A; skipped", "sgd is only at B; skipped"]


@pytest.mark.parametrize(
    ("task", "content", "problem"),
    [
        ("multiclass", b"", "damaged CSV (No columns to parse from file)"),
        ("multiclass", b"label,knn\n1,1\n", "no column 'truth'"),
        ("multiclass", b"truth,knn\n", "no rows"),
        ("multiclass", b"truth,knn\n1,1\n2\n", "a missing or non-numeric value"),
        ("multiclass", b"truth,knn\n1,x\n", "a missing or non-numeric value"),
        ("multiclass", b"truth,knn\n1,1.5\n", "not a whole number from 0"),
        ("multiclass", b"truth,knn\n1,99999999999999999999\n", "not a whole number from 0 to 2,147,483,647"),
        ("binary", b"truth,sgd,sgd_score\n1,2,0.5\n", "neither 0 nor 1"),
        ("binary", b"truth,sgd,sgd_score,forest\n1,1,0.5,1\n", "do not pair up (forest)"),
        ("multilabel", b"large,odd\n1,1\n", "no column 'truth_*'"),
        ("multilabel", b"truth_large,truth_odd,knn_large\n1,1,1\n", "'knn' does not answer every label"),
    ],
)
def test_a_damaged_csv_is_named(task, content, problem):
    with pytest.raises(CompareError, match=r"^HEAD:x.csv: damaged CSV") as error:
        parse(task, content, "HEAD:x.csv")
    assert problem in str(error.value)


# The command, in a small git repo without DVC.


def write_predictions(root: Path, labels: np.ndarray, **models: np.ndarray) -> None:
    folder = root / "reports" / "predictions"
    folder.mkdir(parents=True, exist_ok=True)
    multiclass(labels, **models).to_csv(folder / "multiclass.csv", index=False)
    target = (labels == 5).astype(int)
    scores = np.round(target + np.linspace(-0.6, 0.6, len(labels)), 4)
    answers = (scores > 0.5).astype(int)
    binary = {"truth": target, "sgd": answers, "sgd_score": scores, "sgd_at_target_precision": answers}
    pd.DataFrame(binary).to_csv(folder / "binary.csv", index=False)
    truth = {"truth_large": (labels >= 7).astype(int), "truth_odd": labels % 2}
    knn = {"knn_large": truth["truth_large"], "knn_odd": truth["truth_odd"]}
    pd.DataFrame(truth | knn).to_csv(folder / "multilabel.csv", index=False)


def compare(root: Path, *args: str, check: bool = True):
    return run([sys.executable, str(TOOL), *args], root, check=check)


@pytest.fixture
def history(tmp_path, labels) -> Path:
    """Three commits: no predictions yet; the first predictions; a much worse `forest` and a new `sgd` model."""
    run(["git", "init", "-q", "-b", "main"], tmp_path)
    (tmp_path / "README.md").write_text("predictions to come\n")
    run(["git", "add", "-A"], tmp_path)
    run(["git", "commit", "-qm", "start"], tmp_path)
    write_predictions(tmp_path, labels, knn=wrong_at(labels, np.arange(0, 400, 20)), forest=labels)
    run(["git", "add", "-A"], tmp_path)
    run(["git", "commit", "-qm", "first predictions"], tmp_path)
    forest = wrong_at(labels, np.arange(0, 400, 10))  # 40 more images wrong
    write_predictions(tmp_path, labels, knn=wrong_at(labels, np.arange(0, 400, 20)), forest=forest, sgd=labels)
    run(["git", "add", "-A"], tmp_path)
    run(["git", "commit", "-qm", "worse forest, new sgd"], tmp_path)
    return tmp_path


def test_the_command_compares_two_commits(history):
    table = compare(history, "HEAD~1", "HEAD").stdout
    assert table.startswith("A = HEAD~1, B = HEAD: 400 test images")
    assert "## multiclass" in table and "## binary" in table and "## multilabel" in table
    forest = next(line for line in table.splitlines() if line.startswith("| forest  | accuracy"))
    assert "1.0000 | 0.9000 | -0.1000" in forest and "A is better (significant)" in forest
    assert "note: sgd is only at B; skipped." in table
    # the workspace is the default B, and here holds HEAD's files
    assert compare(history, "HEAD~1").stdout.replace("B = the workspace", "B = HEAD") == table


def test_the_json_holds_the_same_rows(history):
    result = compare(history, "HEAD~1", "HEAD", "--json")
    rows = json.loads(result.stdout)
    assert all(list(row) == KEYS for row in rows)
    by_key = {(row["model"], row["metric"]): row for row in rows}
    forest = by_key["multiclass.forest", "accuracy"]
    assert (forest["a"], forest["b"], forest["difference"]) == (1.0, 0.9, -0.1)
    assert forest["ci_low"] < -0.1 < forest["ci_high"] < 0
    assert forest["p_value"] == pytest.approx(binomtest(0, 40, 0.5).pvalue)
    knn = by_key["multiclass.knn", "f1_macro"]
    assert knn["difference"] == 0 and knn["p_value"] is None
    assert {model for model, _ in by_key} == {
        "multiclass.knn",
        "multiclass.forest",
        "binary.sgd",
        "binary.sgd_at_target_precision",
        "multilabel.knn",
    }
    assert result.stderr == "note: multiclass: sgd is only at B; skipped.\n"
    assert compare(history, "HEAD~1", "--json").stdout == result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no-such-branch"], "error: unknown revision 'no-such-branch'\n"),
        (["HEAD~2"], "error: HEAD~2 has no reports/predictions/multiclass.csv: run `dvc repro` and commit"),
    ],
)
def test_a_revision_that_cannot_be_read_is_a_one_line_error(history, args, message):
    result = compare(history, *args, check=False)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(message) and len(result.stderr.splitlines()) == 1


def test_without_git_on_the_path_it_says_so_in_one_line(history, tmp_path):
    (tmp_path / "bin").mkdir()
    result = run([sys.executable, str(TOOL), "HEAD"], history, check=False, PATH=str(tmp_path / "bin"))
    assert result.returncode == 1
    assert result.stderr == "error: git is not installed, or not on PATH: compare.py reads the revisions with git\n"


def test_the_bootstrap_holds_a_bounded_memory_on_a_large_test_set():
    """50,000 test images: the draws as small integers, the metrics on a batch of resamples at a time."""
    images = 50_000
    rng = np.random.default_rng(1)
    truth, scores = rng.integers(0, 2, images), rng.random(images)
    tracemalloc.start()
    try:
        paired_bootstrap(
            partial(roc_auc, truth=truth, scores=scores), partial(roc_auc, truth=truth, scores=scores * 2), images
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 700 * 2**20  # drawn and scored all at once: 5.7 GB


def test_a_changed_test_set_or_a_damaged_file_is_a_one_line_error(history, labels):
    write_predictions(history, np.roll(labels, 1), forest=labels)
    result = compare(history, "HEAD", check=False)
    assert result.returncode == 1 and result.stderr.startswith("error: multiclass: the test labels differ")
    assert len(result.stderr.splitlines()) == 1
    (history / "reports" / "predictions" / "binary.csv").write_text("truth,sgd\n1,\n")
    result = compare(history, "HEAD", check=False)
    assert result.returncode == 1
    assert result.stderr == "error: reports/predictions/binary.csv: damaged CSV: a missing or non-numeric value\n"


# On real runs of the pipeline.


def compare_branches(reproduced: Path, folder: Path) -> None:
    """`compare.py main --json` on two branches of a copy of the reproduced repo, a change of seed and a far too
    small C, each branch's rows in `<branch>.json`."""
    root = Path(shutil.copytree(reproduced, folder / "repo", symlinks=True))
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-q", "--allow-empty", "-m", "reproduced"], root)
    for branch, (section, old, new) in {
        "forest-seed": ("    forest:\n", "      random_state: 42\n", "      random_state: 43\n"),
        "svc-ovo-small-c": ("    svc_ovo:", "      C: 10\n", "      C: 0.001\n"),
    }.items():
        run(["git", "checkout", "-q", "main"], root)
        dvc(["checkout", "-q"], root)
        run(["git", "checkout", "-q", "-b", branch], root)
        params = (root / "params.yaml").read_text()
        head, _, tail = params.partition(section)
        assert tail and old in tail
        (root / "params.yaml").write_text(head + section + tail.replace(old, new, 1))
        dvc(["repro"], root)
        run(["git", "commit", "-qam", branch], root)
        rows = run([sys.executable, str(root / "tools" / "compare.py"), "main", "--json"], root).stdout
        (folder / f"{branch}.json").write_text(rows)


@pytest.fixture(scope="module")
def comparisons(reproduced, tmp_path_factory) -> dict[str, dict[tuple[str, str], dict]]:
    """The two branches' rows by (model, metric), compared once per test session."""
    folder = built_once(tmp_path_factory, "comparisons", partial(compare_branches, reproduced))
    return {
        branch: {(row["model"], row["metric"]): row for row in json.loads((folder / f"{branch}.json").read_text())}
        for branch in ("forest-seed", "svc-ovo-small-c")
    }


@pytest.mark.slow
def test_another_forest_seed_makes_no_significant_difference(comparisons):
    rows = comparisons["forest-seed"]
    assert rows["multiclass.forest", "accuracy"]["difference"] != 0  # the forest did change ...
    assert rows["multiclass.forest", "accuracy"]["p_value"] >= 0.05  # ... within noise
    assert rows["multiclass.forest", "accuracy"]["ci_low"] < 0 < rows["multiclass.forest", "accuracy"]["ci_high"]
    assert rows["multiclass.svc_ovo", "accuracy"]["difference"] == 0


@pytest.mark.slow
def test_a_far_too_small_c_makes_the_svc_significantly_worse(comparisons):
    svc = comparisons["svc-ovo-small-c"]["multiclass.svc_ovo", "accuracy"]
    assert svc["p_value"] < 0.05 and svc["difference"] < 0 and svc["ci_high"] < 0
    assert comparisons["svc-ovo-small-c"]["multiclass.forest", "accuracy"]["difference"] == 0
