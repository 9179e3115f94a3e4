"""Run the whole pipeline on a full-size dataset in a scratch copy of the repo; print time, memory and metrics.

    python benchmarks/run_full.py --dataset fashion-mnist --mirror /usr/share/datasets/fashion-mnist --runs 3

Each stage runs as `dvc repro --single-item <stage>`, in dvc.yaml's order, with a fresh download cache, so the
download stage's time includes reading the mirror. Peak memory is reported twice: the largest single process
(exact, from the kernel) and the sum over the stage's process tree (sampled, an upper bound: shared pages count
once per process).

With `--dask-workers N` the stages run on a Dask cluster started here (a scheduler and N single-thread workers, real
processes on 127.0.0.1, with the numeric profile's environment); the workers' memory is sampled too, and from the
duration of every task the scheduler recorded, the script models what 2 to 32 workers would take (see `modelled`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import heapq
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import yaml
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tools"), str(ROOT / "stages")]
from local_cluster import LAUNCH_ENVIRONMENT, dask_cluster  # noqa: E402
from project_copy import command_env, copy_repo  # noqa: E402

from mnist_dvc.runtime.params import read_params_file  # noqa: E402  params.yaml read as DVC reads it
from mnist_dvc.study.metrics import THRESHOLDED_SGD  # noqa: E402

SAMPLE_SECONDS = 0.1
MIB = 1024 * 1024
# params.yaml and --set values as DVC reads and writes them (YAML 1.2: `1e-5` is a number).
YAML_1_2 = YAML(typ="safe")
YAML_1_2.default_flow_style = False
# The targets of a full-size run on 2 cores.
TARGET_SECONDS = 240
TARGET_RSS_MIB = 3 * 1024
TARGET_ACCURACY = {"mnist": 0.99, "fashion-mnist": 0.92}
MODELLED_WORKERS = (2, 4, 8, 16, 32)


@dataclass(frozen=True)
class Measured:
    stage: str
    seconds: float
    peak_mib: float  # the largest single process
    tree_peak_mib: float  # all processes of the stage at once, sampled
    workers_peak_mib: float = 0.0  # all Dask workers at once, sampled
    tasks: tuple[tuple[float, float], ...] = ()  # (start, seconds) of each task the Dask scheduler ran for it


def check_override(override: str, params: dict) -> str | None:
    """Why a `--set KEY=VALUE` cannot apply to params.yaml, or None: no `=`, or a key params.yaml does not have."""
    if "=" not in override:
        return f"--set {override}: expected KEY=VALUE, e.g. multiclass.cv_folds=5"
    key = override.split("=", 1)[0]
    node: object = params
    for depth, part in enumerate(key.split(".")):
        if not isinstance(node, dict) or part not in node:
            known = ", ".join(node) if isinstance(node, dict) else "none: it is a value"
            return (
                f"--set {override}: params.yaml has no key {'.'.join(key.split('.')[: depth + 1])!r} (there: {known})"
            )
        node = node[part]
    return None


def prepare(workspace: Path, dataset: str, mirrors: list[str], overrides: list[str]) -> list[str]:
    """Copy the project into `workspace` as a fresh git repo with the chosen data and params; return the stages."""
    workspace.mkdir()
    copy_repo(workspace)
    params_file = workspace / "params.yaml"
    params = read_params_file(params_file)
    params["data"] = {"dataset": dataset, "mirrors": mirrors}
    for override in overrides:  # KEY=VALUE, as `dvc exp run -S` takes it
        key, value = override.split("=", 1)
        *parents, last = key.split(".")
        node = params
        for part in parents:
            node = node[part]
        node[last] = YAML_1_2.load(value)
    with open(params_file, "w") as out:
        YAML_1_2.dump(params, out)
    return list(yaml.safe_load((workspace / "dvc.yaml").read_text())["stages"])


def tree_rss(root: psutil.Process) -> int:
    total = 0
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # ended between listing and reading
            total += process.memory_info().rss
    return total


def sample_tree(pid: int, done: threading.Event, peak: list[int], workers: list[int]) -> None:
    """The peak RSS of the stage's process tree in peak[0], and of all `workers` together in peak[1]."""
    try:
        root = psutil.Process(pid)
        others = [psutil.Process(worker) for worker in workers]
        while not done.wait(SAMPLE_SECONDS):
            peak[0] = max(peak[0], tree_rss(root))
            peak[1] = max(peak[1], sum(tree_rss(worker) for worker in others))
    except psutil.Error:  # the stage has ended
        pass


