"""Stage `download`: fetch the dataset named by `data.dataset`, verify it, write it to data/raw/."""

from __future__ import annotations

import mnist_dvc.runtime.numeric_profile  # noqa: F401  (first: it sets how numpy and scipy compute before they load)

import os
from pathlib import Path

from mnist_dvc.datasets.registry import DATASETS, DataParams, DataSource, verify
from mnist_dvc.files.arrays import DatasetInfo, save_array
from mnist_dvc.files.disk import write_json
from mnist_dvc.files.paths import RAW_DIR, display_path, user_root
from mnist_dvc.runtime.messages import log
from mnist_dvc.runtime.params import load_params
from mnist_dvc.runtime.runner import run_stage


def cache_dir() -> Path:
    """Downloads are kept outside the repo, so a second clone does not fetch them again."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mnist-dvc"
    return Path(os.environ.get("MNIST_DVC_CACHE", default))


def resolve_mirror(mirror: str, root: Path) -> str:
    """A relative folder in `data.mirrors` means one inside the user's repo, wherever the stage runs from."""
    if "://" in mirror or Path(mirror).expanduser().is_absolute():
        return mirror
    return str(root / mirror)


def main() -> None:
    params = load_params("data", DataParams)
    spec = DATASETS[params.dataset]
    log(f"loading '{params.dataset}': {spec.description}")
    mirrors = tuple(resolve_mirror(mirror, user_root()) for mirror in params.mirrors)
    dataset = spec.load(DataSource(mirrors=mirrors, cache_dir=cache_dir()))
    verify(params.dataset, dataset)

    save_array(RAW_DIR / "images.npy", dataset.images)
    save_array(RAW_DIR / "labels.npy", dataset.labels)
    info = DatasetInfo(
        name=params.dataset,
        class_names=list(spec.class_names),
        handwritten=spec.handwritten,
        test_start=dataset.test_start,
    )
    write_json(RAW_DIR / "dataset.json", info.model_dump())
    log(f"wrote {len(dataset.images)} images to {display_path(RAW_DIR)}/")


if __name__ == "__main__":
    run_stage(main, __doc__)
