"""Stage `split`: train/test split of data/raw/ into data/split/, and a first look at the data."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from common import (
    FIGURES_DIR,
    REPORTS_DIR,
    ROOT,
    SPLIT_DIR,
    UserError,
    load_array,
    load_params,
    log,
    read_json,
    run_stage,
    save_array,
    write_json,
)
from figures import new_figure, plot_digit_grid, save_figure
from schema import SplitParams

RAW_DIR = ROOT / "data" / "raw"
OVERVIEW_FIGURES = FIGURES_DIR / "data"


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


def plot_one_digit(image: np.ndarray, class_name: str) -> object:
    figure, axis = new_figure(figsize=(2.5, 2.5))
    axis.imshow(image, cmap="binary", interpolation="nearest")
    axis.set_title(f"first training image: {class_name}")
    axis.axis("off")
    return figure


def plot_class_counts(train: dict[str, int], test: dict[str, int]) -> object:
    figure, axis = new_figure(figsize=(6, 3))
    positions = np.arange(len(train))
    axis.bar(positions - 0.2, list(train.values()), width=0.4, label="train")
    axis.bar(positions + 0.2, list(test.values()), width=0.4, label="test")
    axis.set_xticks(positions, list(train), rotation=30 if max(map(len, train)) > 2 else 0)
    axis.set_ylabel("images")
    axis.set_title("images per class")
    axis.legend()
    return figure


def read_raw() -> tuple[np.ndarray, np.ndarray, dict]:
    images = load_array(RAW_DIR / "images.npy", np.uint8, 3)
    labels = load_array(RAW_DIR / "labels.npy", np.uint8, 1)
    meta = read_json(RAW_DIR / "dataset.json")
    if not isinstance(meta, dict) or not {"name", "class_names", "test_start"} <= set(meta):
        raise UserError(f"{RAW_DIR / 'dataset.json'}: expected keys name, class_names, test_start")
    if len(images) != len(labels):
        raise UserError(f"{RAW_DIR}: {len(images)} images but {len(labels)} labels")
    return images, labels, meta


def main() -> None:
    params = load_params("split", SplitParams)
    images, labels, meta = read_raw()
    class_names = meta["class_names"]

    train_images, test_images, train_labels, test_labels = split_dataset(images, labels, meta["test_start"], params)
    log(f"{meta['name']}: {len(train_labels)} train / {len(test_labels)} test images")
    for part, part_images, part_labels in [("train", train_images, train_labels), ("test", test_images, test_labels)]:
        save_array(SPLIT_DIR / f"{part}_images.npy", part_images)
        save_array(SPLIT_DIR / f"{part}_labels.npy", part_labels)
    write_json(SPLIT_DIR / "dataset.json", {"name": meta["name"], "class_names": class_names})

    train_counts, test_counts = class_counts(train_labels, class_names), class_counts(test_labels, class_names)
    write_json(
        REPORTS_DIR / "data_overview.json",
        {"dataset": meta["name"], "class_counts": {"train": train_counts, "test": test_counts}},
    )
    save_figure(OVERVIEW_FIGURES / "first_image.png", plot_one_digit(train_images[0], class_names[train_labels[0]]))
    save_figure(
        OVERVIEW_FIGURES / "first_100_images.png", plot_digit_grid(train_images[:100], "the first 100 training images")
    )
    save_figure(OVERVIEW_FIGURES / "class_counts.png", plot_class_counts(train_counts, test_counts))


if __name__ == "__main__":
    run_stage(main, __doc__)
