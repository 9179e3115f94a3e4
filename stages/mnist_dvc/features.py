"""Image features for the models: deskewing, HOG descriptors and shifted copies for training.

Every step takes what `arrays.to_features` gives, (n, 784) pixels of 28x28 images in [0, 1], and works on each image
alone, so a result never depends on the batch it came in or on the worker that computed it. The classes are
scikit-learn estimators saved with skops like any other (their names are in `models.TRUSTED_MODEL_TYPES`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from scipy import ndimage
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, clone
from sklearn.utils import Tags
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted, validate_data

from mnist_dvc.arrays import SIDE

PIXELS = SIDE * SIDE
CENTRE = (SIDE - 1) / 2  # pixel centres run from 0 to 27
# Images per task of the parallel loops: a fixed number, so the chunks are the same whatever the worker count; large
# enough that sending a chunk to a worker costs little beside computing it (a HOG takes ~0.5 ms an image).
CHUNK = 1000
# Fewer images than this are computed in the calling thread: starting worker processes (each imports scikit-learn)
# costs about what they save on a few thousand images (measured on 4,000 digits: 2.1 s serial, 3.0 s on two fresh
# processes, 1.8 s once they run).
PROCESS_MIN_IMAGES = 10_000


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
        # Serial, in chunks only to bound the memory of the moments: at ~0.06 ms an image, sending chunks to two
        # workers and their results back costs what it saves (10,000 digits: 0.60 s on one core, 0.62 s on two).
        return map_chunks(deskew_images, as_images(X), parallel=False)


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


def hog_images(images: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """(n, 28, 28) images to their HOG descriptors, (n, features) float32, computed in float64 one image at a time."""
    from skimage.feature import hog  # imported here: skimage is slow to import and only this step needs it

    return np.array([hog(image.astype(np.float64), **params) for image in images], dtype=np.float32)


def map_chunks(function: Callable[..., np.ndarray], images: np.ndarray, *args: Any, parallel: bool) -> np.ndarray:
    """`function` on chunks of CHUNK images, its results' rows concatenated in order; if `parallel` and there are
    PROCESS_MIN_IMAGES or more, in worker processes: `function` holds the GIL, so threads would take turns.

    No n_jobs here: the stage's `parallel_config` decides how many (none outside a stage, nor inside a thread that
    fits a model beside others). Each image is computed alone, so the result does not depend on the chunks or the
    workers, only the time does.
    """
    chunks = (images[start : start + CHUNK] for start in range(0, len(images), CHUNK))
    if not parallel or len(images) < PROCESS_MIN_IMAGES:
        return np.concatenate([function(chunk, *args) for chunk in chunks])
    return np.concatenate(Parallel(backend="loky")(delayed(function)(chunk, *args) for chunk in chunks))


class HogFeatures(PerImageTransformer):
    """Histograms of oriented gradients (skimage's `hog`, L2-Hys blocks), followed by the 784 pixels if `keep_pixels`.

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
        # In processes on many images: ~0.5 ms an image; 10,000 digits took 3.8-4.5 s on one core, 2.5-2.9 s on two.
        descriptors = map_chunks(hog_images, as_images(X), self.hog_params(), parallel=True)
        if not self.keep_pixels:
            return descriptors
        return np.hstack([descriptors, X.astype(np.float32)])

    def hog_params(self) -> dict[str, Any]:
        return {
            "orientations": self.orientations,
            "pixels_per_cell": (self.pixels_per_cell, self.pixels_per_cell),
            "cells_per_block": (self.cells_per_block, self.cells_per_block),
            "block_norm": "L2-Hys",
        }

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
    cannot be shifted). Not with `Deskew` inside `estimator`: it moves each copy's centre of mass back to the image
    centre, so a copy comes out identical to its original (unless the shift pushed ink off the border) and the
    model trains on five duplicates. Fitting holds five times the training images in memory.
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
