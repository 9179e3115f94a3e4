"""Stage `split`: train/test split of data/raw/ into data/split/, and the class counts of each part."""

from __future__ import annotations

import mnist_dvc.runtime.numeric_profile  # noqa: F401  (first: it sets how numpy and scipy compute before they load)

import numpy as np
from sklearn.model_selection import train_test_split

from mnist_dvc.files.arrays import load_dataset_info, load_labelled_images, save_array
from mnist_dvc.files.disk import write_json
from mnist_dvc.files.paths import DATA_OVERVIEW_FILE, RAW_DIR, SPLIT_DIR, display_path
from mnist_dvc.runtime.messages import log
from mnist_dvc.runtime.params import check_stratified_split, load_params
from mnist_dvc.runtime.runner import run_stage
from mnist_dvc.study.errors import UserError
from mnist_dvc.study.schema import SplitParams


def split_dataset(
    images: np.ndarray, labels: np.ndarray, test_start: int | None, params: SplitParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Keep a canonical split where the dataset has one, else a stratified random one."""
    if test_start is not None:
        return images[:test_start], images[test_start:], labels[:test_start], labels[test_start:]
    return train_test_split(images, labels, test_size=params.test_size, random_state=params.seed, stratify=labels)


def class_counts(labels: np.ndarray, class_names: list[str]) -> dict[str, int]:
    counts = np.bincount(labels, minlength=len(class_names))
    return {name: int(count) for name, count in zip(class_names, counts, strict=True)}


def canonical_test_start(test_start: int | None, n_images: int) -> int | None:
    """Where the dataset's own test part starts (None: no canonical split), checked against the data."""
    if test_start is not None and test_start >= n_images:
        raise UserError(
            f"{display_path(RAW_DIR / 'dataset.json')}: test_start = {test_start}, but there are only {n_images} "
            f"images: use null or a whole number in 1..{n_images - 1}"
        )
    return test_start


def main() -> None:
    params = load_params("split", SplitParams)
    images, labels = load_labelled_images(RAW_DIR)
    info = load_dataset_info(RAW_DIR)
    class_names = info.class_names
    test_start = canonical_test_start(info.test_start, len(images))
    if test_start is None:
        check_stratified_split("split.test_size", params.test_size, labels, "images")

    train_images, test_images, train_labels, test_labels = split_dataset(images, labels, test_start, params)
    log(f"{info.name}: {len(train_labels)} train / {len(test_labels)} test images")
    for part, part_images, part_labels in [("train", train_images, train_labels), ("test", test_images, test_labels)]:
        save_array(SPLIT_DIR / f"{part}_images.npy", part_images)
        save_array(SPLIT_DIR / f"{part}_labels.npy", part_labels)
    write_json(SPLIT_DIR / "dataset.json", info.model_dump(exclude={"test_start"}))

    train_counts, test_counts = class_counts(train_labels, class_names), class_counts(test_labels, class_names)
    write_json(
        DATA_OVERVIEW_FILE,
        {"dataset": info.name, "class_counts": {"train": train_counts, "test": test_counts}},
    )


if __name__ == "__main__":
    run_stage(main, __doc__)
