"""Copy the project into a new folder as a fresh git repo: the tracked files and the new ones git does not ignore,
committed once, as a clone of the working tree would be. A change can then be tried (`dvc repro`, `dvc exp run`)
without touching the workspace. Usage: `python tools/project_copy.py DESTINATION` (a folder that does not exist yet).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# Commits in the copy need an author whoever runs it, and must not depend on the user's git configuration.
AUTHOR = {
    "GIT_AUTHOR_NAME": "project-copy",
    "GIT_AUTHOR_EMAIL": "project-copy@localhost",
    "GIT_COMMITTER_NAME": "project-copy",
    "GIT_COMMITTER_EMAIL": "project-copy@localhost",
}


def command_env(base: Mapping[str, str], **extra: str | None) -> dict[str, str]:
    """`base` with this interpreter's bin/ first on PATH, so that `python` and `dvc` are the project's; `extra` sets
    variables, or unsets those given as None."""
    env = {**base, "PATH": f"{BIN}{os.pathsep}{base.get('PATH', os.defpath)}", **AUTHOR}
    for name, value in extra.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def project_files(root: Path = ROOT) -> list[str]:
    """Tracked files plus new ones not ignored: what a commit of the working tree would hold."""
    listing = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    return [name for name in listing.stdout.splitlines() if (root / name).is_file()]


def copy_repo(destination: Path, root: Path = ROOT) -> Path:
    """A fresh git repo in `destination` holding the project's files, as a new clone would."""
    for name in project_files(root):
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target)
    env = command_env(os.environ)
    for command in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "copy"]):
        subprocess.run(["git", *command], cwd=destination, env=env, check=True, capture_output=True)
    return destination


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("destination", type=Path, help="a folder that does not exist yet")
    args = parser.parse_args(argv)
    if args.destination.exists():
        parser.error(f"{args.destination} already exists: give a new folder")
    try:
        copy_repo(args.destination)
    except (OSError, subprocess.CalledProcessError) as error:
        shutil.rmtree(args.destination, ignore_errors=True)  # no half-made copy left behind
        print(f"error: cannot copy the project to {args.destination}: {error}", file=sys.stderr)
        return 1
    print(f"copied {len(project_files())} files to {args.destination}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
