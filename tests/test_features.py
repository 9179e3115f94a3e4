"""The feature steps: what they compute, always the same bytes, and model files that load and save like any other."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
import warnings

import numpy as np
import pytest
from scipy import ndimage
from skimage.feature import hog
from sklearn.decomposition import PCA
from sklearn.model_selection import StratifiedKFold, cross_val_predict, cross_validate
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC

from conftest import ROOT
from mnist_dvc.arrays import to_features
from mnist_dvc.features import Deskew, HogFeatures, ShiftAugmented, hog_images, shifted_copies
from mnist_dvc.models import load_model, read_model, save_model

CENTRE = 13.5


@pytest.fixture(scope="module")
def digits(sample) -> tuple[np.ndarray, np.ndarray]:
    """200 real digits as the models see them: (200, 784) float32 in [0, 1], and their labels."""
    images, labels = sample
    return to_features(images[:200]), labels[:200]


def moments(image: np.ndarray) -> tuple[float, float, float]:
    """Centre of mass (row, column) and the skew mu11 / mu02 of one 28x28 image, computed here independently."""
    rows, cols = np.indices(image.shape)
    total = image.sum()
    row, col = (rows * image).sum() / total, (cols * image).sum() / total
    mu11 = ((rows - row) * (cols - col) * image).sum() / total
    mu02 = ((rows - row) ** 2 * image).sum() / total
    return row, col, mu11 / mu02


def sheared_bar(skew: float) -> np.ndarray:
    """An upright bar of ink, leaning by `skew` columns per row (mu11 / mu02 = skew), and moved off the centre."""
    bar = np.zeros((28, 28))
    bar[5:23, 12:16] = 1.0
    matrix = np.array([[1.0, 0.0], [-skew, 1.0]])  # output (r, c) samples the bar at (r, c - skew * r) + offset
    offset = np.array([1.0, skew * CENTRE - 2.0])  # and off the centre: 1 row up, 2 columns right
    return ndimage.affine_transform(bar, matrix, offset=offset, order=1)


def test_the_steps_give_float32_rows_of_the_documented_width(digits):
    features, _ = digits
    for step, width in [(Deskew(), 784), (Deskew(enabled=False), 784), (HogFeatures(), 2025 + 784)]:
        for dtype in (np.float32, np.float64):
            out = step.fit(features.astype(dtype)).transform(features.astype(dtype))
            assert out.shape == (200, width) and out.dtype == np.float32
            assert step.n_features_in_ == 784


@pytest.mark.parametrize(
    ("params", "n_hog"),
    [({}, 2025), ({"pixels_per_cell": 7, "cells_per_block": 2, "orientations": 8}, 3 * 3 * 2 * 2 * 8)],
    ids=["defaults", "7px-cells"],
)
def test_the_hog_feature_count(digits, params, n_hog):
    features, _ = digits
    assert HogFeatures(**params).n_hog_features() == n_hog
    descriptors = HogFeatures(**params, keep_pixels=False).fit_transform(features[:5])
    with_pixels = HogFeatures(**params).fit_transform(features[:5])
    assert descriptors.shape == (5, n_hog) and with_pixels.shape == (5, n_hog + 784)
    np.testing.assert_array_equal(with_pixels, np.hstack([descriptors, features[:5]]))


def test_pixels_in_0_1_give_what_pixels_in_0_255_give(digits):
    """Moments are ratios and HOG blocks are normalised: [0, 1] features work as the prototype's 0..255 did."""
    features, _ = digits
    deskew = Deskew().fit(features)
    np.testing.assert_allclose(deskew.transform(features[:20] * 255), deskew.transform(features[:20]) * 255, atol=1e-3)
    hog = HogFeatures(keep_pixels=False).fit(features)
    np.testing.assert_allclose(hog.transform(features[:20]), hog.transform(features[:20] * 255), atol=1e-5)


