"""Image features for the models: deskewing, HOG descriptors and shifted copies for training.

Every step takes what `arrays.to_features` gives, a row of pixels per image ((n, 784) for 28x28 images, in [0, 1]),
reshaped to its `image_shape`, and works on each image alone, so a result never depends on the batch it came in or
on the worker that computed it. The classes are scikit-learn estimators that pass scikit-learn's own estimator checks
(`tests/test_estimator_checks.py`), saved with skops like any other (their names are in
`models.TRUSTED_MODEL_TYPES`).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from scipy import ndimage
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, clone
from sklearn.utils import Tags, get_tags
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, check_non_negative, validate_data

SIDE = 28  # the datasets' images are SIDE x SIDE pixels
ImageShape = tuple[int, int]
# The default `image_shape`: the datasets' images, 28x28 (`arrays.to_features` gives their 784 pixels a row).
MNIST_IMAGE_SHAPE: ImageShape = (SIDE, SIDE)
# Images per chunk of a step at most: bounds the memory of its intermediate arrays.
IMAGES_PER_CHUNK = 1000
# HOG's float64 intermediates per chunk (the votes, pixels x orientations, and the blocks, up to three copies of the
# larger): a chunk holds fewer images when HOG's params make them wide (measured: docs/design.md).
HOG_CHUNK_BYTES = 256 * 1024 * 1024
# The epsilon of skimage's L2-Hys block norm.
HOG_EPSILON = 1e-5


def is_whole_number(value: Any) -> bool:
    """An int of any kind (numpy's too), but not a bool: `True` as a side or a shift is a mistake."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def as_images(features: np.ndarray, shape: ImageShape) -> np.ndarray:
    """(n, height x width) pixels as (n, height, width) images, without a copy."""
    return features.reshape(len(features), *shape)


def resolve_image_shape(estimator: BaseEstimator, n_features: int) -> ImageShape:
    """The estimator's `image_shape` for rows of `n_features` pixels: a -1 inferred as numpy's reshape does, and the
    shape checked against the row."""
    name, shape = type(estimator).__name__, estimator.image_shape
    if (
        not isinstance(shape, tuple | list)
        or len(shape) != 2
        or not all(is_whole_number(side) and (side >= 1 or side == -1) for side in shape)
        or tuple(shape) == (-1, -1)
    ):
        raise ValueError(
            f"{name}: image_shape must be (height, width) in pixels, whole numbers >= 1, one of them may be -1 "
            f"(inferred from the number of features); got {shape!r}"
        )
    height, width = (int(side) for side in shape)
    if -1 in (height, width):
        known = max(height, width)
        if n_features % known:
            raise ValueError(f"{name}: {n_features} features do not make images of shape {shape!r}")
        inferred = n_features // known
        return (inferred, width) if height == -1 else (height, inferred)
    if height * width != n_features:
        raise ValueError(
            f"{name} with image_shape={shape!r} expects {height * width} features (the pixels of one image), "
            f"got {n_features}"
        )
    return height, width


def check_images(estimator: BaseEstimator, X: Any, reset: bool) -> tuple[np.ndarray, ImageShape]:
    """X as a float array of one image's pixels per row, and the images' (height, width)."""
    X = validate_data(estimator, X, dtype=[np.float32, np.float64], reset=reset)
    if get_tags(estimator).input_tags.positive_only:
        check_non_negative(X, type(estimator).__name__)
    return X, resolve_image_shape(estimator, X.shape[1])


class PerImageTransformer(TransformerMixin, BaseEstimator):
    """A step that learns nothing from the images it is fitted on: scikit-learn's `requires_fit` tag is false.

    Each image's output depends on that image alone, so a stage may compute the step once per image and reuse it in
    every fit (`train_multiclass` does, rather than once per cross-validation fold), and `transform` works unfitted.
    The output is float32 whatever the input (half the memory of float64, for features up to 112,896 wide).
    """

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags


class Deskew(PerImageTransformer):
    """Straighten each image by its moments: centre of mass to the image centre, and the shear that leans it undone.

    The classic deskewing of handwriting: a slanted '1' and an upright one become the same image, which helps
    every model after it on digits. On clothes (Fashion-MNIST) the lean carries meaning and it hurts:
    `enabled=False` passes the pixels through, so a params switch can turn it off without changing the pipeline.
    Pixels are amounts of ink, never negative: a moment of negative ink means nothing, and negative pixels are refused
    even with `enabled=False`, so turning the step off never lets through data it would refuse on.
    """

    def __init__(self, enabled: bool = True, image_shape: ImageShape = MNIST_IMAGE_SHAPE) -> None:
        self.enabled = enabled
        self.image_shape = image_shape

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True
        return tags

    def fit(self, X: Any, y: Any = None) -> Deskew:
        check_images(self, X, reset=True)
        return self

    def transform(self, X: Any) -> np.ndarray:
        X, shape = check_images(self, X, reset=False)
        if not self.enabled:
            return X.astype(np.float32)
        return map_chunks(deskew_images, as_images(X, shape))


def image_moments(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image: the centre of mass (n, 2) as (row, column), and the skew mu11 / mu02 (n,), in float64.

    Sums of elementwise products, not matrix products: a BLAS kernel's rounding would change the last bits from one
    CPU to another, and an interpolated pixel with them. A blank image has its centre at the image centre and no
    skew; so has an image whose ink lies on one row (mu02 = 0).
    """
    images = images.astype(np.float64)
    height, width = images.shape[1:]
    rows, cols = np.mgrid[:height, :width].astype(np.float64)
    total = images.sum(axis=(1, 2))
    blank = total == 0
    safe_total = np.where(blank, 1.0, total)
    centre_row = np.where(blank, (height - 1) / 2, (images * rows).sum(axis=(1, 2)) / safe_total)
    centre_col = np.where(blank, (width - 1) / 2, (images * cols).sum(axis=(1, 2)) / safe_total)
    d_row = rows - centre_row[:, None, None]
    d_col = cols - centre_col[:, None, None]
    mu11 = (d_row * d_col * images).sum(axis=(1, 2)) / safe_total
    mu02 = (d_row**2 * images).sum(axis=(1, 2)) / safe_total
    skew = np.divide(mu11, mu02, out=np.zeros_like(mu11), where=mu02 > 0)
    return np.column_stack([centre_row, centre_col]), skew


def deskew_images(images: np.ndarray) -> np.ndarray:
    """(n, height, width) images deskewed, (n, height x width) float32, by bilinear interpolation; pixels from outside
    the image are 0.

    An output pixel at `o` takes the input at `c + M (o - centre)`, with M = [[1, 0], [skew, 1]] in (row, column):
    the centre of mass `c` lands on the image centre, and each row moves sideways by `skew` times its height from
    the centre, which leaves no covariance between rows and columns (mu11 = 0).
    """
    centres, skews = image_moments(images)
    image_centre = (np.array(images.shape[1:], np.float64) - 1) / 2  # pixel centres run from 0 to side - 1
    out = np.empty((len(images), images[0].size), np.float32)
    for i, (image, centre, skew) in enumerate(zip(images.astype(np.float64), centres, skews, strict=True)):
        matrix = np.array([[1.0, 0.0], [skew, 1.0]])
        offset = centre - matrix @ image_centre
        out[i] = ndimage.affine_transform(image, matrix, offset=offset, order=1, mode="constant", cval=0.0).ravel()
    return out


def hog_images(images: np.ndarray, orientations: int, pixels_per_cell: int, cells_per_block: int) -> np.ndarray:
    """(n, height, width) images to their HOG descriptors, (n, features) float32: what `skimage.feature.hog` gives
    with L2-Hys blocks, to the bit (`tests/test_features.py` compares them), computed for all images at once.

    skimage's function spends most of its time in a Python loop over the blocks, an image at a time (measured:
    docs/design.md). So this follows its arithmetic step by step: the same
    gradients and orientation bins, each cell's votes summed in float32 in skimage's order and divided by the cell's
    size, then the same block sums.
    """
    n, height, width = images.shape
    images = images.astype(np.float64)
    g_row, g_col = np.zeros_like(images), np.zeros_like(images)
    g_row[:, 1:-1, :] = images[:, 2:, :] - images[:, :-2, :]
    g_col[:, :, 1:-1] = images[:, :, 2:] - images[:, :, :-2]
    cell_rows, cell_cols = height // pixels_per_cell, width // pixels_per_cell

    def by_cell(values: np.ndarray) -> np.ndarray:
        """(n, height, width) to (n, cell rows, cell columns, pixels of a cell in row-major order); the pixels past
        the last whole cell are left out, as skimage does."""
        values = values[:, : cell_rows * pixels_per_cell, : cell_cols * pixels_per_cell]
        values = values.reshape(n, cell_rows, pixels_per_cell, cell_cols, pixels_per_cell)
        return values.transpose(0, 1, 3, 2, 4).reshape(n, cell_rows, cell_cols, pixels_per_cell**2)

    magnitude = by_cell(np.hypot(g_col, g_row))
    orientation = by_cell(np.arctan2(g_row, g_col) * (180 / np.pi) % 180)
    edges = 180.0 / orientations * np.arange(orientations + 1)
    in_bin = (orientation[..., None] >= edges[:-1]) & (orientation[..., None] < edges[1:])
    votes = np.where(in_bin, magnitude[..., None], 0.0)  # (n, cells, cells, pixels, orientations)
    histogram = np.zeros((n, cell_rows, cell_cols, orientations), np.float32)
    for pixel in range(pixels_per_cell**2):  # a float32 total, each vote added in float64 as in skimage's C loop
        histogram = (histogram + votes[:, :, :, pixel]).astype(np.float32)
    histogram = (histogram / np.float32(pixels_per_cell**2)).astype(np.float64)

    block_rows, block_cols = cell_rows - cells_per_block + 1, cell_cols - cells_per_block + 1
    windows = np.lib.stride_tricks.sliding_window_view(histogram, (cells_per_block, cells_per_block), axis=(1, 2))
    blocks = windows.transpose(0, 1, 2, 4, 5, 3).reshape(n, block_rows, block_cols, cells_per_block**2 * orientations)
    blocks = blocks / np.sqrt(np.sum(blocks**2, axis=-1, keepdims=True) + HOG_EPSILON**2)
    blocks = np.minimum(blocks, 0.2)
    blocks = blocks / np.sqrt(np.sum(blocks**2, axis=-1, keepdims=True) + HOG_EPSILON**2)
    return blocks.reshape(n, -1).astype(np.float32)


def fill_rows(n_rows: int, parts: Iterable[np.ndarray]) -> np.ndarray:
    """The rows of `parts`, in order, written into one array of `n_rows` rows: never the result twice in memory, as
    concatenating the parts would."""
    parts = iter(parts)
    first = next(parts)
    result = np.empty((n_rows, *first.shape[1:]), first.dtype)
    result[: len(first)] = first
    start = len(first)
    for part in parts:
        result[start : start + len(part)] = part
        start += len(part)
    return result


def map_chunks(
    function: Callable[..., np.ndarray], images: np.ndarray, *args: Any, size: int = IMAGES_PER_CHUNK
) -> np.ndarray:
    """`function` on chunks of `size` images (at most IMAGES_PER_CHUNK), one after the other, its results' rows
    written in order into one array: the chunks bound the memory of the intermediate arrays.

    Each image is computed alone, so the result does not depend on the chunks (tested); a stage that wants the chunks
    on its workers maps the step's `transform` over them itself (`parallel.workers.map_rows`).
    """
    size = max(1, min(size, IMAGES_PER_CHUNK))
    return fill_rows(
        len(images), (function(images[start : start + size], *args) for start in range(0, len(images), size))
    )


class HogFeatures(PerImageTransformer):
    """Histograms of oriented gradients (skimage's `hog` with L2-Hys blocks, as `hog_images` computes it), followed by
    the image's pixels if `keep_pixels`.

    The descriptors say which way the strokes run in each small cell, whatever their thickness or brightness (each
    block is normalised, so pixels in [0, 1] or 0..255 give the same features). The defaults give 28x28 images 7x7
    cells of 4x4 pixels, 5x5 blocks of 3x3 cells, 9 orientations: 2,025 features, 2,809 with the pixels.
    """

    def __init__(
        self,
        orientations: int = 9,
        pixels_per_cell: int = 4,
        cells_per_block: int = 3,
        keep_pixels: bool = True,
        image_shape: ImageShape = MNIST_IMAGE_SHAPE,
    ) -> None:
        self.orientations = orientations
        self.pixels_per_cell = pixels_per_cell
        self.cells_per_block = cells_per_block
        self.keep_pixels = keep_pixels
        self.image_shape = image_shape

    def fit(self, X: Any, y: Any = None) -> HogFeatures:
        self.check_blocks_fit(check_images(self, X, reset=True)[1])
        return self

    def transform(self, X: Any) -> np.ndarray:
        X, shape = check_images(self, X, reset=False)
        self.check_blocks_fit(shape)
        params = self.orientations, self.pixels_per_cell, self.cells_per_block
        descriptors = map_chunks(hog_images, as_images(X, shape), *params, size=self.images_per_chunk(shape))
        if not self.keep_pixels:
            return descriptors
        return np.hstack([descriptors, X.astype(np.float32)])

    def check_blocks_fit(self, shape: ImageShape) -> None:
        """Refuse params that are not whole numbers >= 1, or whose block is larger than the image."""
        for name in ("orientations", "pixels_per_cell", "cells_per_block"):
            value = getattr(self, name)
            if not is_whole_number(value) or value < 1:
                raise ValueError(f"HogFeatures: {name} must be a whole number >= 1, got {value!r}")
        block = self.pixels_per_cell * self.cells_per_block
        if block > min(shape):
            raise ValueError(
                f"HogFeatures: a block of {self.cells_per_block}x{self.cells_per_block} cells of "
                f"{self.pixels_per_cell}x{self.pixels_per_cell} pixels is {block} pixels wide, larger than the "
                f"{shape[0]}x{shape[1]} images; make pixels_per_cell or cells_per_block smaller"
            )

    def images_per_chunk(self, shape: ImageShape) -> int:
        """As many images as keep HOG's intermediates within HOG_CHUNK_BYTES (`map_chunks` takes IMAGES_PER_CHUNK at
        most)."""
        widest = max(shape[0] * shape[1] * self.orientations, self.n_hog_features(shape))
        return HOG_CHUNK_BYTES // (3 * 8 * widest)

    def n_hog_features(self, shape: ImageShape) -> int:
        """How many descriptors `hog` gives per image of `shape` with these params (without the pixels)."""
        block_rows, block_cols = (side // self.pixels_per_cell - self.cells_per_block + 1 for side in shape)
        return block_rows * block_cols * self.cells_per_block**2 * self.orientations


def shifted_copies(X: np.ndarray, y: np.ndarray, shift: int, shape: ImageShape) -> tuple[np.ndarray, np.ndarray]:
    """The images of `shape`, then copies moved `shift` pixels up, down, left and right: (5n, pixels) rows and their
    labels ((3n, pixels) for images with one side not longer than `shift`).

    Zeros fill the border a copy leaves; each copy keeps its image's label (`y` repeated, in order). Only along a
    side longer than `shift`: images one pixel high (a strip) get copies moved left and right only, as a copy moved
    off the image would be blank.
    """
    height, width = shape
    if max(shape) == 1:
        raise ValueError("shift: images of one pixel cannot be shifted")
    if not is_whole_number(shift) or not 1 <= shift < max(shape):
        raise ValueError(f"shift must be a whole number of pixels from 1 to {max(shape) - 1}, got {shift!r}")
    images = as_images(X, shape)
    copies = [images]
    if shift < height:
        up, down = np.zeros_like(images), np.zeros_like(images)
        up[:, :-shift] = images[:, shift:]
        down[:, shift:] = images[:, :-shift]
        copies += [up, down]
    if shift < width:
        left, right = np.zeros_like(images), np.zeros_like(images)
        left[:, :, :-shift] = images[:, :, shift:]
        right[:, :, shift:] = images[:, :, :-shift]
        copies += [left, right]
    return np.concatenate(copies).reshape(-1, height * width), np.concatenate([y] * len(copies))


def fitted_or_given_has(method: str) -> Callable[[ShiftAugmented], bool]:
    """For `available_if`: offer `method` only if the wrapped estimator has it (an SVC has no predict_proba)."""

    def check(wrapper: ShiftAugmented) -> bool:
        return hasattr(getattr(wrapper, "estimator_", wrapper.estimator), method)

    return check


class ShiftAugmented(ClassifierMixin, BaseEstimator):
    """Train a clone of `estimator` on the images plus copies shifted by `shift` pixels up, down, left and right
    (along the sides longer than `shift` only: see `shifted_copies`).

    A model that has seen a digit one pixel off learns that position does not matter (the book's exercise). The
    copies are made in `fit` only, so in `cross_val_predict` or a `Pipeline` each training fold is augmented and
    the images scored are not. `X` must be the pixels: wrap the feature steps, never follow them (HOG features
    cannot be shifted). After `Deskew`, not inside: deskewing moves each copy's centre of mass back to the image
    centre, so a copy would come out identical to its original (unless the shift pushed ink off the border).
    Fitting holds five times the training images in memory.
    """

    def __init__(self, estimator: BaseEstimator, shift: int = 1, image_shape: ImageShape = MNIST_IMAGE_SHAPE) -> None:
        self.estimator = estimator
        self.shift = shift
        self.image_shape = image_shape

    def fit(self, X: Any, y: Any) -> ShiftAugmented:
        # Two pixels at least: an image of one pixel has nowhere to move (scikit-learn's message names the count).
        X, y = validate_data(self, X, y, dtype=[np.float32, np.float64], ensure_min_features=2, reset=True)
        check_classification_targets(y)
        shape = resolve_image_shape(self, X.shape[1])
        self.estimator_ = clone(self.estimator).fit(*shifted_copies(X, y, self.shift, shape))
        self.classes_ = self.estimator_.classes_
        return self

    def _checked(self, X: Any) -> np.ndarray:
        """X checked as `fit` checked it: the number of features it was fitted on, the same dtypes."""
        check_is_fitted(self)
        return validate_data(self, X, dtype=[np.float32, np.float64], reset=False)

    def predict(self, X: Any) -> np.ndarray:
        X = self._checked(X)
        return self.estimator_.predict(X)

    @available_if(fitted_or_given_has("predict_proba"))
    def predict_proba(self, X: Any) -> np.ndarray:
        X = self._checked(X)
        return self.estimator_.predict_proba(X)

    @available_if(fitted_or_given_has("decision_function"))
    def decision_function(self, X: Any) -> np.ndarray:
        X = self._checked(X)
        return self.estimator_.decision_function(X)
