"""Image features for the models: deskewing, HOG descriptors and shifted copies for training.

Every step takes what `arrays.to_features` gives, (n, 784) pixels of 28x28 images in [0, 1], and works on each image
alone, so a result never depends on the batch it came in or on the worker that computed it. The classes are
scikit-learn estimators saved with skops like any other (their names are in `models.TRUSTED_MODEL_TYPES`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import ndimage
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, clone
from sklearn.utils import Tags
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted, validate_data

from mnist_dvc.arrays import SIDE
from mnist_dvc.workers import map_in_order

PIXELS = SIDE * SIDE
CENTRE = (SIDE - 1) / 2  # pixel centres run from 0 to 27
# Images per chunk of a step at most: bounds the memory of its intermediate arrays.
IMAGES_PER_CHUNK = 1000
# HOG's float64 intermediates per chunk (the votes, pixels x orientations, and the blocks, up to three copies of the
# larger): a chunk holds fewer images when HOG's params make them wide. Measured with tracemalloc: ~120 MB for 1,000
# images with the defaults, ~250 MB beside the result with the widest params allowed.
HOG_CHUNK_BYTES = 256 * 1024 * 1024
# The epsilon of skimage's L2-Hys block norm.
HOG_EPSILON = 1e-5


def as_images(features: np.ndarray) -> np.ndarray:
    """(n, 784) pixels as (n, 28, 28) images, without a copy."""
    return features.reshape(len(features), SIDE, SIDE)


def check_pixels(estimator: BaseEstimator, X: Any, reset: bool) -> np.ndarray:
    """X as a float array of 784 pixels per row: the steps here reshape each row to a 28x28 image."""
    X = validate_data(estimator, X, dtype=[np.float32, np.float64], reset=reset)
    if X.shape[1] != PIXELS:
        raise ValueError(f"{type(estimator).__name__} expects {PIXELS} pixels (28x28 images), got {X.shape[1]}")
    return X


class PerImageTransformer(TransformerMixin, BaseEstimator):
    """A step that learns nothing from the images it is fitted on: scikit-learn's `requires_fit` tag is false.

    Each image's output depends on that image alone, so a stage may compute the step once per image and reuse it in
    every fit (`train_multiclass` does, rather than once per cross-validation fold).
    """

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        return tags


class Deskew(PerImageTransformer):
    """Straighten each image by its moments: centre of mass to the image centre, and the shear that leans it undone.

    The classic deskewing of handwriting: a slanted '1' and an upright one become the same image, which helps
    every model after it on digits. On clothes (Fashion-MNIST) the lean carries meaning and it hurts:
    `enabled=False` passes the pixels through, so a params switch can turn it off without changing the pipeline.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def fit(self, X: Any, y: Any = None) -> Deskew:
        check_pixels(self, X, reset=True)
        return self

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = check_pixels(self, X, reset=False)
        if not self.enabled:
            return X.astype(np.float32)
        return map_chunks(deskew_images, as_images(X))


