"""Shared fixtures: temp copies of the repo, commands run with this environment's tools."""

# ruff: noqa: E402  (the user's environment is read before the numeric profile changes it)
from __future__ import annotations

import os

# The environment as the user set it, before the numeric profile (imported next, ahead of numpy, as every stage does)
# puts its variables in: the commands the tests start get the user's, and each stage applies the profile itself.
USER_ENVIRONMENT = dict(os.environ)

import mnist_dvc.numeric_profile  # noqa: F401

import shutil
import subprocess
import sys
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


def dvc(args: list[str], cwd: Path, check: bool = True, **extra: str | None) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args], cwd, check=check, **extra)


@pytest.fixture(scope="session")
def sample() -> tuple[np.ndarray, np.ndarray]:
    """600 real MNIST digits (60 per class) from the offline sample, shuffled."""
    from mnist_dvc.datasets import DataSource, load_mnist_sample

    dataset = load_mnist_sample(DataSource(mirrors=(), cache_dir=Path("unused")))
    keep = np.random.default_rng(0).permutation(np.concatenate([np.arange(c * 500, c * 500 + 60) for c in range(10)]))
    return dataset.images[keep], dataset.labels[keep]
