"""Run the whole pipeline on a full-size dataset in a scratch copy of the repo; print time, memory and metrics.

    python benchmarks/run_full.py --dataset fashion-mnist --mirror /usr/share/datasets/fashion-mnist \
        --set multiclass.models.svc_hog.deskew=false

Each stage runs as `dvc repro --single-item <stage>`, in dvc.yaml's order, with a fresh download cache, so the
download stage's time includes reading the mirror. Peak memory is reported twice: the largest single process
(exact, from the kernel) and the sum over the stage's process tree (sampled, an upper bound: shared pages count
once per process).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "stages")]
from conftest import copy_repo, tool_env  # noqa: E402  (the tests' way to make a fresh copy of the repo)

SAMPLE_SECONDS = 0.1
MB = 1024 * 1024
# The targets of a full-size run on 2 cores.
TARGET_SECONDS = 240
TARGET_RSS_MB = 3 * 1024
TARGET_ACCURACY = {"mnist": 0.99, "fashion-mnist": 0.92}


@dataclass(frozen=True)
class Measured:
    stage: str
    seconds: float
    peak_mb: float  # the largest single process
    tree_peak_mb: float  # all processes of the stage at once, sampled


def prepare(workspace: Path, dataset: str, mirrors: list[str], overrides: list[str]) -> list[str]:
    """Copy the project into `workspace` as a fresh git repo with the chosen data and params; return the stages."""
    workspace.mkdir()
    copy_repo(workspace)
    params_file = workspace / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["data"] = {"dataset": dataset, "mirrors": mirrors}
    for override in overrides:  # KEY=VALUE, as `dvc exp run -S` takes it
        key, value = override.split("=", 1)
        *parents, last = key.split(".")
        node = params
        for part in parents:
            node = node[part]
        node[last] = yaml.safe_load(value)
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    return list(yaml.safe_load((workspace / "dvc.yaml").read_text())["stages"])


def tree_rss(root: psutil.Process) -> int:
    total = 0
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # ended between listing and reading
            total += process.memory_info().rss
    return total


def sample_tree(pid: int, done: threading.Event, peak: list[int]) -> None:
    try:
        root = psutil.Process(pid)
        while not done.wait(SAMPLE_SECONDS):
            peak[0] = max(peak[0], tree_rss(root))
    except psutil.Error:  # the stage has ended
        pass


def run_stage(stage: str, workspace: Path, env: dict[str, str], log: Path) -> Measured:
    """One `dvc repro --single-item`, timed; exits with its output when it fails."""
    with open(log, "w") as output:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "dvc", "repro", "--single-item", stage],
            cwd=workspace,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        done, peak = threading.Event(), [0]
        sampler = threading.Thread(target=sample_tree, args=(process.pid, done, peak))
        sampler.start()
        # wait4, not wait: it also returns the child's resource usage, peak RSS included
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        done.set()
        sampler.join()
    if process.returncode != 0:
        sys.exit(f"stage {stage} failed ({process.returncode}):\n{log.read_text()}")
    peak_mb = usage.ru_maxrss * 1024 / MB  # Linux reports kilobytes
    return Measured(stage, seconds, peak_mb, max(peak[0] / MB, peak_mb))


def report(dataset: str, results: list[Measured], metrics: dict, selected: str) -> str:
    lines = [f"{'stage':<18} {'wall s':>8} {'peak RSS MB':>12} {'sum RSS MB':>11}"]
    lines += [f"{r.stage:<18} {r.seconds:>8.1f} {r.peak_mb:>12.0f} {r.tree_peak_mb:>11.0f}" for r in results]
    total = sum(r.seconds for r in results)
    peak = max(r.peak_mb for r in results)
    lines.append(f"{'total':<18} {total:>8.1f} {peak:>12.0f} {max(r.tree_peak_mb for r in results):>11.0f}")
    slowest = max(results, key=lambda r: r.seconds)
    lines.append(f"slowest stage: {slowest.stage} ({slowest.seconds / total:.0%} of the time)")

    multiclass = {name: model["test"]["accuracy"] for name, model in metrics["multiclass"].items()}
    lines.append("multiclass test accuracy: " + ", ".join(f"{name} {acc:.4f}" for name, acc in multiclass.items()))
    best = selected  # the model the pipeline chose on its validation images, not the test set's best
    lines.append(f"chosen multiclass model: {best}")
    binary = {name: model["test"]["roc_auc"] for name, model in metrics["binary"].items()}
    lines.append("binary test ROC AUC: " + ", ".join(f"{name} {auc:.4f}" for name, auc in binary.items()))
    lines.append(f"multilabel test F1 macro: {metrics['multilabel']['knn']['test']['f1_macro']:.4f}")
    denoised = metrics["multioutput"]["knn"]["test"]
    lines.append(
        f"denoising mean absolute error: {denoised['mean_abs_error']:.2f} (noisy input "
        f"{denoised['mean_abs_error_noisy']:.2f})"
    )

    checks = [
        (f"end to end {total:.0f} s <= {TARGET_SECONDS} s", total <= TARGET_SECONDS),
        (f"peak RSS {peak:.0f} MB <= {TARGET_RSS_MB} MB", peak <= TARGET_RSS_MB),
    ]
    if dataset in TARGET_ACCURACY:
        target, accuracy = TARGET_ACCURACY[dataset], multiclass[best]
        checks.append((f"best multiclass accuracy {accuracy:.4f} ({best}) >= {target}", accuracy >= target))
    lines += [f"{'met   ' if met else 'MISSED'} {text}" for text, met in checks]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="data.dataset, e.g. fashion-mnist or mnist")
    parser.add_argument("--mirror", action="append", default=[], help="data.mirrors entry (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a params override")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy and print where it is")
    args = parser.parse_args()

    workspace = Path(tempfile.mkdtemp(prefix="mnist-dvc-bench-"))
    try:
        env = tool_env(MNIST_DVC_CACHE=str(workspace / "download-cache"))
        repo = workspace / "repo"
        mirrors = [mirror if "://" in mirror else str(Path(mirror).resolve()) for mirror in args.mirror]
        stages = prepare(repo, args.dataset, mirrors, args.set)
        results = []
        for stage in stages:
            results.append(run_stage(stage, repo, env, workspace / f"{stage}.log"))
            print(f"{stage}: {results[-1].seconds:.1f} s", file=sys.stderr, flush=True)
        metrics = json.loads((repo / "reports" / "metrics" / "test.json").read_text())
        selected = json.loads((repo / "data" / "models" / "multiclass" / "selected.json").read_text())["best"]
        print(f"{args.dataset}, {os.cpu_count()} CPUs\n{report(args.dataset, results, metrics, selected)}")
    finally:
        if args.keep:
            print(f"scratch copy kept in {workspace}", file=sys.stderr)
        else:
            shutil.rmtree(workspace)


if __name__ == "__main__":
    main()
