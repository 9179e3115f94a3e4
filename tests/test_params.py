"""Reading params.yaml: every bad value named with its key, and every value let through accepted by scikit-learn."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from mnist_dvc.datasets.registry import DataParams
from mnist_dvc.files.paths import ROOT
from mnist_dvc.runtime.params import binary_class_name, check_stratified_split, load_params
from mnist_dvc.study.errors import UserError
from mnist_dvc.study.schema import BinaryParams, ClassIndex, MulticlassParams, MultilabelParams, SplitParams


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
            "multiclass.models.xgboost: unknown key (allowed: svc_hog, svc_ovo, svc_ovr, knn, forest, sgd)",
        ),
        (
            ("multiclass", "models", "svc_ovo", "kernel", "poly"),
            "multiclass",
            MulticlassParams,
            "multiclass.models.svc_ovo.kernel: unknown key (allowed: augment_shifts, C, gamma, pca_components, "
            "max_train_samples)",
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


COMMITTED = yaml.safe_load((ROOT / "params.yaml").read_text())


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
def test_the_committed_params_are_valid_and_read_as_written(section, schema):
    assert load_params(section, schema).model_dump(exclude_none=True) == drop_nulls(COMMITTED[section])


def drop_nulls(node):
    if isinstance(node, dict):
        return {key: drop_nulls(value) for key, value in node.items() if value is not None}
    return node


def test_a_single_value_is_read_and_checked_at_its_key(tmp_path):
    assert load_params("binary.digit", ClassIndex) == COMMITTED["binary"]["digit"]
    path = write_params(tmp_path, "binary: {digit: 12}\n")
    with pytest.raises(UserError, match=r"binary.digit = 12: Input should be less than or equal to 9"):
        load_params("binary.digit", ClassIndex, path)
    with pytest.raises(UserError, match=r"'binary.digit' is missing"):
        load_params("binary.digit", ClassIndex, write_params(tmp_path, "binary: {}\n"))


# --- every value the schema lets through is one scikit-learn accepts ------------------------------

ESTIMATOR_SECTIONS = {"binary": BinaryParams, "multiclass": MulticlassParams, "multilabel": MultilabelParams}


def numeric_leaves(schema: dict, defs: dict, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], list[float]]:
    """Every number in a JSON schema of params, with its extreme allowed values (both ends)."""
    if "$ref" in schema:
        return numeric_leaves(defs[schema["$ref"].split("/")[-1]], defs, path)
    leaves: dict[tuple[str, ...], list[float]] = {}
    for key, node in schema.get("properties", {}).items():
        leaves.update(numeric_leaves(node, defs, (*path, key)))
    for option in schema.get("anyOf", []):
        leaves.update(numeric_leaves(option, defs, path))
    if schema.get("type") in ("integer", "number"):
        step = 1 if schema["type"] == "integer" else 1e-9
        low = schema.get("minimum", schema.get("exclusiveMinimum", -1e300) + step)
        high = schema.get(
            "maximum", schema.get("exclusiveMaximum", 1e300) - step if schema["type"] == "number" else 10**9
        )
        leaves[path] = [low, high]
    return leaves


def estimators_in(model) -> list:
    from sklearn.base import BaseEstimator

    return [model, *(value for value in model.get_params(deep=True).values() if isinstance(value, BaseEstimator))]


def build_all(section: str, params):
    import train_binary
    import train_multiclass
    import train_multilabel

    if section == "binary":
        return list(train_binary.build_models(params).values())
    if section == "multiclass":
        return [
            train_multiclass.build_model(name, getattr(params.models, name), handwritten=True)
            for name in params.models.names()
        ]
    return [train_multilabel.build_model(params.knn)]


CASES = [
    (section, path, value)
    for section, schema in ESTIMATOR_SECTIONS.items()
    for path, values in numeric_leaves(schema.model_json_schema(), schema.model_json_schema().get("$defs", {})).items()
    for value in values
]


@pytest.mark.parametrize(("section", "path", "value"), CASES, ids=[f"{s}.{'.'.join(p)}={v:g}" for s, p, v in CASES])
def test_every_bound_of_the_schema_is_accepted_by_the_estimators(section, path, value):
    params = copy.deepcopy(COMMITTED[section])
    node = params
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    validated = ESTIMATOR_SECTIONS[section].model_validate(params)  # the schema lets it through ...
    one_image = np.random.default_rng(0).random((1, 784), dtype=np.float32)
    for model in build_all(section, validated):
        for estimator in estimators_in(model):
            if hasattr(estimator, "_parameter_constraints"):
                estimator._validate_params()  # ... and so does scikit-learn's own check ...
            else:
                estimator.fit_transform(one_image)  # ... and the project's own feature steps


def test_the_bounds_cover_every_estimator_number():
    covered = {".".join((section, *path)) for section, path, _ in CASES}
    assert {"binary.sgd.alpha", "binary.forest.n_estimators", "binary.dummy.random_state"} <= covered
    assert {"multiclass.models.svc_ovo.C", "multiclass.models.svc_ovr.gamma", "multilabel.knn.n_neighbors"} <= covered
    assert "multiclass.models.svc_ovo.pca_components" in covered


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("binary.sgd.alpha", float("nan"), "Input should be a finite number"),
        ("binary.sgd.random_state", 2**32, "Input should be less than or equal to 4294967295"),
        ("binary.forest.n_estimators", 1_000_000_000, "Input should be less than or equal to 5000"),
        ("multiclass.models.svc_ovo.C", float("inf"), "Input should be a finite number"),
        ("multilabel.cv_folds", True, "Input should be a valid integer"),
    ],
)
def test_values_the_estimators_would_refuse_are_refused_first(tmp_path, key, value, expected):
    params = copy.deepcopy(COMMITTED)
    *parents, last = key.split(".")
    node = params
    for part in parents:
        node = node[part]
    node[last] = value
    section = key.split(".")[0]
    with pytest.raises(UserError, match=re.escape(f"{key} = {value!r}: {expected}")):
        load_params(section, ESTIMATOR_SECTIONS[section], write_params(tmp_path, yaml.safe_dump(params)))


@pytest.mark.parametrize(("written", "value"), [("1e-05", 1e-05), ("1e-7", 1e-7), ("1e16", 1e16), ("0.0001", 1e-4)])
def test_numbers_are_read_as_dvc_reads_them(tmp_path, written, value):
    """YAML 1.2, as DVC's ruamel.yaml: PyYAML's YAML 1.1 read `1e-05` as a string, and the stage refused it."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())["binary"]
    text = yaml.safe_dump({"binary": params}).replace("alpha: 0.0001", f"alpha: {written}")
    assert load_params("binary", BinaryParams, write_params(tmp_path, text)).sgd.alpha == value