def test_the_same_images_give_the_same_bytes_in_any_chunks(digits):
    features, _ = digits
    for step in (Deskew(), HogFeatures()):
        whole = step.fit(features).transform(features).tobytes()
        assert step.transform(features).tobytes() == whole
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("mnist_dvc.features.IMAGES_PER_CHUNK", 64)  # four chunks, the last one short
            assert step.transform(features).tobytes() == whole
        assert np.vstack([step.transform(features[:1]), step.transform(features[1:])]).tobytes() == whole


def test_wide_hog_params_take_smaller_chunks_not_more_memory():
    """The widest params allowed: 112,896 descriptors an image. Chunks shrink so that HOG's intermediates stay near
    256 MB beside the result, which is written in place (concatenating chunks would hold it twice)."""
    wide = HogFeatures(orientations=36, pixels_per_cell=2, cells_per_block=7, keep_pixels=False)
    assert HogFeatures().images_per_chunk() >= 1000 and wide.images_per_chunk() < 100
    images = np.random.default_rng(0).random((250, 784)).astype(np.float32)
    wide.fit(images[:1])
    tracemalloc.start()
    try:
        descriptors = wide.transform(images)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert descriptors.shape == (250, wide.n_hog_features())
    assert peak - descriptors.nbytes < 320 * 2**20


def skimage_hog(images: np.ndarray, orientations: int, pixels_per_cell: int, cells_per_block: int) -> np.ndarray:
    cell, block = (pixels_per_cell, pixels_per_cell), (cells_per_block, cells_per_block)
    params = {"orientations": orientations, "pixels_per_cell": cell, "cells_per_block": block, "block_norm": "L2-Hys"}
    return np.array([hog(image.astype(np.float64), **params) for image in images], dtype=np.float32)


@pytest.mark.parametrize(
    ("orientations", "pixels_per_cell", "cells_per_block"),
    [(9, 4, 2), (9, 4, 3), (8, 7, 2), (12, 3, 3), (7, 5, 2), (1, 2, 1), (36, 9, 3)],
)
def test_hog_gives_skimages_descriptors_to_the_bit(digits, orientations, pixels_per_cell, cells_per_block):
    """Raw and deskewed digits, 0..255 pixels, noise, a blank image; even and odd cells (an odd cell keeps all its
    pixels), blocks of one cell to three."""
    features, _ = digits
    noise = np.random.default_rng(0).random((50, 784))
    images = np.vstack([features, Deskew().fit_transform(features), features[:20] * 255, noise, np.zeros((1, 784))])
    images = images.reshape(-1, 28, 28)
    params = orientations, pixels_per_cell, cells_per_block
    assert hog_images(images, *params).tobytes() == skimage_hog(images, *params).tobytes()


@pytest.mark.parametrize("degrees", [25.714284896850586, 25.7142857142857])
def test_hog_bins_an_angle_next_to_a_bin_edge_as_skimage_does(degrees):
    """skimage's bin edges are float64 (180 / 7 = 25.7142857142857...); rounded to float32 the first one moves down
    to 25.7142849. Both angles lie between the two, so skimage puts them in bin 0, float32 edges in bin 1."""
    angle = np.deg2rad(degrees)
    image = np.zeros((1, 28, 28))
    image[0, 11, 10], image[0, 10, 11] = 10 * np.sin(angle), 10 * np.cos(angle)  # the gradient at (10, 10)
    assert hog_images(image, 7, 4, 2).tobytes() == skimage_hog(image, 7, 4, 2).tobytes()


def test_a_sheared_image_comes_back_upright_and_centred():
    image = sheared_bar(0.4)
    row, col, skew = moments(image)
    assert skew == pytest.approx(0.4, abs=0.01) and abs(col - CENTRE) > 1  # what is to be undone
    straight = Deskew().fit_transform(image.reshape(1, 784)).reshape(28, 28)
    row, col, skew = moments(straight)
    assert abs(skew) < 0.01
    assert row == pytest.approx(CENTRE, abs=0.02) and col == pytest.approx(CENTRE, abs=0.02)
    assert straight.sum() == pytest.approx(image.sum(), rel=1e-3)  # the ink is moved, not lost


