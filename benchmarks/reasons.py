"""Measure the two pieces of hand-written code the study keeps beside a library's own, on full-size images.

- `hog`: `features.hog_images` (every image at once, in numpy) against `skimage.feature.hog` (one image at a time), on
  the same images with the HOG SVC's params, checked to give the same bits.
- `binary-cv`: `train_binary`'s out-of-sample scores with its CV folds as jobs of their own, beside the forest's
  out-of-bag fit and the deployed SGD, against `cross_val_predict` for each model as one job, on the same workers;
  checked to give the same scores.

Usage: `python benchmarks/reasons.py --mirror /usr/share/datasets/fashion-mnist [--images N] [--runs R]`: the medians
of R runs (alternating the two ways) and their ratio, as a markdown table on stdout. docs/design.md quotes them.
"""

# ruff: noqa: E402  (the numeric profile is applied before numpy loads, as in every stage)
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "stages"))
import mnist_dvc.runtime.numeric_profile  # noqa: F401  (one BLAS thread, one kernel)

import argparse
import gzip
import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np
from joblib import Parallel, delayed, parallel_config
from skimage.feature import hog
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold, cross_val_predict

import train_binary
from mnist_dvc.datasets.idx import parse_idx
from mnist_dvc.files.arrays import to_features
from mnist_dvc.parallel.workers import run_jobs
from mnist_dvc.runtime.params import read_params_file
from mnist_dvc.study.features import hog_images
from mnist_dvc.study.metrics import BINARY_FEATURES_DTYPE, is_target, score_method
from mnist_dvc.study.schema import AllParams

WORKERS = 2


def load_images(mirror: Path, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `limit` training images and labels of an IDX mirror folder."""
    images = parse_idx(gzip.decompress((mirror / "train-images-idx3-ubyte.gz").read_bytes()), True, 10)
    labels = parse_idx(gzip.decompress((mirror / "train-labels-idx1-ubyte.gz").read_bytes()), False, 10)
    return images[:limit], labels[:limit]


def skimage_hog(images: np.ndarray, orientations: int, cells: int, block: int) -> np.ndarray:
    """skimage's own function, an image at a time, on the stage's two workers."""
    one = lambda image: hog(  # noqa: E731
        image, orientations, (cells, cells), (block, block), block_norm="L2-Hys", feature_vector=True
    ).astype(np.float32)
    chunks = np.array_split(images, WORKERS)
    with parallel_config(backend="threading", n_jobs=WORKERS):
        parts = Parallel()(delayed(lambda chunk: np.stack([one(image) for image in chunk]))(c) for c in chunks)
    return np.concatenate(parts)


def own_hog(images: np.ndarray, orientations: int, cells: int, block: int) -> np.ndarray:
    """`features.hog_images` on a chunk per worker, as `train_multiclass` maps it."""
    chunks = np.array_split(images, WORKERS)
    with parallel_config(backend="threading", n_jobs=WORKERS):
        parts = Parallel()(delayed(hog_images)(chunk, orientations, cells, block) for chunk in chunks)
    return np.concatenate(parts)


def with_own_folds(params, features, target, split) -> dict[str, np.ndarray]:
    with parallel_config(backend="threading", n_jobs=WORKERS):
        scores, _, _ = train_binary.out_of_sample_scores(
            train_binary.build_models(params), features, target, params, split
        )
    return scores


def with_cross_val_predict(params, features, target, split) -> dict[str, np.ndarray]:
    """The same scores, each CV a `cross_val_predict` job beside the forest and the deployed SGD."""
    models = train_binary.build_models(params)
    folds = StratifiedKFold(n_splits=params.cv_folds)
    forest_features, forest_target = (
        features[: params.forest.max_train_samples],
        target[: params.forest.max_train_samples],
    )

    def cv(model):
        scores = cross_val_predict(clone(model), features, target, cv=folds, method=score_method(model))
        return scores if scores.ndim == 1 else scores[:, 1]

    jobs = [
        ("forest", train_binary.forest_scores, (models["forest"], forest_features, forest_target)),
        ("deployed sgd", train_binary.thresholded_sgd_job, (params, features, target, *split)),
        ("sgd CV", cv, (models["sgd"],)),
        ("dummy CV", cv, (models["dummy"],)),
    ]
    with parallel_config(backend="threading", n_jobs=WORKERS):
        (_, forest), _, sgd, dummy = run_jobs(jobs)
    return {"forest": forest, "sgd": sgd, "dummy": dummy}


def timed(function: Callable, *args) -> tuple[float, object]:
    started = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - started, result


def compare(name: str, ours: Callable, library: Callable, args: tuple, runs: int, same: Callable) -> str:
    times: dict[str, list[float]] = {"ours": [], "library": []}
    for _ in range(runs):
        seconds_ours, result_ours = timed(ours, *args)
        seconds_library, result_library = timed(library, *args)
        times["ours"].append(seconds_ours)
        times["library"].append(seconds_library)
        if not same(result_ours, result_library):
            sys.exit(f"{name}: the two ways gave different results")
        print(f"{name}: ours {seconds_ours:.1f} s, library {seconds_library:.1f} s", file=sys.stderr, flush=True)
    ours_median, library_median = (statistics.median(times[key]) for key in ("ours", "library"))
    return f"| {name} | {ours_median:.1f} | {library_median:.1f} | {library_median / ours_median:.2f} |"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirror", type=Path, required=True, help="a folder with the dataset's four IDX files")
    parser.add_argument("--images", type=int, default=60000, help="training images to use (default 60,000)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each way (default 3)")
    args = parser.parse_args(argv)
    images, labels = load_images(args.mirror, args.images)
    params = AllParams.model_validate(read_params_file(ROOT / "params.yaml"))
    hog_params = params.multiclass.models.svc_hog
    hog_args = (images, hog_params.orientations, hog_params.pixels_per_cell, hog_params.cells_per_block)
    rows = [
        f"{len(images):,} training images of {args.mirror}, {WORKERS} worker threads, medians of {args.runs} runs",
        "",
        "| what | ours (s) | the library's (s) | library / ours |",
        "|---|---|---|---|",
        compare("HOG of every image", own_hog, skimage_hog, hog_args, args.runs, np.array_equal),
    ]
    binary = params.binary
    features, target = to_features(images, BINARY_FEATURES_DTYPE), is_target(labels, binary.digit)
    split = train_binary.threshold_split(binary, target, str(binary.digit))
    same_scores = lambda a, b: all(np.array_equal(a[name], b[name]) for name in a)  # noqa: E731
    rows.append(
        compare(
            "train_binary's out-of-sample scores",
            with_own_folds,
            with_cross_val_predict,
            (binary, features, target, split),
            args.runs,
            same_scores,
        )
    )
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
