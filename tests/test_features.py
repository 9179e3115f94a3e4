"""The feature steps: what they compute, always the same bytes, and model files that load and save like any other."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
import warnings

import numpy as np
import pytest
from joblib import parallel_config
from scipy import ndimage
from skimage.feature import hog
from sklearn.decomposition import PCA
from sklearn.model_selection import StratifiedKFold, cross_val_predict, cross_validate
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC

from conftest import ROOT
from mnist_dvc.files.arrays import to_features
from mnist_dvc.files.models import load_model, read_model, save_model
from mnist_dvc.parallel.workers import map_rows
from mnist_dvc.study.features import Deskew, HogFeatures, ShiftAugmented, hog_images, shifted_copies

CENTRE = 13.5


@pytest.fixture(scope="module")
def digits(sample) -> tuple[np.ndarray, np.ndarray]:
    """200 real digits as the models see them: (200, 784) float32 in [0, 1], and their labels."""
    images, labels = sample
    return to_features(images[:200]), labels[:200]


def moments(image: np.ndarray) -> tuple[float, float, float]:
    """Centre of mass (row, column) and the skew mu11 / mu02 of one image, computed here independently."""
    rows, cols = np.indices(image.shape)
    total = image.sum()
    row, col = (rows * image).sum() / total, (cols * image).sum() / total
    mu11 = ((rows - row) * (cols - col) * image).sum() / total
    mu02 = ((rows - row) ** 2 * image).sum() / total
    return row, col, mu11 / mu02


def sheared_bar(skew: float, shape: tuple[int, int] = (28, 28)) -> np.ndarray:
    """An upright bar of ink in an image of `shape`, leaning by `skew` columns per row (mu11 / mu02 = skew), and
    moved off the centre."""
    height, width = shape
    bar = np.zeros(shape)
    bar[height * 5 // 28 : height * 23 // 28, width * 12 // 28 : width * 16 // 28] = 1.0
    matrix = np.array([[1.0, 0.0], [-skew, 1.0]])  # output (r, c) samples the bar at (r, c - skew * r) + offset
    offset = np.array([1.0, skew * (height - 1) / 2 - 2.0])  # and off the centre: 1 row up, 2 columns right
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
    assert HogFeatures(**params).n_hog_features((28, 28)) == n_hog
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
            patch.setattr("mnist_dvc.study.features.IMAGES_PER_CHUNK", 64)  # four chunks, the last one short
            assert step.transform(features).tobytes() == whole
        assert np.vstack([step.transform(features[:1]), step.transform(features[1:])]).tobytes() == whole


def test_chunks_on_the_stages_workers_give_the_same_bytes(digits):
    """`train_multiclass` maps the per-image steps over chunks on its workers: the bytes are those of one call."""
    features, _ = digits
    step = HogFeatures().fit(features[:1])
    with pytest.MonkeyPatch.context() as patch, parallel_config(backend="threading", n_jobs=2):
        patch.setattr("mnist_dvc.parallel.workers.IMAGES_PER_CHUNK", 64)
        assert map_rows(step.transform, features).tobytes() == step.transform(features).tobytes()


def test_wide_hog_params_take_smaller_chunks_not_more_memory():
    """The widest params allowed: 112,896 descriptors an image. Chunks shrink so that HOG's intermediates stay near
    256 MB beside the result, which is written in place (concatenating chunks would hold it twice)."""
    wide = HogFeatures(orientations=36, pixels_per_cell=2, cells_per_block=7, keep_pixels=False)
    assert HogFeatures().images_per_chunk((28, 28)) >= 1000 and wide.images_per_chunk((28, 28)) < 100
    images = np.random.default_rng(0).random((250, 784)).astype(np.float32)
    wide.fit(images[:1])
    tracemalloc.start()
    try:
        descriptors = wide.transform(images)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert descriptors.shape == (250, wide.n_hog_features((28, 28)))
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


@pytest.mark.parametrize("shape", [(16, 16), (32, 32), (20, 24), (13, 30)])
def test_hog_of_images_of_other_shapes_is_skimages(digits, shape):
    """Digits resized to other shapes, square or not, with leftover pixels past the last cell (13 and 30 rows)."""
    features, _ = digits
    images = ndimage.zoom(features[:40].reshape(-1, 28, 28), (1, shape[0] / 28, shape[1] / 28), order=1)
    assert images.shape[1:] == shape
    hog_step = HogFeatures(image_shape=shape, keep_pixels=False)
    descriptors = hog_step.fit_transform(images.reshape(len(images), -1))
    assert descriptors.tobytes() == skimage_hog(images, 9, 4, 3).tobytes()
    assert descriptors.shape[1] == hog_step.n_hog_features(shape)


@pytest.mark.parametrize("degrees", [25.714284896850586, 25.7142857142857])
def test_hog_bins_an_angle_next_to_a_bin_edge_as_skimage_does(degrees):
    """skimage's bin edges are float64 (180 / 7 = 25.7142857142857...); rounded to float32 the first one moves down
    to 25.7142849. Both angles lie between the two, so skimage puts them in bin 0, float32 edges in bin 1."""
    angle = np.deg2rad(degrees)
    image = np.zeros((1, 28, 28))
    image[0, 11, 10], image[0, 10, 11] = 10 * np.sin(angle), 10 * np.cos(angle)  # the gradient at (10, 10)
    assert hog_images(image, 7, 4, 2).tobytes() == skimage_hog(image, 7, 4, 2).tobytes()


@pytest.mark.parametrize("shape", [(28, 28), (16, 16), (32, 32), (20, 32), (32, 20)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_a_sheared_image_comes_back_upright_and_centred(shape):
    image, centre = sheared_bar(0.4, shape), (np.array(shape) - 1) / 2
    row, col, skew = moments(image)
    # what is to be undone: the lean, and a centre more than half a pixel off (the deskewed one is within 0.02)
    assert skew == pytest.approx(0.4, abs=0.01) and abs(col - centre[1]) > 0.5
    deskew = Deskew() if shape == (28, 28) else Deskew(image_shape=shape)
    straight = deskew.fit_transform(image.reshape(1, -1)).reshape(shape)
    row, col, skew = moments(straight)
    assert abs(skew) < 0.01
    assert row == pytest.approx(centre[0], abs=0.02) and col == pytest.approx(centre[1], abs=0.02)
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
    copies, copy_labels = shifted_copies(features, labels, 1, (28, 28))
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
    copies, _ = shifted_copies(features[:3], labels[:3], 3, (28, 28))
    right = copies[12:].reshape(3, 28, 28)
    np.testing.assert_array_equal(right[:, :, 3:], features[:3].reshape(3, 28, 28)[:, :, :-3])
    assert not right[:, :, :3].any()
    for shift in (0, 28):
        with pytest.raises(ValueError, match="shift must be"):
            shifted_copies(features, labels, shift, (28, 28))


def test_deskewing_a_shifted_copy_gives_its_original_back(digits):
    """Why `ShiftAugmented` must not wrap a `Deskew`: the copies would be duplicates."""
    features, labels = digits
    border = np.ones((28, 28), bool)
    border[2:-2, 2:-2] = False
    inside = ~features.reshape(-1, 28, 28)[:, border].any(axis=1)  # no ink near the border: a shift loses none
    assert inside.sum() > 100
    copies, _ = shifted_copies(features[inside], labels[inside], 1, (28, 28))
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
sys.path[:0] = ["stages", "tests", "tools"]
from pathlib import Path
import numpy as np
from mnist_dvc.files.models import save_model
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


@pytest.mark.parametrize("side", [16, 32])
def test_a_model_of_feature_steps_learns_digits_of_another_size(digits, side):
    """The whole svc_hog model on digits resized to 16x16 or 32x32: every step told the shape, nothing else."""
    features, labels = digits
    images = ndimage.zoom(features.reshape(-1, 28, 28), (1, side / 28, side / 28), order=1).clip(0, 1)
    rows = images.reshape(len(images), side * side)
    shape = (side, side)
    model = Pipeline(
        [
            ("deskew", Deskew(image_shape=shape)),
            (
                "shifted",
                ShiftAugmented(
                    Pipeline([("hog", HogFeatures(image_shape=shape)), ("svc", SVC(C=10))]), image_shape=shape
                ),
            ),
        ]
    )
    predicted = model.fit(rows[:150], labels[:150]).predict(rows[150:])
    assert model["shifted"].estimator_["svc"].n_features_in_ == HogFeatures().n_hog_features(shape) + side * side
    assert (predicted == labels[150:]).mean() > 0.7  # chance is 0.1


def test_shifted_copies_of_other_shapes_and_of_strips():
    images = np.arange(2 * 16 * 20, dtype=np.float32).reshape(2, 16, 20) + 1
    copies, labels = shifted_copies(images.reshape(2, -1), np.array([3, 7]), 2, (16, 20))
    original, up, down, left, right = copies.reshape(5, 2, 16, 20)
    np.testing.assert_array_equal(labels, [3, 7] * 5)
    np.testing.assert_array_equal(original, images)
    np.testing.assert_array_equal(up[:, :-2], images[:, 2:])
    np.testing.assert_array_equal(right[:, :, 2:], images[:, :, :-2])
    assert not down[:, :2].any() and not left[:, :, -2:].any()
    strip = np.array([[1.0, 2.0, 3.0]])
    copies, labels = shifted_copies(strip, np.array([4]), 1, (1, 3))  # one row high: moved sideways only
    np.testing.assert_array_equal(copies, [[1, 2, 3], [2, 3, 0], [0, 1, 2]])
    np.testing.assert_array_equal(labels, [4, 4, 4])
    with pytest.raises(ValueError, match="images of one pixel cannot be shifted"):
        shifted_copies(strip[:, :1], np.array([4]), 1, (1, 1))
    with pytest.raises(ValueError, match="shift must be a whole number of pixels from 1 to 2, got 3"):
        shifted_copies(strip, np.array([4]), 3, (1, 3))
    with pytest.raises(ValueError, match="shift must be a whole number of pixels from 1 to 2, got True"):
        shifted_copies(strip, np.array([4]), True, (1, 3))


@pytest.mark.parametrize(
    ("step", "n_features", "message"),
    [
        (
            Deskew(),
            256,
            r"Deskew with image_shape=\(28, 28\) expects 784 features \(the pixels of one image\), got 256",
        ),
        (HogFeatures(image_shape=(16, 16)), 784, r"image_shape=\(16, 16\) expects 256 features"),
        (ShiftAugmented(SVC()), 1024, r"ShiftAugmented with image_shape=\(28, 28\) expects 784 features"),
        (Deskew(image_shape=(-1, 30)), 784, r"Deskew: 784 features do not make images of shape \(-1, 30\)"),
        (Deskew(image_shape=(0, 28)), 784, r"image_shape must be \(height, width\) in pixels, whole numbers >= 1"),
        (Deskew(image_shape=(-1, -1)), 784, r"one of them may be -1 .*; got \(-1, -1\)"),
        (HogFeatures(image_shape="28x28"), 784, r"HogFeatures: image_shape must be .*; got '28x28'"),
        (HogFeatures(image_shape=(28, 28, 1)), 784, r"image_shape must be \(height, width\)"),
        (
            HogFeatures(image_shape=(8, 8)),
            64,
            r"a block of 3x3 cells of 4x4 pixels is 12 pixels wide, larger than the 8x8",
        ),
        (HogFeatures(pixels_per_cell=0), 784, r"HogFeatures: pixels_per_cell must be a whole number >= 1, got 0"),
        (HogFeatures(orientations=True), 784, r"HogFeatures: orientations must be a whole number >= 1, got True"),
        (Deskew(image_shape=(True, -1)), 784, r"Deskew: image_shape must be .*; got \(True, -1\)"),
        (
            ShiftAugmented(KNeighborsClassifier(), image_shape=(1, 1)),
            1,
            r"Found array with 1 feature\(s\) \(shape=\(4, 1\)\) while a minimum of 2 is required by ShiftAugmented",
        ),
    ],
)
def test_a_shape_that_does_not_fit_the_rows_is_refused_with_what_fits(step, n_features, message):
    rows, labels = np.zeros((4, n_features)), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match=message):
        step.fit(rows, labels)


def test_negative_ink_and_targets_that_are_not_classes_are_refused(digits):
    features, labels = digits
    with pytest.raises(ValueError, match="Negative values in data passed to Deskew"):
        Deskew().fit(features - 0.5)
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        ShiftAugmented(KNeighborsClassifier()).fit(features[:20], labels[:20] + 0.5)
    one_class = ShiftAugmented(KNeighborsClassifier()).fit(features[:20], np.full(20, 5))
    np.testing.assert_array_equal(one_class.predict(features[20:30]), np.full(10, 5))


def test_the_steps_transform_without_fit_and_check_rows_against_fit_after_it(digits):
    """They learn nothing (scikit-learn's requires_fit tag is false), yet once fitted they hold to the fitted width."""
    features, _ = digits
    assert Deskew().transform(features).tobytes() == Deskew().fit(features).transform(features).tobytes()
    fitted = HogFeatures(image_shape=(1, -1), pixels_per_cell=1, cells_per_block=1).fit(features)
    with pytest.raises(ValueError, match="X has 783 features, but HogFeatures is expecting 784 features"):
        fitted.transform(features[:, 1:])
    with pytest.raises(ValueError, match="X has 783 features, but ShiftAugmented is expecting 784 features"):
        ShiftAugmented(KNeighborsClassifier()).fit(features, np.arange(200) % 2).predict(features[:, 1:])
