"""The package's layers import one way: each folder of `stages/mnist_dvc` uses only the layers beneath it."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

from conftest import ROOT, run

PACKAGE_DIR = ROOT / "stages/mnist_dvc"
# Each layer and the layers it may import. The study is at the bottom and knows nothing of files or processes; the
# stage scripts use whichever layers they need.
LAYERS = {
    "study": set(),
    "files": {"study"},
    "runtime": {"study", "files"},
    "datasets": {"study", "files", "runtime"},
    "parallel": {"study", "files", "runtime"},
    "report": {"study", "files"},
}
# What a model file may need: the layers its classes live in and the one that reads it.
MODEL_FILE_LAYERS = {"study", "files"}


def imported_layers(module: Path) -> set[str]:
    """The layers of the package that `module` imports, anywhere in its code."""
    layers = set()
    for node in ast.walk(ast.parse(module.read_text())):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        if isinstance(node, ast.ImportFrom) and node.module == "mnist_dvc":
            names = [f"mnist_dvc.{alias.name}" for alias in node.names]
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        layers.update(name.split(".")[1] for name in names if name.startswith("mnist_dvc."))
    return layers


def test_every_module_lives_in_a_layer():
    folders = {path.name for path in PACKAGE_DIR.iterdir() if path.is_dir() and path.name != "__pycache__"}
    assert folders == set(LAYERS)
    assert [path.name for path in PACKAGE_DIR.glob("*.py")] == ["__init__.py"]
    # No stage lists the package's own __init__: it holds its docstring and nothing that could change a result.
    (docstring,) = ast.parse((PACKAGE_DIR / "__init__.py").read_text()).body
    assert isinstance(docstring, ast.Expr) and isinstance(docstring.value, ast.Constant)


@pytest.mark.parametrize("module", sorted(PACKAGE_DIR.glob("*/*.py")), ids=lambda path: path.stem)
def test_a_module_imports_only_its_own_layer_and_those_beneath(module):
    layer = module.parent.name
    assert imported_layers(module) <= LAYERS[layer] | {layer}


def imported_modules(script: Path) -> set[str]:
    """The top-level names of every module `script` imports, anywhere in its code."""
    names = set()
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add((node.module or "").split(".")[0])
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
    return names


@pytest.mark.parametrize("script", sorted([*ROOT.glob("benchmarks/*.py"), *ROOT.glob("tools/*.py")]), ids=str)
def test_benchmarks_and_tools_import_nothing_of_the_tests(script):
    """The tests use what benchmarks/ and tools/ offer (a repo copy, a local cluster), never the other way."""
    tests = {path.stem for path in (ROOT / "tests").glob("*.py")}
    assert not imported_modules(script) & tests


def test_the_layer_check_sees_an_import_that_runs_upwards(tmp_path):
    upwards = tmp_path / "features.py"
    upwards.write_text("from mnist_dvc.parallel.workers import map_rows\nimport mnist_dvc.runtime.messages\n")
    assert imported_layers(upwards) == {"parallel", "runtime"}
    sideways = tmp_path / "fetch.py"
    sideways.write_text("def f():\n    from mnist_dvc import report\n")
    assert imported_layers(sideways) == {"report"}


LOAD_WITHOUT_RUNTIME = """
import json, sys
from pathlib import Path
sys.path.insert(0, "stages")
for layer in {blocked!r}:
    sys.modules["mnist_dvc." + layer] = None  # importing it, or anything in it, raises ImportError
import numpy as np
from mnist_dvc.files.arrays import load_split_images, to_features
from mnist_dvc.files.models import read_model
images = to_features(load_split_images("test")[:5])
answers = {{}}
for path in sorted(Path("data/models").rglob("*.skops")):
    model = read_model(path)
    if getattr(model, "n_features_in_", None) == images.shape[1]:
        answers[str(path)] = np.asarray(model.predict(images)).tolist()
    else:
        answers[str(path)] = None
loaded = sorted(name for name, module in sys.modules.items() if module and name.startswith("mnist_dvc."))
print(json.dumps({{"answers": answers, "loaded": loaded}}))
"""


@pytest.mark.slow
def test_every_model_file_loads_and_predicts_with_the_study_layer_only(reproduced):
    """The classes a model file names import nothing of how work is scheduled or how a stage runs."""
    blocked = sorted(set(LAYERS) - MODEL_FILE_LAYERS)
    script = LOAD_WITHOUT_RUNTIME.format(blocked=blocked)
    result = json.loads(run([sys.executable, "-c", script], reproduced).stdout)
    answers = result["answers"]
    multiclass = {path for path in answers if path.startswith("data/models/multiclass/")}
    assert {Path(path).stem for path in multiclass} == {"svc_ovo", "svc_ovr", "svc_hog", "knn", "forest", "sgd"}
    assert all(answers[path] is not None and len(answers[path]) == 5 for path in multiclass)
    assert any(path.startswith("data/models/binary/") for path in answers)
    assert any(path.startswith("data/models/multilabel/") for path in answers)
    assert {name.split(".")[1] for name in result["loaded"]} <= MODEL_FILE_LAYERS
