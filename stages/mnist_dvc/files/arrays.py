"""The image arrays between stages: .npy files checked on load, the dataset's description, features."""

from __future__ import annotations

from pathlib import Path
from tokenize import TokenError

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mnist_dvc.files.disk import atomic_path, read_json_model, record_input
from mnist_dvc.files.paths import SPLIT_DIR, display_path
from mnist_dvc.study.errors import UserError
from mnist_dvc.study.features import SIDE

# How numpy's reader fails on a damaged .npy file (found by fuzzing its header): a header its parser cannot read
# (SyntaxError, TokenError), one that does not describe an array (ValueError, or TypeError when its keys are of
# mixed types), or data cut short (EOFError, and ValueError when reshaping).
DAMAGED_NPY = (ValueError, TypeError, EOFError, OSError, SyntaxError, TokenError)


class DatasetInfo(BaseModel):
    """dataset.json beside the arrays: the dataset's name, class names, whether its images are handwriting (the
    registry says), and where a canonical test part starts."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str = Field(min_length=1)
    class_names: list[str] = Field(min_length=2, max_length=256)
    handwritten: bool
    test_start: int | None = Field(default=None, ge=1)


def save_array(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        np.save(out, array, allow_pickle=False)


def save_arrays(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    """Each array as `<folder>/<name>.npy`."""
    for name, array in arrays.items():
        save_array(folder / f"{name}.npy", array)


def load_array(path: Path, dtype: type, ndim: int) -> np.ndarray:
    """Load a .npy file written by a stage, checking it is what the pipeline expects."""
    record_input(path)
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError as error:
        raise UserError(f"{display_path(path)}: file not found (run the stage that writes it: `dvc repro`)") from error
    except DAMAGED_NPY as error:
        reason = f"{type(error).__name__}: {error}".splitlines()[0]
        shown = display_path(path)
        raise UserError(f"{shown}: not a valid .npy array file, corrupt or truncated ({reason})") from error
    if array.dtype != dtype or array.ndim != ndim:
        raise UserError(
            f"{display_path(path)}: expected a {ndim}-d {np.dtype(dtype).name} array, "
            f"got {array.ndim}-d {array.dtype.name}"
        )
    return array


def load_dataset_info(folder: Path) -> DatasetInfo:
    expected = (
        'expected {"name": "...", "class_names": [two or more names], "handwritten": true or false, '
        '"test_start": null or a whole number}'
    )
    return read_json_model(folder / "dataset.json", DatasetInfo, expected)


def load_class_names(folder: Path = SPLIT_DIR) -> list[str]:
    return load_dataset_info(folder).class_names


def load_images(path: Path) -> np.ndarray:
    """Images (n, 28, 28) uint8 from a .npy file a stage wrote."""
    images = load_array(path, np.uint8, 3)
    if images.shape[1:] != (SIDE, SIDE) or len(images) == 0:
        raise UserError(
            f"{display_path(path)}: expected images of {SIDE}x{SIDE} pixels, got an array of shape {images.shape}"
        )
    return images


def load_labelled_images(folder: Path, prefix: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 28, 28) uint8 and labels (n,) uint8 from `<prefix>images.npy` and `<prefix>labels.npy`."""
    images_path, labels_path = folder / f"{prefix}images.npy", folder / f"{prefix}labels.npy"
    images, labels = load_images(images_path), load_array(labels_path, np.uint8, 1)
    n_classes = len(load_class_names(folder))
    if len(images) != len(labels):
        raise UserError(
            f"{display_path(labels_path)}: {len(labels)} labels for the {len(images)} images of {images_path.name}"
        )
    if labels.max() >= n_classes:
        raise UserError(
            f"{display_path(labels_path)}: label {labels.max()} out of range for the {n_classes} classes of "
            "dataset.json"
        )
    return images, labels


def load_split(part: str) -> tuple[np.ndarray, np.ndarray]:
    """The 'train' or 'test' part written by the split stage."""
    return load_labelled_images(SPLIT_DIR, f"{part}_")


def load_split_images(part: str) -> np.ndarray:
    """The images alone of the 'train' or 'test' part: what a training stage reads of the test set."""
    return load_images(SPLIT_DIR / f"{part}_images.npy")


def to_features(images: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Flatten (n, 28, 28) uint8 images to (n, 784) pixels in [0, 1], float32 unless a task needs more."""
    return images.reshape(len(images), -1).astype(dtype) / dtype(255)


def first_n(n: int | None, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """The first n rows of each array (all rows when n is None): a subset knob for slow models."""
    return tuple(array[:n] for array in arrays)