def test_anchors_and_aliases_are_refused_before_they_expand(tmp_path):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(9)
    )
    with pytest.raises(UserError, match=r"params.yaml: line 1: YAML anchors \(&\) and aliases \(\*\) are not allowed"):
        load_params("split", SplitParams, write_params(tmp_path, bomb + "split: {test_size: 0.2, seed: 1}\n"))


def test_a_huge_value_is_quoted_short(tmp_path):
    numbers = "[" + ", ".join(["1"] * 200_000) + "]"
    with pytest.raises(UserError) as raised:
        load_params("split", SplitParams, write_params(tmp_path, f"split: {{test_size: {numbers}, seed: 1}}\n"))
    message = str(raised.value)
    assert len(message) < 400 and "split.test_size = [1, 1, 1" in message and "(600,000 characters)" in message


@pytest.mark.parametrize(
    ("mirror", "problem"),
    [
        ("http://[::1", "not a valid URL (Invalid IPv6 URL)"),
        ("~nosuchuser/x", "~nosuchuser names no user of this machine"),
        ("a\x00b", "contains a NUL character"),
        ("ftp://example.org/", "unsupported URL scheme 'ftp'"),
        ("https:///files/", "a URL without a host"),
    ],
)
def test_a_mirror_that_cannot_be_a_source_is_named(tmp_path, mirror, problem):
    text = yaml.safe_dump({"data": {"dataset": "mnist", "mirrors": ["/srv/ok", mirror]}})
    with pytest.raises(UserError, match=r"data\.mirrors") as raised:
        load_params("data", DataParams, write_params(tmp_path, text))
    assert f"entry 2 {mirror!r}: {problem}" in str(raised.value)


@pytest.mark.parametrize(
    ("setting", "expected"), [("8G", 8 * 2**30), ("500M", 500 * 2**20), ("2.5GB", int(2.5 * 2**30)), ("1000", 1000)]
)
def test_the_memory_limit_reads_sizes(setting, expected):
    from mnist_dvc.runtime.memory import memory_limit

    assert memory_limit(setting) == expected


def test_a_bad_memory_limit_is_named():
    from mnist_dvc.runtime.memory import memory_limit

    with pytest.raises(UserError, match=r"MNIST_DVC_MEMORY_LIMIT='lots': expected an amount of memory such as 8G"):
        memory_limit("lots")


@pytest.mark.parametrize(
    ("size", "labels", "message"),
    [
        (
            0.05,
            np.repeat(np.arange(10), 10),
            "split.test_size = 0.05 holds out 5 of 100 images: each side needs at least 10",
        ),
        (
            0.95,
            np.repeat(np.arange(10), 10),
            "split.test_size = 0.95 holds out 95 of 100 images: each side needs at least 10",
        ),
        (
            0.5,
            np.array([0, 0, 1, 1, 2, 0]),
            "split.test_size: class 2 has a single one of the 6 images, which cannot be",
        ),
    ],
)
def test_a_stratified_split_needs_every_class_on_both_sides(size, labels, message):
    with pytest.raises(UserError, match=re.escape(f"params.yaml: {message}")):
        check_stratified_split("split.test_size", size, labels, "images")


def test_a_stratified_split_that_fits_says_how_many_it_holds_out():
    from sklearn.model_selection import train_test_split

    labels = np.repeat(np.arange(10), 7)
    held = check_stratified_split("multiclass.validation_size", 0.3, labels, "training images")
    assert held == len(train_test_split(labels, test_size=0.3, stratify=labels, random_state=0)[1]) == 21


def test_binary_digit_names_one_of_the_classes():
    names = [f"class {i}" for i in range(10)]
    assert binary_class_name(5, names) == "class 5"
    with pytest.raises(UserError, match=re.escape("binary.digit = 10, but the dataset has 10 classes: use at most 9")):
        binary_class_name(10, names)
