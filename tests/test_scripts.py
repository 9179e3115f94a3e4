"""Each stage script on 600 real digits in a scratch workspace: its outputs, and every bad input refused."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import ROOT, built_once, run
from mnist_dvc.datasets.registry import DIGITS, FASHION
from mnist_dvc.study.schema import MulticlassModels

pytestmark = pytest.mark.slow

ALL_MODELS = {"svc_hog", "svc_ovo", "svc_ovr", "knn", "forest", "sgd"}
SCRIPTS = ["split", "train_binary", "train_multiclass", "train_multilabel", "evaluate", "report"]
# As `dvc repro` runs them: `train_multiclass@<model>` is the script given the model's name.
STAGES = [
    item
    for script in SCRIPTS
    for item in (
        [f"{script}@{name}" for name in MulticlassModels.model_fields] if script == "train_multiclass" else [script]
    )
]
FIGURES = {
    "data": ["class_counts", "first_100_images", "first_image"],
    "binary": ["cv_precision_recall_vs_threshold", "cv_precision_vs_recall", "cv_roc"],
    "multiclass": ["cv_confusion_matrices", "cv_most_confused_pair"],
    "test": [
        "binary_precision_vs_recall",
        "binary_roc",
        "multiclass_confusion_matrices",
        "multiclass_misclassified",
        "multioutput_denoising",
    ],
}


def make_workspace(
    destination: Path, images: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...] = DIGITS
) -> Path:
    shutil.copytree(ROOT / "stages", destination / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["binary"]["forest"]["n_estimators"] = params["multiclass"]["models"]["forest"]["n_estimators"] = 20
    (destination / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    raw = destination / "data" / "raw"
    raw.mkdir(parents=True)
    np.save(raw / "images.npy", images)
    np.save(raw / "labels.npy", labels)
    (raw / "dataset.json").write_text(
        json.dumps(
            {"name": "tiny", "class_names": list(class_names), "handwritten": class_names == DIGITS, "test_start": None}
        )
    )
    return destination


def run_stage(workspace: Path, stage: str, check: bool = True, **env: str):
    """`stage` as DVC names it: `train_multiclass@knn` runs `stages/train_multiclass.py knn`."""
    script, *item = stage.split("@")
    return run([sys.executable, f"stages/{script}.py", *item], workspace, check=check, **env)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, sample) -> Path:
    """A workspace where every stage after download has run on 600 digits, built once per session (tests change
    only copies of it), with the files each stage wrote in `written.json` beside it."""

    def build(folder: Path) -> None:
        root = make_workspace(folder / "tiny", *sample)
        written = {}
        for stage in STAGES:
            before = snapshot(root)
            run_stage(root, stage)
            written[stage] = sorted(path for path, state in snapshot(root).items() if before.get(path) != state)
        (folder / "written.json").write_text(json.dumps(written))

    folder = built_once(tmp_path_factory, "workspace", build)
    WRITTEN.update({stage: set(paths) for stage, paths in json.loads((folder / "written.json").read_text()).items()})
    return folder / "tiny"


WRITTEN: dict[str, set[str]] = {}  # the files each stage wrote in the workspace


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file outside stages/ with its inode and modification time: a rewrite changes one or both."""
    return {
        str(path.relative_to(root)): (path.stat().st_ino, path.stat().st_mtime_ns)
        for path in root.rglob("*")
        if path.is_file() and path.relative_to(root).parts[0] not in ("stages", "params.yaml")
    }


def declared_outputs(stage: str) -> list[str]:
    """The outs of `stage`, a `foreach` item's with its key in place of `${key}`."""
    script, *item = stage.split("@")
    entry = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][script]
    entry = entry.get("do", entry)
    items = [*entry.get("outs", []), *entry.get("metrics", []), *entry.get("plots", [])]
    paths = [next(iter(item)) if isinstance(item, dict) else item for item in items]
    return [path.replace("${key}", item[0]) if item else path for path in paths]


@pytest.mark.parametrize("stage", STAGES)
def test_every_file_a_stage_writes_is_one_of_its_declared_outs(workspace, stage):
    outs = declared_outputs(stage)
    assert WRITTEN[stage], f"{stage} wrote nothing"
    for path in WRITTEN[stage]:
        assert any(path == out or path.startswith(f"{out}/") for out in outs), f"{stage} wrote {path}, not in {outs}"
    for out in outs:
        assert any(path == out or path.startswith(f"{out}/") for path in WRITTEN[stage]), f"{stage} never wrote {out}"


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.parametrize("stage", ["download", *SCRIPTS])
def test_every_stage_has_help(stage):
    result = run([sys.executable, f"stages/{stage}.py", "--help"], ROOT)
    assert result.stdout.startswith("usage:") and "Stage `" in result.stdout