def test_real_digits_come_back_upright_and_centred(digits):
    features, _ = digits
    before = np.array([moments(image) for image in features.reshape(-1, 28, 28)])
    after = np.array([moments(image) for image in Deskew().fit_transform(features).reshape(-1, 28, 28)])
    assert np.abs(before[:, 2]).mean() > 0.1
    # 95%, not all: a digit whose ink the shear pushes past the border loses some, and its moments move a little.
    assert np.quantile(np.abs(after[:, 2]), 0.95) < 0.01
    assert np.quantile(np.abs(after[:, :2] - CENTRE), 0.95) < 0.01


def test_a_blank_image_is_deskewed_to_blank_without_a_division_by_zero():
    blank = np.zeros((2, 784), np.float32)
    line = np.zeros((1, 28, 28), np.float32)
    line[0, 10, 5:20] = 1.0  # ink on one row: mu02 = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = Deskew().fit_transform(np.vstack([blank, line.reshape(1, 784)]))
    assert not out[:2].any()
    row, col, _ = moments(out[2].reshape(28, 28))
    assert (row, col) == (pytest.approx(CENTRE), pytest.approx(CENTRE))


def test_disabled_deskew_passes_the_pixels_through(digits):
    features, _ = digits
    assert Deskew(enabled=False).fit_transform(features).tobytes() == features.tobytes()


def test_shifted_copies_are_the_images_moved_one_pixel_with_a_zero_border(digits):
    features, labels = digits
    n = len(labels)
    copies, copy_labels = shifted_copies(features, labels, 1)
    assert copies.shape == (5 * n, 784) and copies.dtype == features.dtype
    np.testing.assert_array_equal(copy_labels, np.tile(labels, 5))
    images = features.reshape(n, 28, 28)
    original, up, down, left, right = copies.reshape(5, n, 28, 28)
    np.testing.assert_array_equal(original, images)
    np.testing.assert_array_equal(up[:, :-1], images[:, 1:])
    np.testing.assert_array_equal(down[:, 1:], images[:, :-1])
    np.testing.assert_array_equal(left[:, :, :-1], images[:, :, 1:])
    np.testing.assert_array_equal(right[:, :, 1:], images[:, :, :-1])
    for border in (up[:, -1], down[:, 0], left[:, :, -1], right[:, :, 0]):
        assert not border.any()


def test_a_larger_shift_moves_further_and_a_shift_of_nothing_is_refused(digits):
    features, labels = digits
    copies, _ = shifted_copies(features[:3], labels[:3], 3)
    right = copies[12:].reshape(3, 28, 28)
    np.testing.assert_array_equal(right[:, :, 3:], features[:3].reshape(3, 28, 28)[:, :, :-3])
    assert not right[:, :, :3].any()
    for shift in (0, 28):
        with pytest.raises(ValueError, match="shift must be"):
            shifted_copies(features, labels, shift)


def test_deskewing_a_shifted_copy_gives_its_original_back(digits):
    """Why `ShiftAugmented` must not wrap a `Deskew`: the copies would be duplicates."""
    features, labels = digits
    border = np.ones((28, 28), bool)
    border[2:-2, 2:-2] = False
    inside = ~features.reshape(-1, 28, 28)[:, border].any(axis=1)  # no ink near the border: a shift loses none
    assert inside.sum() > 100
    copies, _ = shifted_copies(features[inside], labels[inside], 1)
    original, *shifted = Deskew().fit_transform(copies).reshape(5, inside.sum(), 784)
    for copy in shifted:
        np.testing.assert_allclose(copy, original, atol=1e-5)