def image_moments(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image: the centre of mass (n, 2) as (row, column), and the skew mu11 / mu02 (n,), in float64.

    Sums of elementwise products, not matrix products: a BLAS kernel's rounding would change the last bits from one
    CPU to another, and an interpolated pixel with them. A blank image has its centre at the image centre and no
    skew; so has an image whose ink lies on one row (mu02 = 0).
    """
    images = images.astype(np.float64)
    rows, cols = np.mgrid[:SIDE, :SIDE].astype(np.float64)
    total = images.sum(axis=(1, 2))
    blank = total == 0
    safe_total = np.where(blank, 1.0, total)
    centre_row = np.where(blank, CENTRE, (images * rows).sum(axis=(1, 2)) / safe_total)
    centre_col = np.where(blank, CENTRE, (images * cols).sum(axis=(1, 2)) / safe_total)
    d_row = rows - centre_row[:, None, None]
    d_col = cols - centre_col[:, None, None]
    mu11 = (d_row * d_col * images).sum(axis=(1, 2)) / safe_total
    mu02 = (d_row**2 * images).sum(axis=(1, 2)) / safe_total
    skew = np.divide(mu11, mu02, out=np.zeros_like(mu11), where=mu02 > 0)
    return np.column_stack([centre_row, centre_col]), skew


def deskew_images(images: np.ndarray) -> np.ndarray:
    """(n, 28, 28) images deskewed, (n, 784) float32, by bilinear interpolation; pixels from outside the image are 0.

    An output pixel at `o` takes the input at `c + M (o - centre)`, with M = [[1, 0], [skew, 1]] in (row, column):
    the centre of mass `c` lands on the image centre, and each row moves sideways by `skew` times its height from
    the centre, which leaves no covariance between rows and columns (mu11 = 0).
    """
    centres, skews = image_moments(images)
    out = np.empty((len(images), PIXELS), np.float32)
    for i, (image, centre, skew) in enumerate(zip(images.astype(np.float64), centres, skews, strict=True)):
        matrix = np.array([[1.0, 0.0], [skew, 1.0]])
        offset = centre - matrix @ np.array([CENTRE, CENTRE])
        out[i] = ndimage.affine_transform(image, matrix, offset=offset, order=1, mode="constant", cval=0.0).ravel()
    return out


def hog_images(images: np.ndarray, orientations: int, pixels_per_cell: int, cells_per_block: int) -> np.ndarray:
    """(n, 28, 28) images to their HOG descriptors, (n, features) float32: what `skimage.feature.hog` gives with
    L2-Hys blocks, to the bit (`tests/test_features.py` compares them), computed for all images at once.

    skimage's function takes ~0.5 ms an image, four fifths of it in a Python loop over the blocks: 2.1 s for the
    sample's 4,000 training digits, 0.6 s here (measured). So this follows its arithmetic step by step: the same
    gradients and orientation bins, each cell's votes summed in float32 in skimage's order and divided by the cell's
    size, then the same block sums.
    """
    n = len(images)
    images = images.astype(np.float64)
    g_row, g_col = np.zeros_like(images), np.zeros_like(images)
    g_row[:, 1:-1, :] = images[:, 2:, :] - images[:, :-2, :]
    g_col[:, :, 1:-1] = images[:, :, 2:] - images[:, :, :-2]
    cells = SIDE // pixels_per_cell
    inside = cells * pixels_per_cell

    def by_cell(values: np.ndarray) -> np.ndarray:
        """(n, 28, 28) to (n, cells, cells, pixels of a cell in row-major order)."""
        values = values[:, :inside, :inside].reshape(n, cells, pixels_per_cell, cells, pixels_per_cell)
        return values.transpose(0, 1, 3, 2, 4).reshape(n, cells, cells, pixels_per_cell**2)

    magnitude = by_cell(np.hypot(g_col, g_row))
    orientation = by_cell(np.arctan2(g_row, g_col) * (180 / np.pi) % 180)
    edges = 180.0 / orientations * np.arange(orientations + 1)
    in_bin = (orientation[..., None] >= edges[:-1]) & (orientation[..., None] < edges[1:])
    votes = np.where(in_bin, magnitude[..., None], 0.0)  # (n, cells, cells, pixels, orientations)
    histogram = np.zeros((n, cells, cells, orientations), np.float32)
    for pixel in range(pixels_per_cell**2):  # a float32 total, each vote added in float64 as in skimage's C loop
        histogram = (histogram + votes[:, :, :, pixel]).astype(np.float32)
    histogram = (histogram / np.float32(pixels_per_cell**2)).astype(np.float64)

    side = cells - cells_per_block + 1
    windows = np.lib.stride_tricks.sliding_window_view(histogram, (cells_per_block, cells_per_block), axis=(1, 2))
    blocks = windows.transpose(0, 1, 2, 4, 5, 3).reshape(n, side, side, cells_per_block**2 * orientations)
    blocks = blocks / np.sqrt(np.sum(blocks**2, axis=-1, keepdims=True) + HOG_EPSILON**2)
    blocks = np.minimum(blocks, 0.2)
    blocks = blocks / np.sqrt(np.sum(blocks**2, axis=-1, keepdims=True) + HOG_EPSILON**2)
    return blocks.reshape(n, -1).astype(np.float32)


def map_chunks(
    function: Callable[..., np.ndarray], images: np.ndarray, *args: Any, size: int = IMAGES_PER_CHUNK
) -> np.ndarray:
    """`function` on chunks of `size` images (at most IMAGES_PER_CHUNK) on the stage's workers, its results' rows
    written in order into one array.

    Each image is computed alone, so the result does not depend on the chunks or the workers (tested), only the memory
    does: a few chunks' intermediates and the result, never the result twice as concatenating the chunks' results
    would. Inside a job (a model's predict on a worker) the chunks run one after the other.
    """
    size = max(1, min(size, IMAGES_PER_CHUNK))
    starts = range(0, len(images), size)
    results = map_in_order(function, [(images[start : start + size], *args) for start in starts])
    first = next(results)
    result = np.empty((len(images), *first.shape[1:]), first.dtype)
    result[: len(first)] = first
    for start, part in zip(starts[1:], results, strict=True):
        result[start : start + len(part)] = part
    return result


class HogFeatures(PerImageTransformer):
    """Histograms of oriented gradients (skimage's `hog` with L2-Hys blocks, as `hog_images` computes it), followed by
    the 784 pixels if `keep_pixels`.

    The descriptors say which way the strokes run in each small cell, whatever their thickness or brightness (each
    block is normalised, so pixels in [0, 1] or 0..255 give the same features). The defaults give 7x7 cells of 4x4
    pixels, 5x5 blocks of 3x3 cells, 9 orientations: 2,025 features, 2,809 with the pixels.
    """

    def __init__(
        self, orientations: int = 9, pixels_per_cell: int = 4, cells_per_block: int = 3, keep_pixels: bool = True
    ) -> None:
        self.orientations = orientations
        self.pixels_per_cell = pixels_per_cell
        self.cells_per_block = cells_per_block
        self.keep_pixels = keep_pixels

    def fit(self, X: Any, y: Any = None) -> HogFeatures:
        check_pixels(self, X, reset=True)
        return self

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = check_pixels(self, X, reset=False)
        params = self.orientations, self.pixels_per_cell, self.cells_per_block
        descriptors = map_chunks(hog_images, as_images(X), *params, size=self.images_per_chunk())
        if not self.keep_pixels:
            return descriptors
        return np.hstack([descriptors, X.astype(np.float32)])

    def images_per_chunk(self) -> int:
        """As many images as keep HOG's intermediates within HOG_CHUNK_BYTES (`map_chunks` takes IMAGES_PER_CHUNK at
        most)."""
        widest = max(PIXELS * self.orientations, self.n_hog_features())
        return HOG_CHUNK_BYTES // (3 * 8 * widest)

    def n_hog_features(self) -> int:
        """How many descriptors `hog` gives per 28x28 image with these params (without the pixels)."""
        blocks = SIDE // self.pixels_per_cell - self.cells_per_block + 1
        return blocks * blocks * self.cells_per_block**2 * self.orientations


def shifted_copies(X: np.ndarray, y: np.ndarray, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """The images, then copies moved `shift` pixels up, down, left and right: (5n, 784) rows and their labels.

    Zeros fill the border a copy leaves; each copy keeps its image's label (`y` repeated five times, in order).
    """
    if not 1 <= shift < SIDE:
        raise ValueError(f"shift must be a whole number of pixels from 1 to {SIDE - 1}, got {shift!r}")
    images = as_images(X)
    up, down, left, right = (np.zeros_like(images) for _ in range(4))
    up[:, :-shift] = images[:, shift:]
    down[:, shift:] = images[:, :-shift]
    left[:, :, :-shift] = images[:, :, shift:]
    right[:, :, shift:] = images[:, :, :-shift]
    copies = np.concatenate([images, up, down, left, right]).reshape(5 * len(X), PIXELS)
    return copies, np.concatenate([y] * 5)


def fitted_or_given_has(method: str) -> Callable[[ShiftAugmented], bool]:
    """For `available_if`: offer `method` only if the wrapped estimator has it (an SVC has no predict_proba)."""

    def check(wrapper: ShiftAugmented) -> bool:
        return hasattr(getattr(wrapper, "estimator_", wrapper.estimator), method)

    return check


class ShiftAugmented(ClassifierMixin, BaseEstimator):
    """Train a clone of `estimator` on the images plus copies shifted by `shift` pixels up, down, left and right.

    A model that has seen a digit one pixel off learns that position does not matter (the book's exercise). The
    copies are made in `fit` only, so in `cross_val_predict` or a `Pipeline` each training fold is augmented and
    the images scored are not. `X` must be the 784 pixels: wrap the feature steps, never follow them (HOG features
    cannot be shifted). After `Deskew`, not inside: deskewing moves each copy's centre of mass back to the image
    centre, so a copy would come out identical to its original (unless the shift pushed ink off the border).
    Fitting holds five times the training images in memory.
    """

    def __init__(self, estimator: BaseEstimator, shift: int = 1) -> None:
        self.estimator = estimator
        self.shift = shift

    def fit(self, X: Any, y: Any) -> ShiftAugmented:
        X, y = validate_data(self, X, y, dtype=[np.float32, np.float64], reset=True)
        if X.shape[1] != PIXELS:
            raise ValueError(f"ShiftAugmented expects {PIXELS} pixels (28x28 images), got {X.shape[1]}")
        self.estimator_ = clone(self.estimator).fit(*shifted_copies(X, y, self.shift))
        self.classes_ = self.estimator_.classes_
        return self

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        return self.estimator_.predict(X)

    @available_if(fitted_or_given_has("predict_proba"))
    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        return self.estimator_.predict_proba(X)

    @available_if(fitted_or_given_has("decision_function"))
    def decision_function(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        return self.estimator_.decision_function(X)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        check_is_fitted(self)
        return self.estimator_.score(X, y, sample_weight=sample_weight)
