"""A pull request's check: does `dvc repro` reproduce every committed output, and what changed against the base?

    python tools/pr_check.py origin/main --output pr-check.md

What `.github/workflows/reproduce.yml` runs on every pull request, and what anyone can run before pushing:

1. `dvc pull`, when the repo has a DVC remote (data and models come from it instead of being rebuilt; if the pull
   fails, `dvc repro` rebuilds what is missing);
2. `dvc repro`, then `git status`: on any x86-64 machine with AVX2 the numeric profile makes every output
   byte-identical, so a changed or new file means the pull request did not commit the outputs of its own code and
   params (or the pipeline is not reproducible);
3. `dvc metrics diff BASE --md`, and `tools/compare.py BASE`: which metrics moved, and which moves are more than noise.

It writes one Markdown comment (to --output, else stdout) and exits with 1 if step 2 found a changed output or
`dvc repro` failed, else 0.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

TOOLS = Path(__file__).resolve().parent


def run(args: Sequence[str]) -> subprocess.CompletedProcess:
    """A command in the current folder, its output captured; a missing program is a failed command, not a crash."""
    try:
        return subprocess.run(list(args), capture_output=True, text=True)
    except OSError as error:
        return subprocess.CompletedProcess(list(args), 127, "", f"{args[0]}: {error.strerror}")


def dvc(*args: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args])


def last_line(result: subprocess.CompletedProcess) -> str:
    lines = (result.stderr or result.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit code {result.returncode}"


def pull_section() -> list[str]:
    """`dvc pull` where the repo has a remote: a line for the comment."""
    if not dvc("remote", "list").stdout.strip():
        return ["No DVC remote is configured: every stage was rebuilt from the committed inputs."]
    pulled = dvc("pull")
    if pulled.returncode != 0:
        return [f"`dvc pull` failed, so `dvc repro` rebuilt what was missing: `{last_line(pulled)}`"]
    return ["Data and models were pulled from the DVC remote."]


def reproduce_section() -> tuple[list[str], bool]:
    """`dvc repro` and `git status`: the comment's lines, and whether every committed output was reproduced."""
    reproduced = dvc("repro")
    if reproduced.returncode != 0:
        return [f"**`dvc repro` failed**: `{last_line(reproduced)}`"], False
    changed = run(["git", "status", "--porcelain"]).stdout.splitlines()
    if not changed:
        return ["**Reproduced**: `dvc repro` gave every committed output byte for byte (`git status` is clean)."], True
    files = "\n".join(f"- `{line[3:]}` ({'new' if line.startswith('??') else 'changed'})" for line in changed)
    lines = [
        "**Not reproduced**: after `dvc repro` these files differ from the commit. Run `dvc repro` and commit "
        "`dvc.lock` and `reports/` with the change (on x86-64 Linux with AVX2, where outputs are byte-identical):",
        "",
        files,
    ]
    return lines, False


def metrics_section(base: str) -> list[str]:
    diff = dvc("metrics", "diff", base, "--md")
    if diff.returncode != 0:
        return [f"`dvc metrics diff {base}` failed: `{last_line(diff)}`"]
    return [diff.stdout.strip() or f"No metric differs from `{base}`."]


def significance_section(base: str) -> list[str]:
    compared = run([sys.executable, str(TOOLS / "compare.py"), base])
    if compared.returncode != 0:
        return [f"`tools/compare.py {base}` could not compare: `{last_line(compared)}`"]
    return [compared.stdout.strip()]


def comment(base: str) -> tuple[str, bool]:
    """The Markdown comment, and whether the check passed."""
    pulled = pull_section()
    reproduced, passed = reproduce_section()
    parts = [
        "## Reproducibility",
        "",
        *pulled,
        "",
        *reproduced,
        "",
        f"## Metrics against `{base}` (`dvc metrics diff`)",
        "",
        *metrics_section(base),
        "",
        f"## Is each difference more than noise? (`tools/compare.py {base}`)",
        "",
        *significance_section(base),
    ]
    return "\n".join(parts) + "\n", passed


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", metavar="BASE", help="the revision the pull request goes into (e.g. origin/main)")
    parser.add_argument("--output", type=Path, help="write the comment here (default: print it)")
    args = parser.parse_args(argv)
    text, passed = comment(args.base)
    if args.output is None:
        print(text, end="")
    else:
        args.output.write_text(text)
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