def test_split_writes_arrays_and_counts(workspace):
    train_images = np.load(workspace / "data/split/train_images.npy")
    assert train_images.shape == (480, 28, 28) and train_images.dtype == np.uint8
    assert np.load(workspace / "data/split/test_labels.npy").shape == (120,)
    overview = read_json(workspace / "reports/data_overview.json")
    assert overview["class_counts"]["test"] == {str(digit): 12 for digit in range(10)}


def test_train_binary_writes_models_cv_metrics_and_curves(workspace):
    metrics = read_json(workspace / "reports/metrics/binary_cv.json")["binary"]
    assert metrics["dummy"]["cv"]["accuracy"] == pytest.approx(0.9)
    assert metrics["sgd"]["cv"]["accuracy"] > 0.9 and 0 < metrics["forest"]["oob"]["roc_auc"] <= 1
    assert sorted(p.name for p in (workspace / "data/models/binary").iterdir()) == [
        "dummy.skops",
        "forest.skops",
        "sgd_at_target_precision.skops",
    ]
    # The deployed SGD carries the threshold chosen on its own scores of the held-out training images.
    from mnist_dvc.files.models import read_model

    deployed = read_model(workspace / "data/models/binary/sgd_at_target_precision.skops")
    choice = metrics["sgd_at_target_precision"]["threshold_choice"]
    assert round(deployed.threshold, 6) == choice["threshold"] and choice["held_out_images"] == 120
    assert 0 < choice["recall"] <= 1
    header = (workspace / "reports/plots/binary_cv_pr_sgd.csv").read_text().splitlines()[0]
    assert header == "threshold,precision,recall"
    scores = (workspace / "reports/plots/binary_cv_scores.csv").read_text().splitlines()
    assert scores[0] == "truth,sgd,forest" and len(scores) == 481  # every training image, scored out of sample


def test_each_multiclass_stage_writes_its_model_and_its_answers(workspace):
    models = workspace / "data/models/multiclass"
    assert sorted(path.name for path in models.iterdir()) == sorted(f"{name}.skops" for name in ALL_MODELS)
    for name in ALL_MODELS:
        folder = workspace / "data/answers/multiclass" / name
        cv_images, validation_images = (np.load(folder / f"{part}_images.npy") for part in ("cv", "validation"))
        assert len(cv_images) == 432 and len(validation_images) == 48 and not set(cv_images) & set(validation_images)
        for part, size in (("cv", 432), ("validation", 48), ("test", 120)):
            predictions = np.load(folder / f"{part}_predictions.npy")
            assert predictions.shape == (size,) and predictions.dtype == np.uint8 and predictions.max() <= 9


def test_evaluate_chooses_the_multiclass_model_by_validation_accuracy(workspace):
    metrics = read_json(workspace / "reports/metrics/multiclass_cv.json")["multiclass"]
    assert set(metrics) == ALL_MODELS
    assert all(0 < m["validation"]["accuracy"] <= 1 for m in metrics.values())
    manifest = read_json(workspace / "data/evaluation/manifest.json")
    assert set(manifest["models"]) == ALL_MODELS and manifest["validation_images"] == 48
    chosen = manifest["chosen"]
    assert metrics[chosen]["validation"]["accuracy"] == max(m["validation"]["accuracy"] for m in metrics.values())
    assert max(m["cv"]["accuracy"] for m in metrics.values()) > 0.85
    predictions = (workspace / "reports/plots/multiclass_cv_predictions.csv").read_text().splitlines()
    assert predictions[0] == f"image,truth,{','.join(manifest['models'])}" and len(predictions) == 1 + 432


def test_train_multilabel_reports_f1(workspace):
    metrics = read_json(workspace / "reports/metrics/multilabel_cv.json")["multilabel"]["knn"]["cv"]
    assert 0.8 < metrics["f1_macro"] <= 1 and 0.8 < metrics["f1_weighted"] <= 1


