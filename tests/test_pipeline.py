"""End to end: the real `dvc repro` in temp copies of the repo, as a user runs it."""

from __future__ import annotations

from mnist_dvc.runtime.numeric_profile import cpu_flags, why_not_applicable

import json
import os
import platform
import re
import signal
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, copy_repo, dvc, ran_stages, run, run_until, stages_with_parallel_work
from mnist_dvc.files.models import read_model

pytestmark = pytest.mark.slow
LOCK = (ROOT / "dvc.lock").read_text()


def lock_hashes(lock: dict) -> dict[str, str]:
    """Every path's hash in a dvc.lock, for every stage."""
    hashes = {}
    for stage, entry in lock["stages"].items():
        for kind in ("deps", "outs"):
            for item in entry.get(kind, []):
                hashes[f"{stage}:{kind}:{item['path']}"] = item["md5"]
    return hashes


def test_a_fresh_repro_reproduces_the_committed_lock_and_reports(reproduced):
    assert run(["git", "status", "--porcelain"], reproduced).stdout == ""
    committed = yaml.safe_load((ROOT / "dvc.lock").read_text())
    assert lock_hashes(yaml.safe_load((reproduced / "dvc.lock").read_text())) == lock_hashes(committed)


def test_a_second_repro_does_nothing(reproduced):
    result = dvc(["repro"], reproduced)
    assert ran_stages(result.stdout) == [] and "up to date" in result.stdout


def machine_kernel(**env: str | None) -> str:
    """The kernel OpenBLAS picks in a process that does not apply the numeric profile."""
    probe = "import numpy, threadpoolctl; print(threadpoolctl.threadpool_info()[0]['architecture'])"
    return run([sys.executable, "-c", probe], ROOT, **env).stdout.strip()


def has_avx512() -> bool:
    return "avx512f" in cpu_flags()


# What other CPUs and environments would make OpenBLAS and numpy run: each must give the committed bytes.
FORCED = {
    "skylakex": {"OPENBLAS_CORETYPE": "SkylakeX"},  # AVX-512 CPUs' own kernel
    "sandybridge": {"OPENBLAS_CORETYPE": "Sandybridge"},
    "prescott": {"OPENBLAS_CORETYPE": "Prescott"},  # reported as Katmai
    "numpy-without-avx512": {"OPENBLAS_CORETYPE": None, "NPY_DISABLE_CPU_FEATURES": "X86_V4"},
    "nothing-forced": {"OPENBLAS_CORETYPE": None, "NPY_ENABLE_CPU_FEATURES": None, "NPY_DISABLE_CPU_FEATURES": None},
}


@pytest.mark.skipif(
    why_not_applicable(platform.system(), platform.machine(), cpu_flags()) is not None,
    reason="the numeric profile does not apply on this machine: its model files may differ",
)
@pytest.mark.parametrize("forced", list(FORCED))
def test_a_fresh_repro_gives_the_committed_lock_whatever_kernel_the_environment_forces(tmp_path, forced):
    env = FORCED[forced]
    if forced == "skylakex" and not has_avx512():
        pytest.skip("this CPU has no AVX-512: SkylakeX's kernel would stop the probe with SIGILL")
    if env.get("OPENBLAS_CORETYPE"):
        assert machine_kernel(**env) != machine_kernel(OPENBLAS_CORETYPE="Haswell")  # the variable takes effect
    root = copy_repo(tmp_path / "repo")
    dvc(["repro", "-f"], root, **env)
    committed = yaml.safe_load((ROOT / "dvc.lock").read_text())
    assert lock_hashes(yaml.safe_load((root / "dvc.lock").read_text())) == lock_hashes(committed)
    assert run(["git", "status", "--porcelain"], root).stdout == ""