def run_stage(stage: str, workspace: Path, env: dict[str, str], log: Path, workers: list[int]) -> Measured:
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
        done, peak = threading.Event(), [0, 0]
        sampler = threading.Thread(target=sample_tree, args=(process.pid, done, peak, workers))
        sampler.start()
        # wait4, not wait: it also returns the child's resource usage, peak RSS included
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        done.set()
        sampler.join()
    if process.returncode != 0:
        sys.exit(f"stage {stage} failed ({process.returncode}):\n{log.read_text()}")
    peak_mib = usage.ru_maxrss * 1024 / MIB  # Linux reports kilobytes
    return Measured(stage, seconds, peak_mib, max(peak[0] / MIB, peak_mib), peak[1] / MIB)


def task_durations(stream: list[dict]) -> tuple[tuple[float, float], ...]:
    """(start, seconds) of each task in a Dask task stream: the time it computed, in the order tasks started."""
    tasks = []
    for task in stream:
        computed = [part for part in task["startstops"] if part["action"] == "compute"]
        if computed:
            tasks.append((computed[0]["start"], sum(part["stop"] - part["start"] for part in computed)))
    return tuple(sorted(tasks))


def parallel_sections(tasks: tuple[tuple[float, float], ...]) -> list[list[float]]:
    """The tasks' durations, split where no task was running: one list per parallel loop of the stage."""
    sections: list[list[float]] = []
    running_until = -math.inf
    for start, seconds in tasks:
        if start >= running_until:
            sections.append([])
        sections[-1].append(seconds)
        running_until = max(running_until, start + seconds)
    return sections


def makespan(durations: list[float], workers: int) -> float:
    """How long `durations` take on `workers`, started in their order, each on the first worker that is free: the
    schedule of `workers.run_jobs` (longest first) and of joblib's loops."""
    free_at = [0.0] * workers
    for seconds in durations:
        heapq.heapreplace(free_at, free_at[0] + seconds)
    return max(free_at)


def modelled(result: Measured, measured_workers: int, workers: int) -> float:
    """The stage's time on `workers`: what ran outside its parallel loops (the measured time less their modelled
    time on the measured workers), plus each loop's time on `workers`. The longest single task bounds each loop."""
    sections = parallel_sections(result.tasks)
    outside = result.seconds - sum(makespan(section, measured_workers) for section in sections)
    return outside + sum(makespan(section, workers) for section in sections)


def scaling_table(results: list[Measured], measured_workers: int) -> str:
    header = f"{'stage':<18} {'measured':>9} " + " ".join(f"{f'N={n}':>7}" for n in MODELLED_WORKERS)
    lines = [header + f" {'longest task':>13}"]
    for result in [*results, None]:
        rows = results if result is None else [result]
        modelled_times = [sum(modelled(row, measured_workers, n) for row in rows) for n in MODELLED_WORKERS]
        longest = max((seconds for row in rows for _, seconds in row.tasks), default=0.0)
        name = "total" if result is None else result.stage
        measured = sum(row.seconds for row in rows)
        lines.append(
            f"{name:<18} {measured:>9.1f} "
            + " ".join(f"{value:>7.1f}" for value in modelled_times)
            + f" {longest:>13.1f}"
        )
    return "\n".join(lines)


