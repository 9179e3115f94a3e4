"""Stage `download`: fetch the dataset named by `data.dataset`, verify it, write it to data/raw/."""

from __future__ import annotations

import os
from pathlib import Path

from common import RAW_DIR, ROOT, load_params, log, run_stage, save_array, write_json
from datasets import DATASETS, DataParams, DataSource, verify


def cache_dir() -> Path:
    """Downloads are kept outside the repo, so a second clone does not fetch them again."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mnist-dvc"
    return Path(os.environ.get("MNIST_DVC_CACHE", default))


def main() -> None:
    params = load_params("data", DataParams)
    spec = DATASETS[params.dataset]
    log(f"loading '{params.dataset}': {spec.description}")
    dataset = spec.load(DataSource(mirrors=tuple(params.mirrors), cache_dir=cache_dir()))
    verify(params.dataset, dataset)

    save_array(RAW_DIR / "images.npy", dataset.images)
    save_array(RAW_DIR / "labels.npy", dataset.labels)
    write_json(
        RAW_DIR / "dataset.json",
        {"name": params.dataset, "class_names": list(spec.class_names), "test_start": dataset.test_start},
    )
    log(f"wrote {len(dataset.images)} images to {RAW_DIR.relative_to(ROOT)}/")


if __name__ == "__main__":
    run_stage(main, __doc__)