def test_native_runs_the_machines_kernel_and_changes_no_report(tmp_path):
    """MNIST_DVC_NUMERIC_PROFILE=native: the CPU's own kernel; models may differ, reports may not."""
    kernel = machine_kernel(OPENBLAS_CORETYPE=None)
    root = copy_repo(tmp_path / "repo")
    result = dvc(["repro", "-f"], root, OPENBLAS_CORETYPE=None, MNIST_DVC_NUMERIC_PROFILE="native")
    assert f"numeric profile off (MNIST_DVC_NUMERIC_PROFILE=native): numpy's openblas ({kernel} kernel" in (
        result.stdout + result.stderr
    )
    assert run(["git", "status", "--porcelain", "reports"], root).stdout == ""


def test_the_worker_count_changes_no_output(scratch):
    """One worker instead of every core: the same models, reports and dvc.lock, byte for byte. Forced: every stage
    with parallel work; the others run no job, so the worker count cannot reach them."""
    root = scratch
    dvc(["repro", "-f", "-s", *stages_with_parallel_work()], root, MNIST_DVC_JOBS="1")
    committed = yaml.safe_load((ROOT / "dvc.lock").read_text())
    assert lock_hashes(yaml.safe_load((root / "dvc.lock").read_text())) == lock_hashes(committed)
    assert run(["git", "status", "--porcelain"], root).stdout == ""


def merge(tree: dict, other: dict) -> None:
    """`other`'s keys into `tree`, level by level: the CV and test files share the top-level task keys."""
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            merge(tree[key], value)
        else:
            tree[key] = value


def shown_metrics(root: Path) -> dict:
    """Every metric `dvc metrics show` prints, merged into one tree."""
    shown = json.loads(dvc(["metrics", "show", "--json"], root).stdout)
    metrics: dict = {}
    for files in shown.values():
        for data in files["data"].values():
            merge(metrics, data["data"])
    return metrics


def test_metrics_cover_all_three_tasks_with_sane_values(reproduced):
    metrics = shown_metrics(reproduced)
    binary = metrics["binary"]
    assert binary["dummy"]["test"]["accuracy"] == pytest.approx(0.9)
    assert binary["sgd"]["test"]["accuracy"] > binary["dummy"]["test"]["accuracy"]
    assert binary["forest"]["test"]["roc_auc"] > binary["sgd"]["test"]["roc_auc"] > 0.9
    assert max(model["test"]["accuracy"] for model in metrics["multiclass"].values()) >= 0.93
    assert metrics["multilabel"]["knn"]["test"]["f1_macro"] > 0.9
    assert set(metrics["multiclass"]) == {"svc_hog", "svc_ovo", "svc_ovr", "knn", "forest", "sgd"}
    assert max(model["test"]["accuracy"] for model in metrics["multiclass"].values()) >= 0.98
    assert metrics["multioutput"]["knn"]["test"]["mean_abs_error"] < 25


def test_plots_show_renders_curves_confusion_and_figures(reproduced, tmp_path):
    dvc(["plots", "show", "-o", str(tmp_path / "plots")], reproduced)
    html = (tmp_path / "plots" / "index.html").read_text()
    for plot_id in (
        "binary_precision_vs_recall",
        "binary_precision_recall_vs_threshold",
        "binary_roc",
        "multiclass_confusion",
        "multiclass_recall_per_class",
    ):
        assert plot_id in html
    assert "is it a 5?" in html and "(binary.digit)" not in html  # titles name the class
    figures = sorted(
        str(p.relative_to(reproduced / "reports/figures")) for p in (reproduced / "reports/figures").rglob("*.png")
    )
    assert "test/multiclass_misclassified.png" in figures and "binary/cv_roc.png" in figures
    assert "test/multioutput_denoising.png" in figures and len(figures) == 13