def report(dataset: str, run: Run) -> str:
    results = run.stages
    lines = [f"{'stage':<18} {'wall s':>8} {'peak RSS MiB':>12} {'sum RSS MiB':>11} {'workers MiB':>11}"]
    lines += [
        f"{r.stage:<18} {r.seconds:>8.1f} {r.peak_mib:>12.0f} {r.tree_peak_mib:>11.0f} {r.workers_peak_mib:>11.0f}"
        for r in results
    ]
    peak = max(r.peak_mib for r in results)
    tree_peak, workers_peak = max(r.tree_peak_mib for r in results), max(r.workers_peak_mib for r in results)
    lines.append(f"{'total':<18} {run.seconds:>8.1f} {peak:>12.0f} {tree_peak:>11.0f} {workers_peak:>11.0f}")
    slowest = max(results, key=lambda r: r.seconds)
    lines.append(f"slowest stage: {slowest.stage} ({slowest.seconds / run.seconds:.0%} of the time)")

    multiclass = {name: model["test"]["accuracy"] for name, model in run.metrics["multiclass"].items()}
    lines.append("multiclass test accuracy: " + ", ".join(f"{name} {acc:.4f}" for name, acc in multiclass.items()))
    # the model the pipeline chose on its validation images, not the test set's best
    lines.append(f"chosen multiclass model: {run.chosen}")
    # Every binary model but the deployed SGD, whose scores are the plain SGD's: it has precision and recall only.
    binary = {
        name: model["test"]["roc_auc"] for name, model in run.metrics["binary"].items() if name != THRESHOLDED_SGD
    }
    lines.append("binary test ROC AUC: " + ", ".join(f"{name} {auc:.4f}" for name, auc in binary.items()))
    lines.append(f"multilabel test F1 macro: {run.metrics['multilabel']['knn']['test']['f1_macro']:.4f}")
    denoised = run.metrics["multioutput"]["knn"]["test"]
    lines.append(
        f"denoising mean absolute error: {denoised['mean_abs_error']:.2f} (noisy input "
        f"{denoised['mean_abs_error_noisy']:.2f})"
    )
    lines += [f"{'met   ' if met else 'MISSED'} {text}" for text, met in checks(dataset, run)]
    return "\n".join(lines)


@dataclass(frozen=True)
class Run:
    """One full run: each stage measured, the test metrics, the chosen model, and the outputs' hashes."""

    stages: list[Measured]
    metrics: dict
    chosen: str
    outputs: dict[str, str]  # each out's md5 in dvc.lock

    @property
    def seconds(self) -> float:
        return sum(stage.seconds for stage in self.stages)


def outputs_of(repo: Path) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {f"{name}:{out['path']}": out["md5"] for name, stage in lock["stages"].items() for out in stage["outs"]}


def run_once(args: argparse.Namespace, workspace: Path) -> Run:
    """The whole pipeline in a fresh copy of the repo under `workspace`, with a fresh download cache."""
    env = command_env(LAUNCH_ENVIRONMENT, MNIST_DVC_CACHE=str(workspace / "download-cache"))
    repo = workspace / "repo"
    mirrors = [mirror if "://" in mirror else str(Path(mirror).resolve()) for mirror in args.mirror]
    stages = prepare(repo, args.dataset, mirrors, args.set)
    results = []
    with contextlib.ExitStack() as stack:
        client, workers = None, []
        if args.dask_workers:
            from distributed import Client

            cluster = stack.enter_context(dask_cluster(workspace / "cluster", args.dask_workers))
            env["MNIST_DVC_DASK_SCHEDULER"] = cluster.address
            workers = [worker.pid for worker in cluster.workers]
            client = stack.enter_context(Client(cluster.address))
            client.get_task_stream()  # the scheduler starts recording tasks
        for stage in stages:
            started = time.time()
            result = run_stage(stage, repo, env, workspace / f"{stage}.log", workers)
            if client is not None:
                result = dataclasses.replace(result, tasks=task_durations(client.get_task_stream(start=started)))
            results.append(result)
            print(f"{stage}: {result.seconds:.1f} s", file=sys.stderr, flush=True)
    metrics = json.loads((repo / "reports" / "metrics" / "test.json").read_text())
    chosen = json.loads((repo / "data" / "evaluation" / "manifest.json").read_text())["chosen"]
    return Run(results, metrics, chosen, outputs_of(repo))