def test_evaluate_scores_every_model_on_the_test_set(workspace):
    metrics = read_json(workspace / "reports/metrics/test.json")
    assert set(metrics["binary"]) == {"sgd", "dummy", "forest", "sgd_at_target_precision"}
    assert set(metrics["binary"]["sgd_at_target_precision"]["test"]) == {
        f"{metric}{bound}" for metric in ("precision", "recall") for bound in ("", "_low", "_high")
    }
    assert set(metrics["multiclass"]) == ALL_MODELS
    denoised = metrics["multioutput"]["knn"]["test"]
    assert denoised["mean_abs_error"] < denoised["mean_abs_error_noisy"]
    assert np.load(workspace / "data/evaluation/denoised_examples.npy").shape == (2, 10, 28, 28)
    assert metrics["multilabel"]["knn"]["test"]["f1_macro"] > 0.8
    confusion = (workspace / "reports/plots/multiclass_test_confusion.csv").read_text().splitlines()
    assert confusion[0] == "actual,predicted" and len(confusion) == 121


def test_report_draws_every_figure_and_the_page(workspace):
    for folder, names in FIGURES.items():
        for name in names:
            assert (workspace / f"reports/figures/{folder}/{name}.png").read_bytes()[:4] == b"\x89PNG", name
    assert len(list((workspace / "reports/figures").rglob("*.png"))) == sum(map(len, FIGURES.values()))
    report = (workspace / "reports/report.md").read_text()
    assert report.startswith("# Results\n\nWritten by the `report` stage")
    for section in ("data:", "split:", "binary:", "multiclass:", "multilabel:"):
        assert f"\n{section}\n" in report  # every params section, as the run used it


# --- bad input: a clear message naming the file or key, exit 1, nothing written -------------------


def fresh_copy(workspace: Path, destination: Path) -> Path:
    shutil.copytree(workspace, destination)
    return destination


def test_bad_param_stops_the_stage_before_it_writes(workspace, tmp_path):
    root = fresh_copy(workspace, tmp_path / "ws")
    shutil.rmtree(root / "reports")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["split"]["test_size"] = 1.5
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    result = run_stage(root, "split", check=False)
    assert result.returncode == 1
    assert "split.test_size = 1.5: Input should be less than 1" in result.stderr
    assert "Traceback" not in result.stderr and not (root / "reports").exists()


def test_truncated_data_file_is_named(workspace, tmp_path):
    root = fresh_copy(workspace, tmp_path / "ws")
    shutil.rmtree(root / "reports")
    images = root / "data/split/train_images.npy"
    images.write_bytes(images.read_bytes()[:1000])
    result = run_stage(root, "train_binary", check=False)
    assert result.returncode == 1
    assert "error: data/split/train_images.npy: not a valid .npy array file, corrupt or truncated" in result.stderr
    assert "Traceback" not in result.stderr and not (root / "reports").exists()


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def drop_model(root: Path, name: str) -> None:
    """`name` deleted from params.yaml after its stage ran: DVC leaves what that stage wrote in place."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    del params["multiclass"]["models"][name]
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def without_class(root: Path, part: str, digit: int = 5) -> None:
    path = root / f"data/split/{part}_labels.npy"
    labels = np.load(path)
    np.save(path, np.where(labels == digit, (digit + 1) % 10, labels).astype(np.uint8))


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (
            lambda root: truncate(root / "data/answers/multiclass/knn/test_predictions.npy"),
            "data/answers/multiclass/knn/test_predictions.npy: not a valid .npy array file, corrupt or truncated",
        ),
        (
            lambda root: np.save(root / "data/answers/binary/sgd_scores.npy", np.zeros(119)),
            "data/answers/binary/sgd_scores.npy: expected 120 answers, got (119,) (run `dvc repro`)",
        ),
        (
            lambda root: np.save(root / "data/answers/multiclass/knn/cv_images.npy", np.arange(432) + 1),
            "data/answers/multiclass: the models' cv_images differ: some stage ran with other multiclass.* params",
        ),
        (
            lambda root: np.save(root / "data/answers/multiclass/sgd/validation_images.npy", np.arange(470, 518)),
            "data/answers/multiclass/sgd/validation_images.npy: image numbers out of range",
        ),
        (
            lambda root: without_class(root, "test"),
            "binary.digit = 5: none of the 120 test images are '5'",
        ),
    ],
    ids=["truncated", "too-few-answers", "other-cv-images", "out-of-range", "no-5s"],
)
def test_bad_input_stops_evaluate_before_it_writes_anything(workspace, tmp_path, damage, expected):
    root = fresh_copy(workspace, tmp_path / "ws")
    shutil.rmtree(root / "reports/plots")
    shutil.rmtree(root / "reports/predictions")
    shutil.rmtree(root / "data/evaluation")
    (root / "reports/metrics/test.json").unlink()
    (root / "reports/plots").mkdir()  # the training stages' plot data live beside evaluate's: keep the folder
    damage(root)
    result = run_stage(root, "evaluate", check=False)
    assert result.returncode == 1 and expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert list((root / "reports/plots").iterdir()) == []
    assert not (root / "reports/predictions").exists() and not (root / "data/evaluation").exists()
    assert not (root / "reports/metrics/test.json").exists()


def test_evaluate_removes_what_the_stage_of_a_deleted_model_left(workspace, tmp_path):
    """DVC keeps the outputs of a stage that left dvc.yaml: evaluate scores the models params.yaml names, and removes
    the others' answers and model, which its dependency on data/answers would otherwise record."""
    root = fresh_copy(workspace, tmp_path / "ws")
    drop_model(root, "forest")
    result = run_stage(root, "evaluate")
    assert (
        "forest: no longer in params.yaml's multiclass.models: removing data/answers/multiclass/forest/ and "
        "data/models/multiclass/forest.skops" in result.stderr
    )
    assert sorted(path.name for path in (root / "data/answers/multiclass").iterdir()) == sorted(ALL_MODELS - {"forest"})
    assert not (root / "data/models/multiclass/forest.skops").exists()
    assert set(read_json(root / "reports/metrics/test.json")["multiclass"]) == ALL_MODELS - {"forest"}
    assert "forest" not in (root / "reports/predictions/multiclass.csv").read_text().splitlines()[0]


