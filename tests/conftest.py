"""Shared fixtures: temp copies of the repo, commands run with this environment's tools."""

# ruff: noqa: E402  (the user's environment is read before the numeric profile changes it)
from __future__ import annotations

import os

# The environment as the user set it, before the numeric profile (imported next, ahead of numpy, as every stage does)
# puts its variables in: the commands the tests start get the user's, and each stage applies the profile itself.
USER_ENVIRONMENT = dict(os.environ)

import mnist_dvc.runtime.numeric_profile

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def tool_env(**extra: str | None) -> dict[str, str]:
    """The user's environment with this interpreter's bin/ first on PATH, so `python` and `dvc` are the project's;
    `extra` sets variables, or unsets those given as None."""
    env = {**USER_ENVIRONMENT, "PATH": f"{BIN}{os.pathsep}{USER_ENVIRONMENT['PATH']}"}
    for name, value in extra.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    env.update(GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.com")
    env.update(GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@example.com")
    return env


def run(args: list[str], cwd: Path, check: bool = True, **extra: str | None) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=tool_env(**extra), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def project_files() -> list[str]:
    """Tracked files plus new ones not ignored: what a commit of the working tree would hold."""
    listing = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [name for name in listing.stdout.splitlines() if (ROOT / name).is_file()]


def copy_repo(destination: Path) -> Path:
    """A fresh git repo holding the project's files, as a new clone would."""
    for name in project_files():
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    run(["git", "init", "-q", "-b", "main"], destination)
    run(["git", "add", "-A"], destination)
    run(["git", "commit", "-qm", "copy"], destination)
    return destination


def run_until(
    command: list[str], cwd: Path, marker: str, timeout: float = 300, new_session: bool = False, **extra: str | None
) -> subprocess.Popen:
    """Start `command`, and return it running once a line of its output (stdout and stderr, through a pipe the
    caller reads on) contains `marker`; fail the test if the marker never comes. `new_session`: in a process group
    of its own, which `os.killpg(process.pid, ...)` stops with its children."""
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=tool_env(**extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=new_session,
    )
    deadline, seen = time.monotonic() + timeout, []
    for line in process.stdout:
        seen.append(line)
        if marker in line:
            return process
        if time.monotonic() > deadline:
            break
    process.kill()
    process.wait()
    pytest.fail(f"{marker!r} never appeared in the output of {' '.join(command)}:\n{''.join(seen[-30:])}")


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now, for a server a test starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ran_stages(output: str) -> list[str]:
    """The stages a `dvc repro` or `dvc exp run` ran, in order, from its output."""
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


def dvc(args: list[str], cwd: Path, check: bool = True, **extra: str | None) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args], cwd, check=check, **extra)


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory) -> Path:
    """A fresh copy of the repo after a full `dvc repro -f`: read it, never change it."""
    root = copy_repo(tmp_path_factory.mktemp("repo"))
    dvc(["repro", "-f"], root)
    return root


@pytest.fixture
def scratch(reproduced, tmp_path) -> Path:
    """A copy of the reproduced repo (with its DVC cache and data) that a test may change."""
    return Path(shutil.copytree(reproduced, tmp_path / "repo", symlinks=True))


# What a Dask worker needs to compute like a stage (numeric_profile.WORKER_ENVIRONMENT), as a mapping.
PROFILE_ENVIRONMENT = dict(item.split("=") for item in mnist_dvc.runtime.numeric_profile.WORKER_ENVIRONMENT.split())


@dataclass
class DaskCluster:
    """A Dask scheduler and workers started as real processes on 127.0.0.1."""

    address: str
    scheduler: subprocess.Popen
    workers: list[subprocess.Popen]
    folder: Path

    def worker_pids(self) -> dict[str, int]:
        """Each worker's address and the pid of the process that computes (the nanny's child)."""
        from distributed import Client

        with Client(self.address, timeout=20) as client:
            return client.run(os.getpid)

    def stop(self) -> None:
        for process in [*self.workers, self.scheduler]:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in [*self.workers, self.scheduler]:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def start_process(args: list[str], folder: Path, log: str, **env: str | None) -> subprocess.Popen:
    with open(folder / log, "w") as output:
        return subprocess.Popen(
            args, cwd=folder, env=tool_env(**env), stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )


def start_worker(address: str, folder: Path, name: str, nanny: bool = True, **env: str | None) -> subprocess.Popen:
    """`dask worker` in a folder of its own, outside any copy of the repo, with one thread."""
    (folder / name).mkdir(parents=True, exist_ok=True)
    args = [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--no-dashboard", "--name", name]
    args += ["--local-directory", str(folder / name)] + ([] if nanny else ["--no-nanny"])
    return start_process(args, folder / name, "worker.log", **env)


@contextmanager
def dask_cluster(folder: Path, workers: int = 2, nanny: bool = True, **worker_env: str | None) -> Iterator[DaskCluster]:
    """A scheduler on a free port of 127.0.0.1 and `workers` single-thread workers with the numeric profile's
    environment (`worker_env` changes it), all real processes, stopped on exit."""
    from distributed import Client

    folder.mkdir(parents=True, exist_ok=True)
    scheduler_file = folder / "scheduler.json"
    scheduler = start_process(
        [
            str(BIN / "dask"),
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
            "--scheduler-file",
            str(scheduler_file),
        ],
        folder,
        "scheduler.log",
    )
    cluster = DaskCluster("", scheduler, [], folder)
    try:
        deadline = time.monotonic() + 60
        while not cluster.address:
            assert scheduler.poll() is None, (folder / "scheduler.log").read_text()
            if time.monotonic() > deadline:
                pytest.fail(f"no scheduler file after 60 s:\n{(folder / 'scheduler.log').read_text()}")
            try:  # the scheduler writes the file in place: it may be there but not whole yet
                cluster.address = json.loads(scheduler_file.read_text())["address"]
            except (FileNotFoundError, json.JSONDecodeError):
                time.sleep(0.1)
        env = {**PROFILE_ENVIRONMENT, **worker_env}
        cluster.workers = [
            start_worker(cluster.address, folder, f"worker-{i}", nanny=nanny, **env) for i in range(workers)
        ]
        with Client(cluster.address, timeout=30) as client:
            client.wait_for_workers(workers, timeout=60)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def sample() -> tuple[np.ndarray, np.ndarray]:
    """600 real MNIST digits (60 per class) from the offline sample, shuffled."""
    from mnist_dvc.datasets.registry import DataSource, load_mnist_sample

    dataset = load_mnist_sample(DataSource(mirrors=(), cache_dir=Path("unused")))
    keep = np.random.default_rng(0).permutation(np.concatenate([np.arange(c * 500, c * 500 + 60) for c in range(10)]))
    return dataset.images[keep], dataset.labels[keep]
