"""The code stays ruff-clean: lint and formatting are part of the test suite, so CI fails on either."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conftest import ROOT, run

RUFF = Path(sys.executable).parent / "ruff"


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff_is_clean(command):
    result = run([str(RUFF), *command, "."], ROOT, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
