"""Files between stages: atomic writes, JSON and CSV, .npy arrays and dataset.json, each checked on load."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from mnist_dvc.files.arrays import load_array, load_dataset_info, load_labelled_images, save_array
from mnist_dvc.files.disk import STALE_SECONDS, atomic_path, json_number, json_value, write_csv, write_json
from mnist_dvc.files.paths import ROOT
from mnist_dvc.study.errors import UserError


def test_atomic_path_leaves_nothing_when_the_block_fails(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_only_when_complete(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_truncated_array_is_reported_with_its_file_name(tmp_path):
    path = tmp_path / "train_images.npy"
    save_array(path, np.zeros((10, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(UserError, match=f"{path}: not a valid .npy array file"):
        load_array(path, np.uint8, 3)


def test_array_of_the_wrong_kind_is_reported(tmp_path):
    path = tmp_path / "labels.npy"
    save_array(path, np.zeros((3, 2), np.float64))
    with pytest.raises(UserError, match=r"labels.npy: expected a 1-d uint8 array, got 2-d float64"):
        load_array(path, np.uint8, 1)


UMASK_IN_A_NEW_PROCESS = """
import os, sys
os.umask(0o027)
sys.path.insert(0, "stages")
from pathlib import Path
from mnist_dvc.files.disk import write_json
write_json(Path(sys.argv[1]), {})
"""


def test_outputs_get_the_mode_the_umask_gives_not_mkstemps_private_one(tmp_path):
    subprocess.run([sys.executable, "-c", UMASK_IN_A_NEW_PROCESS, tmp_path / "out.json"], cwd=ROOT, check=True)
    assert (tmp_path / "out.json").stat().st_mode & 0o777 == 0o640


def test_stale_temporaries_of_killed_writes_are_removed_by_the_next_write(tmp_path):
    stale, fresh = tmp_path / ".test.json.killed.tmp", tmp_path / ".test.json.running.tmp"
    stale.write_text("half")
    fresh.write_text("a write under way")
    an_hour_ago = time.time() - STALE_SECONDS - 1
    os.utime(stale, (an_hour_ago, an_hour_ago))
    write_json(tmp_path / "test.json", {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".test.json.running.tmp", "test.json"]


def test_an_unwritable_folder_is_named_not_a_traceback(tmp_path):
    (tmp_path / "reports").write_text("a file where the folder should be")
    with pytest.raises(UserError, match=r"reports/metrics.json: cannot write it \("):
        write_json(tmp_path / "reports" / "metrics.json", {"a": 1})


def test_a_full_disk_is_named(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(UserError, match=r"out.json: cannot write it \(no space left on the device\)"):
        write_json(tmp_path / "out.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []


def test_non_finite_numbers_are_never_written_as_json(tmp_path):
    with pytest.raises(ValueError, match="non-finite"):
        write_json(tmp_path / "test.json", {"roc_auc": float("nan")})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", ["high", None, True, float("inf"), [0.9]])
def test_a_metric_of_the_wrong_type_is_named(tmp_path, value):
    path = tmp_path / "multiclass_cv.json"
    data = {"multiclass": {"sgd": {"cv": {"accuracy": value}}}}
    with pytest.raises(UserError, match=r"multiclass_cv.json: 'multiclass.sgd.cv.accuracy' should be a number"):
        json_number(path, data, "multiclass.sgd.cv.accuracy")
    assert json_number(path, {"threshold": None}, "threshold", nullable=True) is None


def test_a_missing_metric_key_is_named(tmp_path):
    with pytest.raises(UserError, match=r"missing key 'multiclass.sgd'"):
        json_value(tmp_path / "m.json", {"multiclass": {}}, "multiclass.sgd.cv")


def test_csv_floats_have_the_given_significant_digits(tmp_path):
    write_csv(tmp_path / "c.csv", {"x": np.array([0.123456789, 1234.5678]), "n": np.array([1, 2])}, digits=3)
    assert (tmp_path / "c.csv").read_text() == "x,n\n0.123,1\n1.23e+03,2\n"


def test_every_damaged_npy_header_is_one_message_never_a_traceback(tmp_path):
    """Random byte changes in the header of a labels file: each loads as an array or gives the one-line message."""
    path = tmp_path / "train_labels.npy"
    save_array(path, np.arange(100, dtype=np.uint8) % 10)
    original = path.read_bytes()
    rng = np.random.default_rng(0)
    outcomes = {"loaded": 0, "refused": 0}
    for _ in range(600):
        damaged = bytearray(original)
        for position in rng.integers(0, 128, rng.integers(1, 4)):
            damaged[position] = rng.integers(0, 256)
        path.write_bytes(bytes(damaged))
        try:
            load_array(path, np.uint8, 1)
            outcomes["loaded"] += 1
        except UserError as error:
            assert str(error).startswith(f"{path}: ") and "\n" not in str(error)
            outcomes["refused"] += 1
    assert outcomes["refused"] > 300


@pytest.mark.parametrize(
    ("info", "problem"),
    [
        ({"name": "x", "class_names": ["a", "b"], "test_start": True}, "test_start"),
        ({"name": "x", "class_names": ["a"], "test_start": None}, "class_names"),
        ({"name": "x", "class_names": ["a", 2]}, "class_names.1"),
        ({"class_names": ["a", "b"]}, "name: Field required"),
        ({"name": "x", "class_names": ["a", "b"], "test_start": 0}, "test_start"),
        (["not", "a", "mapping"], "the file"),
    ],
)
def test_a_bad_dataset_json_is_named(tmp_path, info, problem):
    (tmp_path / "dataset.json").write_text(json.dumps(info))
    with pytest.raises(UserError, match=r"dataset.json: expected \{\"name\"") as raised:
        load_dataset_info(tmp_path)
    assert problem in str(raised.value)


def test_labels_out_of_range_and_length_mismatch_are_named(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"name": "x", "class_names": ["a", "b"], "handwritten": False}))
    save_array(tmp_path / "images.npy", np.zeros((3, 28, 28), np.uint8))
    save_array(tmp_path / "labels.npy", np.array([0, 1, 2], np.uint8))
    with pytest.raises(UserError, match=r"labels.npy: label 2 out of range for the 2 classes of dataset.json"):
        load_labelled_images(tmp_path)
    save_array(tmp_path / "labels.npy", np.array([0, 1], np.uint8))
    with pytest.raises(UserError, match=r"labels.npy: 2 labels for the 3 images of images.npy"):
        load_labelled_images(tmp_path)
