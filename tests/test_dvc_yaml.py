"""dvc.yaml says exactly what each stage depends on: its code, transitively, and the params keys it reads."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

import mnist_dvc.study.schema as schema_module
from conftest import ROOT

STAGES_DIR = ROOT / "stages"
PACKAGE = "mnist_dvc"
# Each stage's definition; a `foreach` stage's is its `do:` template (`${key}` naming the item).
PIPELINE = {
    name: entry.get("do", entry) for name, entry in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items()
}


def module_file(name: str) -> Path:
    return STAGES_DIR / (name.replace(".", "/") + ".py")


def local_imports(module: Path) -> set[str]:
    """Modules of the project's package that `module` imports, anywhere in its code."""
    names = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.split(".")[0] == PACKAGE and module_file(name).exists()}


def code_of(stage: str) -> set[str]:
    """The stage's script and the folders of the package's layers it imports, transitively."""
    seen: set[Path] = set()
    todo = [STAGES_DIR / f"{stage}.py"]
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo.extend(module_file(name) for name in local_imports(path))
    layers = {path.parent for path in seen if path.parent.parent == STAGES_DIR / PACKAGE}
    return {str(path.relative_to(ROOT)) for path in {STAGES_DIR / f"{stage}.py", *layers}}


def calls(stage: str, function: str) -> list[ast.Call]:
    tree = ast.parse((STAGES_DIR / f"{stage}.py").read_text())
    return [
        node for node in ast.walk(tree) if isinstance(node, ast.Call) and getattr(node.func, "id", None) == function
    ]


def key_of(node: ast.expr) -> str:
    """A key as dvc.yaml writes it: `f"multiclass.models.{name}"` is `multiclass.models.${key}` in a foreach stage."""
    if isinstance(node, ast.JoinedStr):
        return "".join(part.value if isinstance(part, ast.Constant) else "${key}" for part in node.values)
    return node.value


def keys_read(stage: str) -> set[str]:
    """The params keys the stage's script loads: with load_params a section (`binary`) or one value, with load_keys
    the keys of a section that a schema names."""
    keys = {key_of(call.args[0]) for call in calls(stage, "load_params")}
    for call in calls(stage, "load_keys"):
        schema = getattr(schema_module, call.args[1].id)
        keys |= {f"{key_of(call.args[0])}.{field}" for field in schema.model_fields}
    return keys


@pytest.mark.parametrize("stage", list(PIPELINE))
def test_deps_list_exactly_the_code_the_stage_runs(stage):
    declared = {dep for dep in PIPELINE[stage]["deps"] if dep.startswith("stages/")}
    assert declared == code_of(stage)


@pytest.mark.parametrize("stage", list(PIPELINE))
def test_params_list_exactly_the_keys_the_stage_reads(stage):
    declared = PIPELINE[stage].get("params", [])
    if calls(stage, "load_all_params"):  # the whole file, as DVC's `- params.yaml:` declares it
        assert declared == [{"params.yaml": None}] and not keys_read(stage)
    else:
        assert set(declared) == keys_read(stage)


def test_the_cluster_and_the_download_rerun_only_the_stages_that_use_them():
    """An edit to the cluster code reruns the stages with parallel work, not `download` or `split`; one to the
    download code reruns `download` alone (and what follows only if its output changes); one to a figure or to the
    report's wording reruns the report stage only."""
    users = {
        layer: {stage for stage in PIPELINE if f"stages/{PACKAGE}/{layer}" in PIPELINE[stage]["deps"]}
        for layer in ("parallel", "datasets", "report")
    }
    assert users["parallel"] == {"train_binary", "train_multiclass", "train_multilabel"}
    assert users["datasets"] == {"download"} and users["report"] == {"report"}
    assert not any(dep.endswith(".py") for stage in PIPELINE for dep in PIPELINE[stage]["deps"][1:])


def test_stages_shows_the_stage_scripts_and_one_package():
    entries = sorted(path.name for path in STAGES_DIR.iterdir() if path.name != "__pycache__")
    assert entries == sorted([*(f"{stage}.py" for stage in PIPELINE), PACKAGE])