def edit_first_row(path: Path, edit) -> None:
    """A CSV file with its first data row edited as a list of cells."""
    lines = path.read_text().split("\n")
    lines[1] = ",".join(edit(lines[1].split(",")))
    path.write_text("\n".join(lines))


def misspell_a_section(root: Path) -> None:
    params = root / "params.yaml"
    params.write_text(params.read_text() + "multiclas:\n  cv_folds: 5\n")


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (misspell_a_section, "multiclas: unknown key (allowed: data, split, binary, multiclass, multilabel)"),
        (
            lambda root: edit_json(root / "data/evaluation/manifest.json", lambda m: m.update(chosen="xgboost")),
            "data/evaluation/manifest.json: not what evaluate writes (the file: Value error, 'chosen' "
            "should name one of the models, got 'xgboost'; run `dvc repro`)",
        ),
        (
            lambda root: edit_json(root / "data/evaluation/manifest.json", lambda m: m.update(models=["xgb"])),
            "manifest.json: not what evaluate writes (the file: Value error, unknown models ['xgb']",
        ),
        (
            lambda root: edit_json(root / "data/evaluation/manifest.json", lambda m: m.pop("validation_images")),
            "manifest.json: not what evaluate writes (validation_images: Field required",
        ),
        (
            lambda root: (root / "reports/metrics/multiclass_cv.json").write_text('{"cv": {}}'),
            "reports/metrics/multiclass_cv.json: missing key 'multiclass' (run `dvc repro` to rewrite it)",
        ),
        (
            lambda root: (root / "reports/plots/binary_cv_scores.csv").write_text("truth,forest\n1,0.5\n"),
            "reports/plots/binary_cv_scores.csv: missing the columns sgd (run `dvc repro` to rewrite it)",
        ),
        (
            lambda root: (root / "reports/plots/multiclass_cv_predictions.csv").write_text("image\n\x00\x01"),
            "reports/plots/multiclass_cv_predictions.csv: missing the columns truth",
        ),
        (
            lambda root: edit_first_row(
                root / "reports/predictions/multiclass.csv", lambda cells: ["seven", *cells[1:]]
            ),
            "reports/predictions/multiclass.csv: the columns truth should hold numbers",
        ),
        (
            lambda root: edit_first_row(root / "reports/predictions/multiclass.csv", lambda cells: ["7", *cells]),
            "reports/predictions/multiclass.csv: not a valid CSV file (Length of header or names does not match",
        ),
        (
            lambda root: edit_first_row(root / "reports/plots/binary_cv_scores.csv", lambda cells: ["1", "", "0.5"]),
            "reports/plots/binary_cv_scores.csv: the columns sgd have empty cells",
        ),
    ],
    ids=[
        "misspelled-section",
        "unknown-choice",
        "unknown-model",
        "manifest-incomplete",
        "metrics-of-another-task",
        "scores-missing",
        "predictions-garbled",
        "not-numbers",
        "row-too-long",
        "empty-cell",
    ],
)
def test_bad_input_stops_the_report_before_it_draws(workspace, tmp_path, damage, expected):
    root = fresh_copy(workspace, tmp_path / "ws")
    shutil.rmtree(root / "reports/figures")
    (root / "reports/report.md").unlink()
    damage(root)
    result = run_stage(root, "report", check=False)
    assert result.returncode == 1 and expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (root / "reports/figures").exists() and not (root / "reports/report.md").exists()


