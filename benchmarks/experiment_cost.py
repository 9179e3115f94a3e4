"""What an experiment on one model costs against a full run, for one or more revisions of the project.

    python benchmarks/experiment_cost.py --dataset fashion-mnist --mirror /usr/share/datasets/fashion-mnist \
        --rev HEAD --rev a4793a4 --runs 3 --markdown docs/benchmarks/experiment-cost.md

Each run clones a revision into a scratch folder, sets `data.dataset` and `data.mirrors` in its params.yaml (and
commits that, so `dvc exp run` has it as its baseline), then times, one after the other, with a fresh download cache:

1. `dvc repro`: the full run;
2. `dvc exp run -S multiclass.models.knn.n_neighbors=3`: one change to one model;
3. `dvc exp run -S multiclass.models.knn.n_neighbors=4`: the change taken back, which DVC's run-cache can serve;
4. `dvc exp run -S multiclass.models.svc_hog.C=5`: one change to the slowest model.

For each step it reports the seconds, the ratio to the full run and the stages that ran. Runs alternate between the
revisions, so a machine that slows down over time weighs on each alike; the summary gives medians.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = (
    ("knn n_neighbors 3", ["exp", "run", "-S", "multiclass.models.knn.n_neighbors=3"]),
    ("knn back to 4", ["exp", "run", "-S", "multiclass.models.knn.n_neighbors=4"]),
    ("svc_hog C 5", ["exp", "run", "-S", "multiclass.models.svc_hog.C=5"]),
)


@dataclass(frozen=True)
class Step:
    name: str
    seconds: float
    ran: tuple[str, ...]  # the stages DVC ran, in order


def git(args: list[str], cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def clone(commit: str, dataset: str, mirrors: list[str], where: Path) -> Path:
    """`commit` of this repository checked out in `where`, its params.yaml set to `dataset` and committed."""
    repo = where / "repo"
    git(["clone", "-q", "--no-checkout", str(ROOT), str(repo)], where)
    git(["checkout", "-q", commit], repo)
    yaml = YAML()  # round trip, YAML 1.2 as DVC reads it: the file keeps its comments
    params_file = repo / "params.yaml"
    params = yaml.load(params_file)
    params["data"]["dataset"], params["data"]["mirrors"] = dataset, mirrors
    yaml.dump(params, params_file)
    git(["-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qam", f"data: {dataset}"], repo)
    return repo


def timed(name: str, args: list[str], repo: Path, env: dict[str, str], log: Path) -> Step:
    """`dvc <args>` in `repo`, timed; exits with its output if it fails."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        sys.exit(f"{name}: dvc {' '.join(args)} failed ({result.returncode}), see {log}:\n{result.stderr[-3000:]}")
    ran = tuple(line.split("'")[1] for line in result.stdout.splitlines() if line.startswith("Running stage"))
    print(f"  {name}: {seconds:.1f} s, ran {len(ran)} stages", file=sys.stderr, flush=True)
    return Step(name, seconds, ran)


def run_once(commit: str, args: argparse.Namespace, workspace: Path) -> list[Step]:
    """The full run, then each experiment, in a fresh clone of `commit` under `workspace`."""
    mirrors = [mirror if "://" in mirror else str(Path(mirror).resolve()) for mirror in args.mirror]
    repo = clone(commit, args.dataset, mirrors, workspace)
    env = {**os.environ, "MNIST_DVC_CACHE": str(workspace / "download-cache")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # `python` in dvc.yaml's commands is this one
    steps = [timed("full dvc repro", ["repro"], repo, env, workspace / "full.log")]
    for number, (name, command) in enumerate(EXPERIMENTS, start=1):
        steps.append(timed(name, command, repo, env, workspace / f"experiment-{number}.log"))
    return steps


def table(rev: str, runs: list[list[Step]]) -> list[str]:
    """One revision's steps as Markdown rows: median seconds, each run's, the median ratio to the full run, and the
    stages that ran (the same in every run, or each run's)."""
    lines = []
    for index, step in enumerate(runs[0]):
        seconds = [run[index].seconds for run in runs]
        ratio = statistics.median(run[index].seconds / run[0].seconds for run in runs)
        ran = {run[index].ran for run in runs}
        stages = ", ".join(step.ran) if len(ran) == 1 else " / ".join(", ".join(r) for r in ran)
        each = ", ".join(f"{s:.1f}" for s in seconds)
        lines.append(
            f"| `{rev}` | {step.name} | {statistics.median(seconds):.1f} ({each}) | {ratio:.2f} | "
            f"{len(step.ran)}: {stages or 'none'} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="data.dataset, e.g. fashion-mnist")
    parser.add_argument("--mirror", action="append", default=[], help="data.mirrors entry (repeatable)")
    parser.add_argument("--rev", action="append", default=[], help="a git revision to measure (repeatable)")
    parser.add_argument("--runs", type=int, default=1, help="runs per revision, alternating (medians are reported)")
    parser.add_argument("--markdown", type=Path, help="also write the results as a Markdown page there")
    args = parser.parse_args()
    commits = {}
    for rev in args.rev or ["HEAD"]:
        found = subprocess.run(
            ["git", "rev-parse", "--verify", "-q", f"{rev}^{{commit}}"], cwd=ROOT, capture_output=True, text=True
        )
        if found.returncode != 0:
            parser.error(f"--rev {rev}: not a commit of this repository")
        commits[rev] = found.stdout.strip()  # resolved once: every run of HEAD measures the same commit
    if args.runs < 1:
        parser.error(f"--runs {args.runs}: expected at least 1")

    command = "python benchmarks/experiment_cost.py " + " ".join(shlex.quote(arg) for arg in sys.argv[1:])
    results: dict[str, list[list[Step]]] = {rev: [] for rev in commits}
    for number in range(args.runs):
        for rev, commit in commits.items():
            print(f"run {number + 1} of {rev} ({commit[:7]})", file=sys.stderr, flush=True)
            workspace = Path(tempfile.mkdtemp(prefix="mnist-dvc-exp-cost-"))
            try:
                results[rev].append(run_once(commit, args, workspace))
            finally:
                shutil.rmtree(workspace)
        if args.markdown is not None:  # after every round: a run cut short keeps the rounds it finished
            args.markdown.write_text(page(command, args.dataset, commits, results))
    print(page(command, args.dataset, commits, results))


def page(command: str, dataset: str, commits: dict[str, str], results: dict[str, list[list[Step]]]) -> str:
    runs = min(len(runs) for runs in results.values())
    lines = [
        f"# What an experiment costs, {dataset}, {runs} run{'s' if runs > 1 else ''} per revision",
        "",
        f"`{command}` on {os.cpu_count()} CPUs; {runs} run{'s' if runs > 1 else ''} of each revision done.",
        "",
        "| revision | step | seconds, median (each run) | of the full run (median) | stages run |",
        "|---|---|---|---|---|",
    ]
    for rev, commit in commits.items():
        lines += table(f"{rev} ({commit[:7]})" if rev != commit[:7] else rev, results[rev][:runs])
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
