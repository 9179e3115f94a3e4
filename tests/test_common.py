"""The shared module: params errors, atomic writes, array checks, canonical and trusted model files."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import common
import numpy as np
import pytest
import yaml
from common import UserError
from datasets import DataParams
from sklearn.linear_model import SGDClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mnist_dvc.schema import BinaryParams, ComputeParams, MulticlassParams, MultilabelParams, SplitParams


def write_params(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "section", "schema", "expected"),
    [
        (
            "split: {test_size: 1.5, seed: 1}",
            "split",
            SplitParams,
            "split.test_size = 1.5: Input should be less than 1",
        ),
        (
            "split: {test_size: 0.2, seed: 1, sed: 2}",
            "split",
            SplitParams,
            "split.sed: unknown key (allowed: test_size, seed)",
        ),
        (
            "split: {test_size: '0.2', seed: 1}",
            "split",
            SplitParams,
            "split.test_size = '0.2': Input should be a valid number",
        ),
        ("split: {seed: 1}", "split", SplitParams, "split.test_size: missing (required)"),
        (
            "data: {dataset: cifar}",
            "data",
            DataParams,
            "data.dataset = 'cifar': unknown dataset, allowed: mnist-sample",
        ),
    ],
)
def test_bad_params_name_the_key_the_value_and_what_is_allowed(tmp_path, text, section, schema, expected):
    with pytest.raises(UserError) as raised:
        common.load_params(section, schema, write_params(tmp_path, text))
    assert expected in str(raised.value)
    assert str(tmp_path / "params.yaml") in str(raised.value)


@pytest.mark.parametrize(
    ("edit", "section", "schema", "expected"),
    [
        (
            ("multilabel", "knn", "n_neighbors", 0),
            "multilabel",
            MultilabelParams,
            "multilabel.knn.n_neighbors = 0: Input should be greater than or equal to 1",
        ),
        (
            ("binary", "target_precision", 2),
            "binary",
            BinaryParams,
            "binary.target_precision = 2: Input should be less than or equal to 1",
        ),
        (
            ("multiclass", "models", "xgboost", {"depth": 3}),
            "multiclass",
            MulticlassParams,
            "multiclass.models.xgboost: unknown key (allowed: svc_ovo, svc_ovr, forest, sgd)",
        ),
        (
            ("multiclass", "models", "svc_ovo", "kernel", "poly"),
            "multiclass",
            MulticlassParams,
            "multiclass.models.svc_ovo.kernel: unknown key (allowed: C, gamma, pca_components, max_train_samples)",
        ),
    ],
)
def test_nested_bad_params_give_their_full_key_path(tmp_path, edit, section, schema, expected):
    params = yaml.safe_load((common.ROOT / "params.yaml").read_text())
    *keys, last, value = edit
    node = params
    for key in keys:
        node = node[key]
    node[last] = value
    with pytest.raises(UserError) as raised:
        common.load_params(section, schema, write_params(tmp_path, yaml.safe_dump(params)))
    assert expected in str(raised.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- just\n- a list\n", "expected a mapping of sections"),
        ("data: {dataset: mnist-sample}\n", "section 'split' is missing"),
        ("split: [unclosed\n", "not valid YAML"),
        ("split: 0.2\n", "split = 0.2: Input should be a valid dictionary"),
    ],
)
def test_a_broken_params_file_is_reported(tmp_path, text, expected):
    with pytest.raises(UserError, match=expected):
        common.load_params("split", SplitParams, write_params(tmp_path, text))


def test_a_union_param_gets_one_line_with_what_is_allowed(tmp_path):
    params = yaml.safe_load((common.ROOT / "params.yaml").read_text())
    params["multiclass"]["models"]["svc_ovo"]["gamma"] = -1.0
    with pytest.raises(UserError) as raised:
        common.load_params("multiclass", MulticlassParams, write_params(tmp_path, yaml.safe_dump(params)))
    lines = str(raised.value).splitlines()[1:]
    assert lines == [
        "  multiclass.models.svc_ovo.gamma = -1.0: Input should be 'scale' or 'auto' or Input should be greater than 0"
    ]


@pytest.mark.parametrize(
    ("section", "schema"),
    [
        ("data", DataParams),
        ("split", SplitParams),
        ("compute", ComputeParams),
        ("binary", BinaryParams),
        ("multiclass", MulticlassParams),
        ("multilabel", MultilabelParams),
    ],
)
def test_the_committed_params_are_valid(section, schema):
    assert common.load_params(section, schema) is not None


def test_atomic_path_leaves_nothing_when_the_block_fails(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), common.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_only_when_complete(tmp_path):
    target = tmp_path / "out.json"
    common.write_json(target, {"a": 1})
    common.write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_truncated_array_is_reported_with_its_file_name(tmp_path):
    path = tmp_path / "train_images.npy"
    common.save_array(path, np.zeros((10, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(UserError, match=f"{path}: not a valid .npy array file"):
        common.load_array(path, np.uint8, 3)


def test_array_of_the_wrong_kind_is_reported(tmp_path):
    path = tmp_path / "labels.npy"
    common.save_array(path, np.zeros((3, 2), np.float64))
    with pytest.raises(UserError, match=r"labels.npy: expected a 1-d uint8 array, got 2-d float64"):
        common.load_array(path, np.uint8, 1)


def fitted_model() -> object:
    features = np.random.default_rng(0).random((60, 5))
    return make_pipeline(StandardScaler(), SGDClassifier(random_state=0)).fit(features, features[:, 0] > 0.5)


DUMP_IN_A_NEW_PROCESS = """
import sys
sys.path.insert(0, "stages")
from pathlib import Path
import common
from tests.test_common import fitted_model
common.save_model(Path(sys.argv[1]), fitted_model())
"""


def test_the_same_model_gives_the_same_bytes_in_another_process(tmp_path):
    common.save_model(tmp_path / "here.skops", fitted_model())
    for name in ("there.skops", "again.skops"):
        subprocess.run([sys.executable, "-c", DUMP_IN_A_NEW_PROCESS, tmp_path / name], cwd=common.ROOT, check=True)
    here = (tmp_path / "here.skops").read_bytes()
    assert here == (tmp_path / "there.skops").read_bytes() == (tmp_path / "again.skops").read_bytes()


def test_objects_shared_in_a_model_stay_shared_after_canonicalization(tmp_path):
    weights, bias = np.arange(3.0), np.zeros(2)
    common.save_model(tmp_path / "shared.skops", [weights, weights, bias, bias])
    loaded = common.load_model(tmp_path / "shared.skops")
    assert loaded[0] is loaded[1] and loaded[2] is loaded[3]
    np.testing.assert_array_equal(loaded[0], weights)


def test_outputs_get_the_usual_file_mode(tmp_path):
    common.write_json(tmp_path / "out.json", {})
    assert (tmp_path / "out.json").stat().st_mode & 0o777 == 0o666 & ~common._UMASK


def test_a_canonical_model_loads_and_predicts_like_the_original(tmp_path):
    model = fitted_model()
    common.save_model(tmp_path / "model.skops", model)
    loaded = common.load_model(tmp_path / "model.skops")
    features = np.random.default_rng(1).random((20, 5))
    np.testing.assert_array_equal(loaded.predict(features), model.predict(features))


def tamper(path: Path, module: str, name: str) -> None:
    """Rewrite the archive so its top object claims to be `module.name`."""
    with zipfile.ZipFile(path) as archive:
        entries = {info.filename: archive.read(info) for info in archive.infolist()}
    schema = json.loads(entries["schema.json"])
    schema["__module__"], schema["__class__"] = module, name
    entries["schema.json"] = json.dumps(schema).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for filename, data in entries.items():
            archive.writestr(filename, data)
    path.write_bytes(buffer.getvalue())


def test_a_model_file_naming_an_untrusted_type_is_refused(tmp_path):
    path = tmp_path / "model.skops"
    common.save_model(path, fitted_model())
    tamper(path, "os", "system")
    with pytest.raises(UserError, match=r"model.skops: refused to load, the file names untrusted types: os.system"):
        common.load_model(path)


def test_a_model_file_with_a_damaged_schema_is_refused(tmp_path):
    path = tmp_path / "model.skops"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("schema.json", "[1, 2]")
    with pytest.raises(UserError, match=r"model.skops: not a valid skops model file"):
        common.load_model(path)


def test_a_model_file_that_is_not_a_skops_archive_is_refused(tmp_path):
    path = tmp_path / "model.skops"
    path.write_bytes(b"\x80\x04pickle bytes")
    with pytest.raises(UserError, match=r"model.skops: not a valid skops model file"):
        common.load_model(path)