def machine() -> str:
    """The CPU's model name, its core count and the memory: where the numbers were measured."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.machine())
    return f"{model}, {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB"


def markdown(args: argparse.Namespace, command: str, runs: list[Run]) -> str:
    """The runs as a Markdown page: per stage the median time and the largest peak memory, the targets, the test
    accuracy of each multiclass model, and on a cluster the modelled scaling of the median run."""
    names = [stage.stage for stage in runs[0].stages]
    median_run = sorted(runs, key=lambda run: run.seconds)[len(runs) // 2]
    where = (
        f"a local Dask cluster of {args.dask_workers} single-thread workers" if args.dask_workers else "local threads"
    )
    lines = [
        f"# {args.dataset}, {len(runs)} run{'s' if len(runs) > 1 else ''} on {where}",
        "",
        f"`{command}` on {machine()}.",
        "",
        "| stage | wall time, s (median) | peak memory of one process, MiB (largest) |"
        + (" Dask workers together, MiB (largest) |" if args.dask_workers else ""),
        "|---|---|---|" + ("---|" if args.dask_workers else ""),
    ]
    for index, name in enumerate(names):
        seconds = statistics.median(run.stages[index].seconds for run in runs)
        peak = max(run.stages[index].peak_mib for run in runs)
        row = f"| {name} | {seconds:.1f} | {peak:,.0f} |"
        if args.dask_workers:
            row += f" {max(run.stages[index].workers_peak_mib for run in runs):,.0f} |"
        lines.append(row)
    totals = ", ".join(f"{run.seconds:.1f}" for run in runs)
    peak = max(stage.peak_mib for run in runs for stage in run.stages)
    median = statistics.median(run.seconds for run in runs)
    row = f"| **end to end** | **{median:.1f}** (runs: {totals}) | **{peak:,.0f}** |"
    if args.dask_workers:
        row += f" **{max(stage.workers_peak_mib for run in runs for stage in run.stages):,.0f}** |"
    lines.append(row)
    same = all(run.outputs == runs[0].outputs for run in runs)
    lines += ["", f"Every output byte the same in every run: {'yes' if same else 'NO'}."]
    accuracy = median_run.metrics["multiclass"]
    lines += [
        "",
        f"Test accuracy of each multiclass model (chosen on the validation images: `{median_run.chosen}`): "
        + ", ".join(f"`{name}` {model['test']['accuracy']:.4f}" for name, model in accuracy.items())
        + ".",
        "",
        "Targets, for the median run: "
        + "; ".join(f"{'met' if met else 'MISSED'}: {text}" for text, met in checks(args.dataset, median_run))
        + ".",
    ]
    if args.dask_workers:
        lines += [
            "",
            "Modelled seconds on N workers, from the median run's task durations (its own seconds in the first "
            "column):",
            "",
            "```",
            scaling_table(median_run.stages, args.dask_workers),
            "```",
        ]
    return "\n".join(lines) + "\n"


def checks(dataset: str, run: Run) -> list[tuple[str, bool]]:
    peak = max(stage.peak_mib for stage in run.stages)
    found = [
        (f"end to end {run.seconds:.0f} s <= {TARGET_SECONDS} s", run.seconds <= TARGET_SECONDS),
        (f"peak RSS {peak:,.0f} MiB <= {TARGET_RSS_MIB:,} MiB", peak <= TARGET_RSS_MIB),
    ]
    if dataset in TARGET_ACCURACY:
        target, accuracy = TARGET_ACCURACY[dataset], run.metrics["multiclass"][run.chosen]["test"]["accuracy"]
        found.append((f"chosen model's test accuracy {accuracy:.4f} >= {target}", accuracy >= target))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="data.dataset, e.g. fashion-mnist or mnist")
    parser.add_argument("--mirror", action="append", default=[], help="data.mirrors entry (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a params override")
    parser.add_argument("--runs", type=int, default=1, help="how many times to run it (medians are reported)")
    parser.add_argument("--markdown", type=Path, help="also write the results as a Markdown page there")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copies and print where they are")
    parser.add_argument(
        "--dask-workers", type=int, default=0, metavar="N", help="run on a local Dask cluster of N workers (processes)"
    )
    args = parser.parse_args()
    params = read_params_file(ROOT / "params.yaml")
    for override in args.set:
        if reason := check_override(override, params):
            parser.error(reason)
    if args.runs < 1:
        parser.error(f"--runs {args.runs}: expected at least 1")

    runs = []
    for number in range(args.runs):
        workspace = Path(tempfile.mkdtemp(prefix="mnist-dvc-bench-"))
        try:
            run = run_once(args, workspace)
        finally:
            if args.keep:
                print(f"scratch copy kept in {workspace}", file=sys.stderr)
            else:
                shutil.rmtree(workspace)
        runs.append(run)
        where = f"a local Dask cluster of {args.dask_workers} workers" if args.dask_workers else "local threads"
        print(f"run {number + 1}: {args.dataset}, {os.cpu_count()} CPUs, {where}")
        print(report(args.dataset, run))
        if args.dask_workers:
            print(f"\nmodelled seconds on N workers (from {sum(len(r.tasks) for r in run.stages)} tasks' durations)")
            print(scaling_table(run.stages, args.dask_workers))
    if args.markdown is not None:
        command = "python benchmarks/run_full.py " + " ".join(shlex.quote(arg) for arg in sys.argv[1:])
        args.markdown.write_text(markdown(args, command, runs))


if __name__ == "__main__":
    main()