def set_param(root: Path, value: object, *keys: str) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    node = params
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.parametrize(
    ("stage", "edits", "expected"),
    [
        (
            "train_binary",
            [(("binary", "cv_folds"), 100)],
            "binary.cv_folds = 100, but the rarest class has 48 images among the training images: use at most 48",
        ),
        (
            "train_multiclass@knn",
            [(("multiclass", "cv_folds"), 50)],
            "multiclass.cv_folds = 50, but the rarest class has",
        ),
        (
            "train_multiclass@forest",
            [(("multiclass", "cv_max_samples"), 10)],
            "among the 10 images it cross-validates on (set by multiclass.cv_max_samples): use at most 1 folds, "
            "or raise multiclass.cv_max_samples",
        ),
        (
            "train_multilabel",
            [(("multilabel", "knn", "n_neighbors"), 1000)],
            "multilabel.knn.n_neighbors = 1000, but a CV fold trains on 320 images: use at most 320",
        ),
        (
            "train_multilabel",
            [(("multilabel", "cv_max_samples"), 10), (("multilabel", "cv_folds"), 20)],
            "multilabel.cv_folds = 20, but it cross-validates on 10 images (multilabel.cv_max_samples): use at most 10",
        ),
        (
            "train_multiclass@svc_ovo",
            [(("multiclass", "models", "svc_ovo", "pca_components"), 700)],
            "multiclass.models.svc_ovo.pca_components = 700, but a CV fold trains on 288 images",
        ),
        (
            "train_multiclass@svc_ovr",
            [(("multiclass", "models", "svc_ovr", "max_train_samples"), 20)],
            "multiclass.models.svc_ovr.max_train_samples = 20, but multiclass.models.svc_ovr.pca_components = 50: "
            "use at least 50",
        ),
        (
            "train_binary",
            [(("binary", "forest", "n_estimators"), 2)],
            "binary.forest.n_estimators = 2 leaves",
        ),
    ],
    ids=[
        "binary-folds",
        "multiclass-folds",
        "cv-subset",
        "knn-k",
        "multilabel-folds",
        "pca",
        "fit-subset",
        "few-trees",
    ],
)
def test_params_too_large_for_the_data_name_the_key(workspace, tmp_path, stage, edits, expected):
    root = fresh_copy(workspace, tmp_path / "ws")
    shutil.rmtree(root / "reports")
    shutil.rmtree(root / "data/models")
    for keys, value in edits:
        set_param(root, value, *keys)
    result = run_stage(root, stage, check=False)
    assert result.returncode == 1 and expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (root / "reports").exists() and not (root / "data/models").exists()


@pytest.mark.parametrize(
    ("model", "edit", "expected"),
    [
        ("xgboost", None, "params.yaml: multiclass.models.xgboost: unknown model (allowed: svc_hog, svc_ovo, svc_ovr,"),
        ("forest", "delete", "params.yaml: 'multiclass.models.forest' is missing"),
        ("forest", "empty", "params.yaml: multiclass.models.forest is empty: give the model's params, or delete"),
    ],
    ids=["unknown", "deleted", "empty"],
)
def test_a_multiclass_stage_for_a_model_params_do_not_describe_is_refused(workspace, tmp_path, model, edit, expected):
    root = fresh_copy(workspace, tmp_path / "ws")
    shutil.rmtree(root / "data/models")
    params = yaml.safe_load((root / "params.yaml").read_text())
    if edit == "delete":
        del params["multiclass"]["models"][model]
    elif edit == "empty":
        params["multiclass"]["models"][model] = None
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run_stage(root, f"train_multiclass@{model}", check=False)
    assert result.returncode == 1 and expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not (root / "data/models").exists()


