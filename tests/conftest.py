"""Shared fixtures: temp copies of the repo, commands run with this environment's tools."""

# ruff: noqa: E402  (the user's environment is read before the numeric profile changes it)
from __future__ import annotations

import os

# The environment as the user set it, before the numeric profile (imported next, ahead of numpy, as every stage does)
# puts its variables in: the commands the tests start get the user's, and each stage applies the profile itself.
USER_ENVIRONMENT = dict(os.environ)

import mnist_dvc.runtime.numeric_profile  # noqa: F401

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import local_cluster
import numpy as np
import pytest
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
