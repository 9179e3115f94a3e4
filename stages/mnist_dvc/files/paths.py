"""Where the pipeline reads and writes: the one place for each path (dvc.yaml declares the same ones).

A test runs every stage and checks that each file it writes lies inside one of that stage's `outs`.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PARAMS_FILE = ROOT / "params.yaml"
RAW_DIR = ROOT / "data" / "raw"
SPLIT_DIR = ROOT / "data" / "split"
MODELS_DIR = ROOT / "data" / "models"
# What each training stage's models answered for images they did not learn from (cross-validated, validation and test
# images), as arrays: `evaluate` turns them into metrics and the committed files of reports/.
ANSWERS_DIR = ROOT / "data" / "answers"
EVALUATION_DIR = ROOT / "data" / "evaluation"  # what `evaluate` hands to `report` that is not a report itself
# The multiclass models evaluated, the one chosen on the validation images, and how many images chose it.
MANIFEST_FILE = EVALUATION_DIR / "manifest.json"
DENOISED_FILE = EVALUATION_DIR / "denoised_examples.npy"  # the first test images, noisy and cleaned
REPORTS_DIR = ROOT / "reports"
PREDICTIONS_DIR = REPORTS_DIR / "predictions"  # every model's answer for every test image: tools/compare.py reads them
REPORT_FILE = REPORTS_DIR / "report.md"
DATA_OVERVIEW_FILE = REPORTS_DIR / "data_overview.json"  # the dataset and its class counts, from `split`
METRICS_DIR = REPORTS_DIR / "metrics"
PLOTS_DIR = REPORTS_DIR / "plots"  # the data behind the figures, for `dvc plots` and the `report` stage
BINARY_CV_SCORES_FILE = PLOTS_DIR / "binary_cv_scores.csv"  # each training image's out-of-sample scores
MULTICLASS_CV_FILE = PLOTS_DIR / "multiclass_cv_predictions.csv"  # each CV image's prediction by every model
FIGURES_DIR = REPORTS_DIR / "figures"

# DVC runs queued and temporary experiments in a copy of the repo under <repo>/.dvc/tmp/exps/.
_EXPERIMENT_COPIES = (".dvc", "tmp", "exps")


def user_root(root: Path = ROOT) -> Path:
    """The repo the user works in: `root`, or the repo holding it when `root` is a DVC experiment copy.

    Relative paths a user writes in params.yaml (a mirror folder) mean the same folder in both cases.
    """
    parts = root.parts
    for index in range(len(parts) - len(_EXPERIMENT_COPIES)):
        if parts[index : index + len(_EXPERIMENT_COPIES)] == _EXPERIMENT_COPIES:
            return Path(*parts[:index])
    return root


def display_path(path: Path) -> str:
    """A path inside the repo as messages show it (`data/split/train_images.npy`); others stay absolute."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)
