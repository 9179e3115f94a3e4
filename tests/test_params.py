"""Reading params.yaml: every bad value named with its key, and every value let through accepted by scikit-learn."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mnist_dvc.datasets import DataParams
from mnist_dvc.params import load_params
from mnist_dvc.paths import ROOT
from mnist_dvc.runner import UserError
from mnist_dvc.schema import BinaryParams, MulticlassParams, MultilabelParams, SplitParams


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
        load_params(section, schema, write_params(tmp_path, text))
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
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    *keys, last, value = edit
    node = params
    for key in keys:
        node = node[key]
    node[last] = value
    with pytest.raises(UserError) as raised:
        load_params(section, schema, write_params(tmp_path, yaml.safe_dump(params)))
    assert expected in str(raised.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- just\n- a list\n", "expected a mapping of sections"),
        ("data: {dataset: mnist-sample}\n", "'split' is missing"),
        ("split: [unclosed\n", "not valid YAML"),
        ("split: 0.2\n", "split = 0.2: Input should be a valid dictionary"),
    ],
)
def test_a_broken_params_file_is_reported(tmp_path, text, expected):
    with pytest.raises(UserError, match=expected):
        load_params("split", SplitParams, write_params(tmp_path, text))


def test_a_union_param_gets_one_line_with_what_is_allowed(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["multiclass"]["models"]["svc_ovo"]["gamma"] = -1.0
    with pytest.raises(UserError) as raised:
        load_params("multiclass", MulticlassParams, write_params(tmp_path, yaml.safe_dump(params)))
    lines = str(raised.value).splitlines()[1:]
    assert lines == [
        "  multiclass.models.svc_ovo.gamma = -1.0: Input should be 'scale' or 'auto' or Input should be greater than 0"
    ]


@pytest.mark.parametrize(
    ("section", "schema"),
    [
        ("data", DataParams),
        ("split", SplitParams),
        ("binary", BinaryParams),
        ("multiclass", MulticlassParams),
        ("multilabel", MultilabelParams),
    ],
)
def test_the_committed_params_are_valid(section, schema):
    assert load_params(section, schema) is not None
