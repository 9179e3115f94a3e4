"""dvc.yaml says exactly what each stage depends on: its code, transitively, and the params it reads."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

STAGES_DIR = ROOT / "stages"
PIPELINE = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def local_imports(module: Path) -> set[str]:
    """Modules of stages/ that `module` imports, anywhere in its code."""
    names = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if (STAGES_DIR / f"{name}.py").exists()}


def code_of(stage: str) -> set[str]:
    seen, todo = set(), [stage]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(local_imports(STAGES_DIR / f"{name}.py"))
    return {f"stages/{name}.py" for name in seen}


def sections_read(stage: str) -> set[str]:
    """The params.yaml sections the stage's script loads with load_params."""
    tree = ast.parse((STAGES_DIR / f"{stage}.py").read_text())
    return {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "load_params"
    }


@pytest.mark.parametrize("stage", list(PIPELINE))
def test_deps_list_exactly_the_code_the_stage_runs(stage):
    declared = {dep for dep in PIPELINE[stage]["deps"] if dep.endswith(".py")}
    assert declared == code_of(stage)


@pytest.mark.parametrize("stage", list(PIPELINE))
def test_params_match_the_sections_the_stage_reads(stage):
    declared = {param.split(".")[0] for param in PIPELINE[stage].get("params", [])}
    assert declared == sections_read(stage)
