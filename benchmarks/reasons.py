"""Measure the hand-written code the study keeps beside a library's own, on full-size images: `features.hog_images`
(every image at once, in numpy) against `skimage.feature.hog` (one image at a time), on the same images with the HOG
SVC's params, checked to give the same bits. (The CV folds the stages once ran as jobs of their own were measured
with this script at 0ef5cb6, and replaced by `cross_val_predict`: docs/design.md.)

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

from mnist_dvc.datasets.idx import parse_idx
from mnist_dvc.runtime.params import read_params_file
from mnist_dvc.study.features import hog_images
from mnist_dvc.study.schema import AllParams

WORKERS = 2


def load_images(mirror: Path, limit: int) -> np.ndarray:
    """The first `limit` training images of an IDX mirror folder."""
    return parse_idx(gzip.decompress((mirror / "train-images-idx3-ubyte.gz").read_bytes()), True, 10)[:limit]


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
    images = load_images(args.mirror, args.images)
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
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