def report_cells(report: str, heading: str) -> dict[str, list[str]]:
    """The first Markdown table after `heading`: its first column's text to the other cells of the row."""
    lines = report[report.index(heading) :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = [line.strip("|").split("|") for line in lines[start + 2 :] if line.startswith("|")][:20]
    return {cells[0].strip(): [cell.strip() for cell in cells[1:]] for cells in rows}


def test_the_report_matches_dvc_metrics_show(reproduced):
    metrics = shown_metrics(reproduced)
    report = (reproduced / "reports/report.md").read_text()
    multiclass = report_cells(report, "## Multiclass")
    from mnist_dvc.study.schema import MulticlassModels

    for name, model in metrics["multiclass"].items():
        row = next(cells for label, cells in multiclass.items() if label.startswith(MulticlassModels.describe(name)))
        cv, validation, test, f1 = row
        assert float(cv) == pytest.approx(model["cv"]["accuracy"], abs=5e-5)
        assert float(validation) == pytest.approx(model["validation"]["accuracy"], abs=5e-5)
        assert float(test.split()[0]) == pytest.approx(model["test"]["accuracy"], abs=5e-5)
        low, high = (float(bound) for bound in test.split("[")[1].rstrip("]").split(","))
        assert low < model["test"]["accuracy"] < high
        assert float(f1) == pytest.approx(model["test"]["f1_macro"], abs=5e-5)
    binary = report_cells(report, "Test set (accuracy")
    assert float(binary["SGD"][4]) == pytest.approx(metrics["binary"]["sgd"]["test"]["roc_auc"], abs=5e-5)
    held = metrics["binary"]["sgd_at_target_precision"]["test"]
    assert f"precision {held['precision']:.4f} [{held['precision_low']:.4f}" in report
    for link in re.findall(r"\]\((figures/[^)]+)\)", report):
        assert (reproduced / "reports" / link).is_file(), link


def test_a_changed_param_reruns_only_the_stages_that_read_it(scratch):
    params = yaml.safe_load((scratch / "params.yaml").read_text())
    params["multilabel"]["knn"]["n_neighbors"] = 3
    (scratch / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = json.loads(dvc(["status", "--json"], scratch).stdout)
    assert sorted(status) == ["report", "train_multilabel"]  # the report prints every param
    assert ran_stages(dvc(["repro"], scratch).stdout) == ["train_multilabel", "evaluate", "report"]


def test_exp_run_with_one_param_reruns_only_its_stages(scratch):
    result = dvc(["exp", "run", "-S", "binary.sgd.alpha=0.001"], scratch)
    assert ran_stages(result.stdout) == ["train_binary", "evaluate", "report"]


@pytest.mark.parametrize("module", ["report/figures.py", "report/markdown.py"])
def test_a_change_to_a_figure_or_the_report_retrains_and_rescores_nothing(scratch, module):
    code = scratch / "stages/mnist_dvc" / module
    code.write_text(code.read_text() + "\n# a reworded comment\n")
    assert sorted(json.loads(dvc(["status", "--json"], scratch).stdout)) == ["report"]
    assert ran_stages(dvc(["repro"], scratch).stdout) == ["report"]
    assert run(["git", "status", "--porcelain", "reports"], scratch).stdout == ""  # the same figures and page


MULTICLASS_STAGES = [f"train_multiclass@{name}" for name in ("svc_hog", "svc_ovo", "svc_ovr", "knn", "forest", "sgd")]


def test_a_change_to_the_cluster_code_reruns_only_the_stages_with_parallel_work(scratch):
    """`download`, `split`, `evaluate` and `report` send no work to workers: they do not depend on that layer."""
    code = scratch / "stages/mnist_dvc/parallel/cluster.py"
    code.write_text(code.read_text() + "\n# a reworded comment\n")
    changed = sorted(json.loads(dvc(["status", "--json"], scratch).stdout))
    assert changed == sorted(["train_binary", *MULTICLASS_STAGES, "train_multilabel"])


def test_more_cv_folds_change_the_cv_metrics_and_no_model(scratch):
    """The final fits do not depend on the folds: every model and test answer comes out the same, only the
    cross-validated metrics move."""
    params = scratch / "params.yaml"
    params.write_text(
        params.read_text().replace("  cv_folds: 3\n  cv_max_samples: 5000", "  cv_folds: 4\n  cv_max_samples: 5000")
    )
    assert ran_stages(dvc(["repro"], scratch).stdout) == [*MULTICLASS_STAGES, "evaluate", "report"]
    changed = run(["git", "status", "--porcelain"], scratch).stdout.split()[1::2]
    assert "reports/metrics/multiclass_cv.json" in changed and "reports/metrics/test.json" not in changed
    lock, committed = (yaml.safe_load(text)["stages"] for text in ((scratch / "dvc.lock").read_text(), LOCK))
    for stage in MULTICLASS_STAGES:
        model = next(out for out in lock[stage]["outs"] if out["path"].endswith(".skops"))
        assert model in committed[stage]["outs"], stage


def test_an_experiment_on_one_model_trains_and_scores_that_model_only(scratch):
    """A change to the KNN's param reruns its stage and the cheap ones after it; setting it back restores the KNN
    from DVC's run-cache without training it, and the workspace is the committed one again."""
    result = dvc(["exp", "run", "-S", "multiclass.models.knn.n_neighbors=3"], scratch)
    assert ran_stages(result.stdout) == ["train_multiclass@knn", "evaluate", "report"]
    result = dvc(["exp", "run", "-S", "multiclass.models.knn.n_neighbors=4"], scratch)
    # evaluate and report write committed (cache: false) files, which DVC's run-cache does not restore: they rerun.
    assert ran_stages(result.stdout) == ["evaluate", "report"]
    assert "Stage 'train_multiclass@knn' is cached - skipping run, checking out outputs" in result.stdout
    assert (scratch / "dvc.lock").read_text() == LOCK
    assert run(["git", "status", "--porcelain"], scratch).stdout == ""


def test_a_model_deleted_from_params_is_skipped_and_the_report_says_so(scratch):
    params = yaml.safe_load((scratch / "params.yaml").read_text())
    del params["multiclass"]["models"]["forest"]
    (scratch / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert ran_stages(dvc(["repro"], scratch).stdout) == ["evaluate", "report"]
    assert set(json.loads((scratch / "reports/metrics/test.json").read_text())["multiclass"]) == {
        "svc_hog",
        "svc_ovo",
        "svc_ovr",
        "knn",
        "sgd",
    }
    report = (scratch / "reports/report.md").read_text()
    assert "Not run (no entry in params.yaml's `multiclass.models`): random forest" in report
    assert not (scratch / "data/answers/multiclass/forest").exists()
    assert dvc(["status"], scratch).stdout.strip() == "Data and pipelines are up to date."


def test_branches_with_different_params_give_a_metrics_diff(scratch):
    run(["git", "checkout", "-q", "-b", "stronger-regularization"], scratch)
    dvc(["exp", "run", "-S", "binary.sgd.alpha=0.01"], scratch)
    run(["git", "commit", "-qam", "alpha 0.01"], scratch)
    diff = json.loads(dvc(["metrics", "diff", "main", "--json"], scratch).stdout)
    changed = {key for file in diff.values() for key in file}
    assert "binary.sgd.test.f1" in changed and "binary.sgd.cv.accuracy" in changed
    assert not any(key.startswith("multiclass") for key in changed)


def test_a_grid_sweep_through_the_queue_runs_every_experiment_with_its_own_metrics(scratch):
    """DVC's own sweep syntax: a 2x2 grid queued at once, run two at a time."""
    grid = ["-S", "multilabel.knn.n_neighbors=3,7", "-S", "multilabel.knn.weights=uniform,distance"]
    dvc(["exp", "run", "--queue", *grid], scratch)
    dvc(["queue", "start", "-j", "2"], scratch)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        status = dvc(["queue", "status"], scratch).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    dvc(["queue", "stop", "--kill"], scratch, check=False)
    assert status.count("Success") == 4, status
    shown = json.loads(dvc(["exp", "show", "--json"], scratch).stdout)
    results = {}
    for commit in shown:
        for experiment in commit.get("experiments") or []:
            for revision in experiment["revs"]:
                knn = revision["data"]["params"]["params.yaml"]["data"]["multilabel"]["knn"]
                metrics = revision["data"]["metrics"]["reports/metrics/test.json"]["data"]
                results[knn["n_neighbors"], knn["weights"]] = metrics["multilabel"]["knn"]["test"]["f1_macro"]
    assert set(results) == {(k, w) for k in (3, 7) for w in ("uniform", "distance")}
    assert results[3, "uniform"] != results[7, "uniform"] and results[3, "distance"] != results[7, "distance"]


def test_a_stage_killed_midway_recovers_to_the_clean_lock(scratch):
    """`dvc repro` killed (with its stage) while the stage trains, after DVC removed the old outputs: the next
    `dvc repro` restores that stage and ends at the committed lock. (A kill while a file is written leaves no file of
    an output's name: files.atomic_path, tested in test_files.)"""
    clean = (scratch / "dvc.lock").read_text()
    process = run_until(
        [sys.executable, "-m", "dvc", "repro", "-f", "-s", "train_multiclass@svc_hog"],
        scratch,
        "svc_hog: learns from",
        new_session=True,
    )
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (scratch / "data/models/multiclass/svc_hog.skops").exists()
    assert not (scratch / "data/answers/multiclass/svc_hog").exists()

    result = dvc(["repro"], scratch)
    # The killed run's params and deps are those of the committed one: DVC's run-cache gives its outputs back.
    assert "Stage 'train_multiclass@svc_hog' is cached - skipping run, checking out outputs" in result.stdout
    read_model(scratch / "data/models/multiclass/svc_hog.skops")
    assert (scratch / "dvc.lock").read_text() == clean
    assert run(["git", "status", "--porcelain"], scratch).stdout == ""


def params_in_report(root: Path) -> dict:
    """The params block `report` wrote into report.md, read as YAML 1.2."""
    from ruamel.yaml import YAML

    report = (root / "reports/report.md").read_text()
    return YAML(typ="safe").load(report.split("## Params\n\n```yaml\n", 1)[1].split("```", 1)[0])


@pytest.mark.parametrize(
    ("key", "written", "value"),
    [
        ("binary.sgd.alpha", "0.00001", 1e-05),
        ("multilabel.knn.n_neighbors", "7", 7),
        ("multiclass.models.sgd.alpha", "1e16", 1e16),
        ("multiclass.models.svc_ovo.C", "0.0000001", 1e-07),
    ],
)
def test_dvc_exp_run_with_a_small_or_large_float_runs_and_params_diff_agrees(scratch, key, written, value):
    """DVC writes 0.00001 as `1e-05`: the stages read params.yaml as DVC does, so they run with that number."""
    dvc(["exp", "run", "-S", f"{key}={written}"], scratch)
    diff = json.loads(dvc(["params", "diff", "--json"], scratch).stdout)["params.yaml"][key]
    assert diff["new"] == value
    node = params_in_report(scratch)
    for part in key.split("."):
        node = node[part]
    assert node == value  # what the stages used, as the report prints it


def test_a_misspelled_section_set_the_dvc_way_stops_the_run(scratch):
    result = dvc(["exp", "run", "-S", "+multiclas.cv_folds=5"], scratch, check=False)
    assert result.returncode != 0
    assert (
        "multiclas: unknown key (allowed: data, split, binary, multiclass, multilabel)" in result.stdout + result.stderr
    )


def test_params_changed_by_a_second_run_during_a_stage_fail_the_first(scratch):
    """Two `dvc exp run` in one workspace: the second rewrites params.yaml while the first trains. The first must
    not record k=7 beside k=3's outputs: its stage fails, and DVC records nothing."""
    committed = (scratch / "dvc.lock").read_text()
    # Once train_multilabel has read its params and is training:
    first = run_until(
        [sys.executable, "-m", "dvc", "exp", "run", "-S", "multilabel.knn.n_neighbors=3"], scratch, "knn: 3-fold CV"
    )
    second = dvc(["exp", "run", "-S", "multilabel.knn.n_neighbors=7"], scratch, check=False)
    output = first.stdout.read()
    first.wait(timeout=300)
    assert second.returncode != 0  # DVC's own lock
    assert first.returncode != 0
    assert "params.yaml changed while the stage ran" in output
    assert (scratch / "dvc.lock").read_text() == committed  # nothing recorded for train_multilabel
    status = json.loads(dvc(["status", "--json"], scratch).stdout)
    assert "train_multilabel" in status  # and DVC says it is not up to date, rather than that it is
