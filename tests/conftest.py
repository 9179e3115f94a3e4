"""Shared fixtures: temp copies of the repo, commands run with this environment's tools."""

# ruff: noqa: E402  (the user's environment is read before the numeric profile changes it)
from __future__ import annotations

import json
import os

# The environment as the user set it, before the numeric profile (imported next, ahead of numpy, as every stage does)
# puts its variables in: the commands the tests start get the user's, and each stage applies the profile itself.
# pytest-xdist's test processes inherit the environment of the process that started them, where the profile already
# holds: that process hands them the user's environment in a variable of its own.
HANDED_DOWN = "MNIST_DVC_TESTS_USER_ENVIRONMENT"
os.environ.setdefault(HANDED_DOWN, json.dumps(dict(os.environ)))
USER_ENVIRONMENT = json.loads(os.environ[HANDED_DOWN])

import mnist_dvc.runtime.numeric_profile  # noqa: F401

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import local_cluster
import numpy as np
import pytest
import yaml
from filelock import FileLock
from local_cluster import DaskCluster
from project_copy import command_env, copy_repo

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def tool_env(**extra: str | None) -> dict[str, str]:
    """The user's environment with this interpreter's bin/ first on PATH, so `python` and `dvc` are the project's;
    `extra` sets variables, or unsets those given as None."""
    return command_env(USER_ENVIRONMENT, **extra)


def run(args: list[str], cwd: Path, check: bool = True, **extra: str | None) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=tool_env(**extra), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


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


def stages_with_parallel_work() -> list[str]:
    """The stages (a `foreach` by its name) that depend on the parallel layer, as `dvc.yaml` says: the only ones whose
    work runs on threads or a cluster, so the only ones where the worker count or the cluster could change a byte."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return [name for name, entry in stages.items() if "stages/mnist_dvc/parallel" in entry.get("do", entry)["deps"]]


def dvc(args: list[str], cwd: Path, check: bool = True, **extra: str | None) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args], cwd, check=check, **extra)


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """`build(folder)` run once per test session: the first of pytest-xdist's processes to need it runs it under a
    file lock, in a folder all of them share, and the others wait for it. A build that failed is tried again."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    shared = tmp_path_factory.getbasetemp() if worker is None else tmp_path_factory.getbasetemp().parent
    folder, done = shared / name, shared / f"{name}.done"
    with FileLock(shared / f"{name}.lock"):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


def reproduce(folder: Path) -> None:
    copy_repo(folder)
    dvc(["repro", "-f"], folder)


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory) -> Path:
    """A fresh copy of the repo after a full `dvc repro -f`, built once per session: read it, never change it. Each
    test process reads its own copy, so that no two run DVC in the same repo."""
    built = built_once(tmp_path_factory, "reproduced", reproduce)
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return built
    return Path(shutil.copytree(built, tmp_path_factory.mktemp("reproduced") / "repo", symlinks=True))


@pytest.fixture
def scratch(reproduced, tmp_path) -> Path:
    """A copy of the reproduced repo (with its DVC cache and data) that a test may change."""
    return Path(shutil.copytree(reproduced, tmp_path / "repo", symlinks=True))


@contextmanager
def dask_cluster(folder: Path, workers: int = 2, nanny: bool = True, **worker_env: str) -> Iterator[DaskCluster]:
    """`tools/local_cluster.py`'s cluster, started from the user's environment; a test fails if it does not start."""
    try:
        with local_cluster.dask_cluster(folder, workers, nanny, USER_ENVIRONMENT, **worker_env) as cluster:
            yield cluster
    except RuntimeError as error:
        pytest.fail(f"the Dask cluster did not start: {error}")


@pytest.fixture(scope="session")
def sample() -> tuple[np.ndarray, np.ndarray]:
    """600 real MNIST digits (60 per class) from the offline sample, shuffled."""
    from mnist_dvc.datasets.registry import DataSource, load_mnist_sample

    dataset = load_mnist_sample(DataSource(mirrors=(), cache_dir=Path("unused")))
    keep = np.random.default_rng(0).permutation(np.concatenate([np.arange(c * 500, c * 500 + 60) for c in range(10)]))
    return dataset.images[keep], dataset.labels[keep]