def test_shift_augmented_trains_on_five_copies_and_delegates_to_its_estimator(digits):
    features, labels = digits
    model = ShiftAugmented(KNeighborsClassifier(n_neighbors=3)).fit(features, labels)
    assert model.estimator_.n_samples_fit_ == 5 * len(labels)
    assert not hasattr(model.estimator, "n_samples_fit_")  # a clone was fitted, not the given estimator
    np.testing.assert_array_equal(model.classes_, np.arange(10))
    assert model.n_features_in_ == 784
    np.testing.assert_array_equal(model.predict(features), model.estimator_.predict(features))
    np.testing.assert_array_equal(model.predict_proba(features), model.estimator_.predict_proba(features))
    assert model.score(features, labels) == model.estimator_.score(features, labels)
    svc = ShiftAugmented(SVC())
    assert not hasattr(svc, "predict_proba") and hasattr(svc, "decision_function")


def test_shift_augmented_augments_only_the_training_folds(digits):
    features, labels = digits
    folds = StratifiedKFold(n_splits=4)
    model = ShiftAugmented(KNeighborsClassifier(n_neighbors=3))
    predicted = cross_val_predict(model, features, labels, cv=folds)
    assert predicted.shape == labels.shape
    assert (predicted == labels).mean() > 0.6  # chance is 0.1
    in_a_pipeline = Pipeline([("pixels", Deskew(enabled=False)), ("knn", model)])
    fitted = cross_validate(in_a_pipeline, features, labels, cv=folds, return_estimator=True)["estimator"]
    assert [pipeline["knn"].estimator_.n_samples_fit_ for pipeline in fitted] == [5 * 150] * 4


def feature_pipeline() -> Pipeline:
    return Pipeline(
        [
            ("deskew", Deskew()),
            ("hog", HogFeatures()),
            ("pca", PCA(n_components=20, svd_solver="randomized", random_state=0)),  # 2,809 wide: the fast solver
            ("svc", SVC(C=10)),
        ]
    )


@pytest.mark.parametrize("kind", ["pipeline", "shift_augmented"])
def test_a_model_of_feature_steps_saves_loads_and_saves_again_to_the_same_bytes(digits, tmp_path, kind):
    features, labels = digits
    build = feature_pipeline if kind == "pipeline" else lambda: ShiftAugmented(KNeighborsClassifier(n_neighbors=3))
    model = build().fit(features, labels)
    save_model(tmp_path / "model.skops", model)
    loaded = load_model(tmp_path / "model.skops", type(model), 784)
    np.testing.assert_array_equal(loaded.predict(features), model.predict(features))
    save_model(tmp_path / "again.skops", loaded)
    save_model(tmp_path / "refitted.skops", build().fit(features, labels))
    saved = (tmp_path / "model.skops").read_bytes()
    assert (tmp_path / "again.skops").read_bytes() == saved == (tmp_path / "refitted.skops").read_bytes()


SAVE_IN_A_NEW_PROCESS = """
import sys
sys.path[:0] = ["stages", "tests"]
from pathlib import Path
import numpy as np
from mnist_dvc.models import save_model
from test_features import feature_pipeline
features, labels = np.load(sys.argv[1]), np.load(sys.argv[2])
save_model(Path(sys.argv[3]), feature_pipeline().fit(features, labels))
"""


def test_a_feature_pipeline_gives_the_same_bytes_in_another_process(digits, tmp_path):
    """skops names objects after memory addresses, which differ between processes: the rewrite must hide them."""
    features, labels = digits
    np.save(tmp_path / "features.npy", features)
    np.save(tmp_path / "labels.npy", labels)
    save_model(tmp_path / "here.skops", feature_pipeline().fit(features, labels))
    args = [tmp_path / "features.npy", tmp_path / "labels.npy", tmp_path / "there.skops"]
    subprocess.run([sys.executable, "-c", SAVE_IN_A_NEW_PROCESS, *args], cwd=ROOT, check=True)
    assert (tmp_path / "there.skops").read_bytes() == (tmp_path / "here.skops").read_bytes()
    assert read_model(tmp_path / "there.skops").n_features_in_ == 784
