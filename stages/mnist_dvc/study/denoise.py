"""The chapter's multioutput example: images with noise added, and how far a cleaned image is from the original."""

from __future__ import annotations

import numpy as np

from mnist_dvc.study.features import SIDE

TRAIN_STREAM, TEST_STREAM = 0, 1  # one seed, two independent noise streams


def noisy_sums(images: np.ndarray, amplitude: int, seed: int, stream: int) -> np.ndarray:
    """(n, 784) pixels of the images plus noise, as in the chapter: an integer in [0, amplitude) per pixel, on the
    0..255 scale (so values run up to 255 + amplitude - 1)."""
    rng = np.random.default_rng([seed, stream])
    noise = rng.integers(0, amplitude, size=(len(images), SIDE * SIDE), dtype=np.int16)
    return images.reshape(len(images), -1).astype(np.int16) + noise


def as_features(sums: np.ndarray) -> np.ndarray:
    """Noisy pixels as the denoiser takes them: divided by 255 like every other feature, in float32."""
    return sums.astype(np.float32) / np.float32(255)


def noisy_pixels(images: np.ndarray, amplitude: int, seed: int, stream: int) -> np.ndarray:
    """`noisy_sums` as features."""
    return as_features(noisy_sums(images, amplitude, seed, stream))


def clean_targets(images: np.ndarray) -> np.ndarray:
    """What the model learns to output: the 784 original pixel values, 0..255, one class each."""
    return images.reshape(len(images), -1)


def mean_absolute_error(images: np.ndarray, pixels: np.ndarray) -> float:
    """Mean absolute difference from the original images, on the 0..255 scale, of (n, 784) pixels in 0..255."""
    return float(np.abs(pixels.astype(np.float64) - clean_targets(images).astype(np.float64)).mean())
