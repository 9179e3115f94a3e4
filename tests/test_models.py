"""Model files: canonical bytes, a faithful round trip, and nothing loaded but the types the pipeline writes."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import SGDClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mnist_dvc.files.models import canonical_skops, load_model, read_model, save_model
from mnist_dvc.files.paths import ROOT
from mnist_dvc.study.errors import UserError


def fitted_model() -> object:
    features = np.random.default_rng(0).random((60, 5))
    return make_pipeline(StandardScaler(), SGDClassifier(random_state=0)).fit(features, features[:, 0] > 0.5)


DUMP_IN_A_NEW_PROCESS = """
import sys
sys.path[:0] = ["stages", "tests"]
from pathlib import Path
from mnist_dvc.files.models import canonical_skops, load_model, read_model, save_model
from test_models import fitted_model
save_model(Path(sys.argv[1]), fitted_model())
"""


def test_the_same_model_gives_the_same_bytes_in_another_process(tmp_path):
    save_model(tmp_path / "here.skops", fitted_model())
    for name in ("there.skops", "again.skops"):
        subprocess.run([sys.executable, "-c", DUMP_IN_A_NEW_PROCESS, tmp_path / name], cwd=ROOT, check=True)
    here = (tmp_path / "here.skops").read_bytes()
    assert here == (tmp_path / "there.skops").read_bytes() == (tmp_path / "again.skops").read_bytes()


def test_objects_shared_in_a_model_stay_shared_after_canonicalization(tmp_path):
    weights, bias = np.arange(3.0), np.zeros(2)
    save_model(tmp_path / "shared.skops", [weights, weights, bias, bias])
    loaded = read_model(tmp_path / "shared.skops")
    assert loaded[0] is loaded[1] and loaded[2] is loaded[3]
    np.testing.assert_array_equal(loaded[0], weights)


def test_a_canonical_model_loads_and_predicts_like_the_original(tmp_path):
    model = fitted_model()
    save_model(tmp_path / "model.skops", model)
    loaded = read_model(tmp_path / "model.skops")
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
    save_model(path, fitted_model())
    tamper(path, "os", "system")
    with pytest.raises(UserError, match=r"model.skops: refused to load, the file names untrusted types: os.system"):
        read_model(path)


def test_the_trusted_types_are_the_trees_and_the_feature_steps_only():
    from mnist_dvc.files.models import TRUSTED_MODEL_TYPES

    assert sorted(TRUSTED_MODEL_TYPES) == [
        "mnist_dvc.study.features.Deskew",
        "mnist_dvc.study.features.HogFeatures",
        "mnist_dvc.study.features.ShiftAugmented",
        "sklearn.tree._tree.Tree",
    ]


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("mnist_dvc.study.features", "shifted_copies"),  # a function beside the trusted classes
        ("mnist_dvc.study.features", "Parallel"),  # a name the module imports
        ("mnist_dvc.runtime.runner", "UserError"),  # another class of the package
        ("skimage.feature", "hog"),
        ("builtins", "eval"),
    ],
)
def test_a_model_file_naming_any_other_type_is_still_refused(tmp_path, module, name):
    """Trusting the feature steps trusts those three classes, not their module, the package or skimage."""
    path = tmp_path / "model.skops"
    save_model(path, fitted_model())
    tamper(path, module, name)
    with pytest.raises(
        UserError, match=rf"refused to load, the file names untrusted types: {re.escape(module + '.' + name)}$"
    ):
        read_model(path)


def test_a_model_file_with_a_damaged_schema_is_refused(tmp_path):
    path = tmp_path / "model.skops"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("schema.json", "[1, 2]")
    with pytest.raises(UserError, match=r"model.skops: not a valid skops model file"):
        read_model(path)


def test_a_model_file_that_is_not_a_skops_archive_is_refused(tmp_path):
    path = tmp_path / "model.skops"
    path.write_bytes(b"\x80\x04pickle bytes")
    with pytest.raises(UserError, match=r"model.skops: not a valid skops model file"):
        read_model(path)


def test_the_canonical_rewrite_refuses_an_archive_entry_the_schema_does_not_reference():
    import skops.io as sio

    buffer = io.BytesIO(sio.dumps(fitted_model()))
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr("extra.bin", b"written by a future skops")
    with pytest.raises(RuntimeError, match=r"entries the schema does not reference: \['extra.bin'\]"):
        canonical_skops(buffer.getvalue())


@pytest.mark.parametrize("estimator", ["pipeline", "forest", "ovr_svc", "knn_multilabel"])
def test_the_rewrite_round_trips_every_kind_of_model_the_pipeline_saves(tmp_path, estimator):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC

    rng = np.random.default_rng(0)
    features = rng.random((90, 20))  # wide enough that KNN searches by brute force, as on 784 pixels
    labels = (features[:, 0] * 3).astype(int)
    model = {
        "pipeline": make_pipeline(StandardScaler(), SGDClassifier(random_state=0)),
        "forest": RandomForestClassifier(n_estimators=5, random_state=0),
        "ovr_svc": OneVsRestClassifier(SVC()),
        "knn_multilabel": KNeighborsClassifier(n_neighbors=3),
    }[estimator]
    target = np.column_stack([labels > 0, labels % 2 == 1]) if estimator == "knn_multilabel" else labels
    model.fit(features, target)
    save_model(tmp_path / "model.skops", model)
    loaded = load_model(tmp_path / "model.skops", type(model), 20)
    np.testing.assert_array_equal(loaded.predict(features), model.predict(features))
    save_model(tmp_path / "again.skops", loaded)
    assert (tmp_path / "again.skops").read_bytes() == (tmp_path / "model.skops").read_bytes()


def test_a_valid_model_of_the_wrong_kind_is_refused(tmp_path):
    from sklearn.neighbors import KNeighborsClassifier

    save_model(tmp_path / "knn.skops", fitted_model())
    with pytest.raises(UserError, match=r"knn.skops: holds a Pipeline, expected a KNeighborsClassifier"):
        load_model(tmp_path / "knn.skops", KNeighborsClassifier, 5)
    with pytest.raises(UserError, match=r"knn.skops: the model is not fitted on 784 features"):
        load_model(tmp_path / "knn.skops", type(fitted_model()), 784)


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_how_joblib_batched_the_fits_does_not_change_the_bytes(tmp_path, monkeypatch, batch_size):
    """Fits returned in one batch share their plain values (strings, numbers); the file must not show it."""
    import sklearn.multiclass
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.svm import SVC
    from sklearn.utils.parallel import Parallel

    rng = np.random.default_rng(0)
    features = rng.random((300, 20))
    labels = (features[:, 0] * 10).astype(int)
    one_by_one = OneVsRestClassifier(SVC()).fit(features, labels)
    save_model(tmp_path / "serial.skops", one_by_one)
    monkeypatch.setattr(sklearn.multiclass, "Parallel", lambda *a, **k: Parallel(*a, batch_size=batch_size, **k))
    batched = OneVsRestClassifier(SVC(), n_jobs=2).fit(features, labels).set_params(n_jobs=None)
    save_model(tmp_path / "batched.skops", batched)
    assert (tmp_path / "batched.skops").read_bytes() == (tmp_path / "serial.skops").read_bytes()
