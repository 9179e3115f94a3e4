"""The pull-request check: tools/pr_check.py on two real revisions, and the workflow that runs it."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from conftest import ROOT, dvc, run

WORKFLOW = ROOT / ".github/workflows/reproduce.yml"
TASKS = ("binary", "multiclass", "multilabel")


def pr_check(root: Path, base: str) -> tuple[int, str]:
    result = run([sys.executable, str(ROOT / "tools/pr_check.py"), base, "--output", "check.md"], root, check=False)
    return result.returncode, (root / "check.md").read_text()


@pytest.mark.slow
def test_a_pull_request_that_committed_its_outputs_passes_with_its_metrics_and_their_significance(scratch):
    run(["git", "checkout", "-q", "-b", "fewer-neighbours"], scratch)
    dvc(["exp", "run", "-S", "multilabel.knn.n_neighbors=3"], scratch)
    run(["git", "commit", "-qam", "multilabel: 3 neighbours"], scratch)
    code, comment = pr_check(scratch, "main")
    assert code == 0, comment
    assert "**Reproduced**: `dvc repro` gave every committed output byte for byte" in comment
    assert "No DVC remote is configured" in comment
    metrics = comment[comment.index("## Metrics against `main`") : comment.index("## Is each difference")]
    assert "multilabel.knn.test.f1_macro" in metrics and "multiclass" not in metrics  # only what moved
    significance = comment[comment.index("## Is each difference") :]
    assert "| knn" in significance and "exact_match" in significance and "verdict" in significance


@pytest.mark.slow
def test_a_pull_request_with_stale_outputs_fails_and_names_them(scratch):
    run(["git", "checkout", "-q", "-b", "stale"], scratch)
    params = scratch / "params.yaml"
    params.write_text(params.read_text().replace("n_neighbors: 5", "n_neighbors: 3", 1))
    run(["git", "commit", "-qam", "multilabel: 3 neighbours, outputs not rebuilt"], scratch)
    code, comment = pr_check(scratch, "main")
    assert code == 1
    assert "**Not reproduced**" in comment
    assert "- `dvc.lock` (changed)" in comment and "- `reports/metrics/test.json` (changed)" in comment
    assert "multilabel.knn.test.f1_macro" in comment  # the metrics still compare what the code gives


@pytest.mark.slow
def test_the_check_pulls_from_a_remote_when_one_is_configured(scratch, tmp_path):
    dvc(["remote", "add", "-d", "team", str(tmp_path / "store")], scratch)
    dvc(["push"], scratch)
    run(["git", "commit", "-qam", "share results"], scratch)
    for outputs in [".dvc/cache", "data/raw", "data/split", *(f"data/models/{task}" for task in TASKS)]:
        shutil.rmtree(scratch / outputs)
    code, comment = pr_check(scratch, "HEAD")
    assert code == 0, comment
    assert "Data and models were pulled from the DVC remote." in comment
    assert json.loads(dvc(["status", "--json"], scratch).stdout) == {}


def test_the_workflow_runs_the_check_and_passes_actionlint():
    text = WORKFLOW.read_text()
    assert 'python tools/pr_check.py "$BASE" --output pr-check.md' in text
    assert "pip install -r requirements.txt" in text
    actionlint = shutil.which("actionlint", path=str(Path(sys.executable).parent))
    if actionlint is None:
        if os.environ.get("CI"):
            pytest.fail("actionlint is missing: requirements.txt installs it on x86-64 Linux")
        pytest.skip("actionlint is not installed (requirements.txt installs it on x86-64 Linux only)")
    result = run([actionlint, str(WORKFLOW)], ROOT, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