def test_the_multiclass_stage_needs_a_model_name(workspace):
    result = run([sys.executable, "stages/train_multiclass.py"], workspace, check=False)
    assert result.returncode == 2 and "the following arguments are required: name" in result.stderr


def test_a_bug_in_the_pipelines_own_code_keeps_its_traceback(workspace, tmp_path):
    """A broken helper (HOG given a wrong shape) is not reported as the user's param."""
    root = fresh_copy(workspace, tmp_path / "ws")
    features = root / "stages/mnist_dvc/study/features.py"
    code = features.read_text()
    broken = code.replace(
        "    n, height, width = images.shape\n",
        "    n, height, width = images.shape\n    images = images.reshape(n, -1)  # a bug\n",
        1,
    )
    assert broken != code
    features.write_text(broken)
    result = run_stage(root, "train_multiclass@svc_hog", check=False)
    assert result.returncode != 0 and "Traceback (most recent call last)" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("IndexError: too many indices")  # the bug itself, not a message


def test_debug_shows_what_led_to_a_params_message(workspace, tmp_path):
    root = fresh_copy(workspace, tmp_path / "ws")
    set_param(root, 1.5, "split", "test_size")
    result = run([sys.executable, "stages/split.py"], root, check=False, MNIST_DVC_DEBUG="1")
    assert result.returncode == 1 and "Traceback (most recent call last)" in result.stderr
    assert "pydantic_core._pydantic_core.ValidationError" in result.stderr  # the cause, kept
    assert result.stderr.splitlines()[-1] == "  split.test_size = 1.5: Input should be less than 1"


def test_params_that_would_need_more_memory_than_allowed_are_refused_naming_them(workspace, tmp_path):
    root = fresh_copy(workspace, tmp_path / "ws")
    shutil.rmtree(root / "data/models")
    for key, value in (("orientations", 36), ("pixels_per_cell", 2), ("cells_per_block", 7)):
        set_param(root, value, "multiclass", "models", "svc_hog", key)
    result = run_stage(root, "train_multiclass@svc_hog", check=False, MNIST_DVC_MEMORY_LIMIT="500M")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    error = result.stderr.splitlines()[-1]
    assert error.startswith("error: these params would need about ") and "more than the 0.5 GB allowed" in error
    assert (
        "multiclass.models.svc_hog.orientations, pixels_per_cell, cells_per_block (113,680 features an image)" in error
    )
    assert error.endswith("or set MNIST_DVC_MEMORY_LIMIT (e.g. MNIST_DVC_MEMORY_LIMIT=16G) to allow more")
    assert not (root / "data/models").exists()


def test_a_binary_class_absent_from_the_training_set_is_named(workspace, tmp_path):
    root = fresh_copy(workspace, tmp_path / "ws")
    shutil.rmtree(root / "data/models")
    without_class(root, "train")
    result = run_stage(root, "train_binary", check=False)
    assert result.returncode == 1
    assert "binary.digit = 5: none of the 480 training images are '5'" in result.stderr
    assert "Traceback" not in result.stderr and not (root / "data/models").exists()


def test_class_names_other_than_digits_reach_every_report(tmp_path, sample):
    """A stand-in with Fashion-MNIST's names: the question, the counts, the confusion data and the metrics."""
    root = make_workspace(tmp_path, *sample, class_names=FASHION)
    logs = {stage: run_stage(root, stage).stderr for stage in STAGES}
    assert "'is it a Sandal?'" in logs["train_binary"]
    assert "svc_hog: deskew auto: off (tiny's images are not handwriting)" in logs["train_multiclass@svc_hog"]
    overview = read_json(root / "reports/data_overview.json")
    assert list(overview["class_counts"]["test"]) == list(FASHION)
    confusion = (root / "reports/plots/multiclass_test_confusion.csv").read_text().splitlines()
    assert {row.split(",")[0] for row in confusion[1:]} == set(FASHION)
    test = read_json(root / "reports/metrics/test.json")
    assert (
        set(test) == {"binary", "multiclass", "multilabel", "multioutput"}
        and test["binary"]["sgd"]["test"]["roc_auc"] > 0.8
    )
