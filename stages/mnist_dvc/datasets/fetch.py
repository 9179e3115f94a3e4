"""Get the four original IDX files of a dataset: sources in order, every file verified, cached, no partial files.

Sources in order: the download cache, the user's `data.mirrors`, the dataset's built-in mirrors, then OpenML. pooch
places each download in the cache (a temporary file, renamed once complete); the files are verified here, not by
pooch's `known_hash`: that is one digest of the file as downloaded, while a mirror may recompress the .gz (Debian's
`dataset-fashion-mnist` does), so a file passes on the digest of its .gz or of its decompressed content.
"""

from __future__ import annotations

import errno
import http.client
import socket
import tempfile
import warnings
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pooch

from mnist_dvc.datasets.idx import IDX_FILES, TEST_FILES, TRAIN_FILES, Digests, pixel_rows_to_images, verified
from mnist_dvc.datasets.sources import (
    BACKOFF,
    RETRIES,
    TIMEOUT,
    CacheError,
    SourceError,
    base_url,
    describe,
    downloader,
)
from mnist_dvc.files.disk import remove_stale_temporaries
from mnist_dvc.runtime.messages import log
from mnist_dvc.study.errors import UserError

# How scikit-learn's fetch_openml fails on the network or on a bad answer: a connection or HTTP error, a checksum
# or parse error (ValueError), a JSON answer of another shape (KeyError), a cut or damaged download.
OPENML_FAILURES = (OSError, ValueError, KeyError, EOFError, zlib.error, http.client.HTTPException)
pooch.get_logger().setLevel("WARNING")  # this stage logs what it fetched from where


@dataclass(frozen=True)
class OpenML:
    """The same images on OpenML as 784 pixel columns, training rows first."""

    name: str
    version: int
    n_train: int


@dataclass(frozen=True)
class IdxDataset:
    """A dataset in the original four IDX files: how to recognise them and where to find them."""

    name: str  # also its folder in the download cache
    digests: Mapping[str, Digests]  # one entry per name in IDX_FILES
    mirrors: tuple[str, ...]  # built-in base URLs, tried after the user's `data.mirrors`
    openml: OpenML | None = None  # the last resort

    def __post_init__(self) -> None:
        if set(self.digests) != set(IDX_FILES) or not all(d.gz_md5 or d.content_sha256 for d in self.digests.values()):
            raise ValueError(f"{self.name}: give at least one digest for each of {', '.join(IDX_FILES)}")
        if not all(d.content_size > 0 for d in self.digests.values()):
            raise ValueError(f"{self.name}: give the content size of each file: it bounds what a download may take")


def cache_error(folder: Path, error: OSError) -> UserError:
    """The download cache cannot take a file: no mirror can fix that, another cache folder can."""
    reason = "no space left on the device" if error.errno == errno.ENOSPC else error.strerror or str(error)
    advice = "set MNIST_DVC_CACHE to a writable folder"
    return UserError(f"cannot write to the download cache {folder} ({reason}): {advice}")


def fetch_file(url: str, path: Path, digests: Digests, n_classes: int) -> np.ndarray:
    """Download `url` into the cache as `path` with pooch, then verify it; a file that does not verify is removed.

    A file already at `path` did not verify or could not be read (`cached`): it goes first, or pooch would keep it.
    """
    remove_cached(path)
    try:
        pooch.retrieve(url, None, fname=path.name, path=path.parent, downloader=downloader(digests.max_gz_bytes))
    except CacheError as error:  # our download could not write pooch's temporary file
        raise cache_error(path.parent, error.oserror) from error
    except OSError as error:  # pooch could not make or place its temporary file
        raise cache_error(path.parent, error) from error
    try:
        return verified(path.read_bytes(), path.name, digests, n_classes)
    except SourceError:
        remove_cached(path)
        raise


def remove_cached(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as error:
        raise cache_error(path.parent, error) from error


def cached(path: Path, digests: Digests, n_classes: int) -> np.ndarray | None:
    """The array of a cached file that still verifies; one that does not is removed, one unreadable replaced."""
    if path.is_dir():  # it would refuse the downloaded file too, after the download: say so now
        advice = "remove it, or set MNIST_DVC_CACHE to another folder"
        raise UserError(f"{path}: a folder is where the downloaded file belongs: {advice}")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:  # a fresh download replaces it (the rename needs no access to the file itself)
        log(f"{path}: cannot read the cached file ({error.strerror or error}); fetching it again")
        return None
    try:
        return verified(raw, path.name, digests, n_classes)
    except SourceError as error:
        log(f"{path}: cached file failed verification ({error}); fetching it again")
        remove_cached(path)
        return None


def check_writable(folder: Path) -> None:
    """Fail before any download when the cache cannot hold a new file, rather than blame every mirror."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise cache_error(folder, error) from error


def count_mismatch(arrays: Mapping[str, np.ndarray], pair: tuple[str, str]) -> str | None:
    """Why the images and labels of `pair` cannot go together, if both are there and they cannot."""
    images_name, labels_name = pair
    if images_name not in arrays or labels_name not in arrays:
        return None
    n_images, n_labels = len(arrays[images_name]), len(arrays[labels_name])
    if n_images == n_labels:
        return None
    return f"{images_name} holds {n_images:,} images but {labels_name} {n_labels:,} labels"


def drop_pair(arrays: dict[str, np.ndarray], folder: Path, pair: tuple[str, str]) -> None:
    """Forget both files of a mismatched pair, cached copies included.

    Each file verified on its own, so which one is wrong cannot be told; the next source provides both, and
    a pair from one source agrees. Keeping either would fail every later run against a correct partner.
    """
    for name in pair:
        del arrays[name]
        remove_cached(folder / name)


def fetch_from(mirror: str, dataset: IdxDataset, arrays: dict[str, np.ndarray], folder: Path, n_classes: int) -> None:
    """Add to `arrays` each file it lacks, from one mirror; stop at the first file or pair that fails."""
    base = base_url(mirror)
    for name in IDX_FILES:
        if name in arrays:
            continue
        try:
            arrays[name] = fetch_file(base + name, folder / name, dataset.digests[name], n_classes)
        except SourceError as error:
            raise SourceError(f"{name}: {error}") from error
        log(f"fetched {name} from {mirror}")
        pair = TRAIN_FILES if name in TRAIN_FILES else TEST_FILES
        if reason := count_mismatch(arrays, pair):
            drop_pair(arrays, folder, pair)
            raise SourceError(reason)


def assemble(arrays: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, int]:
    """The four files as one dataset; each pair's counts agree (`count_mismatch` dropped any that did not)."""
    images = np.concatenate([arrays[TRAIN_FILES[0]], arrays[TEST_FILES[0]]])
    labels = np.concatenate([arrays[TRAIN_FILES[1]], arrays[TEST_FILES[1]]])
    return images, labels, len(arrays[TRAIN_FILES[1]])


# --- OpenML -------------------------------------------------------------------------------------


@contextmanager
def quiet_openml_requests() -> Iterator[None]:
    """scikit-learn opens OpenML URLs without a timeout and warns on each retry: bound and silence them."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(TIMEOUT)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="A network error occurred")
            yield
    finally:
        socket.setdefaulttimeout(previous)


def fetch_openml_images(openml: OpenML, cache_dir: Path, n_classes: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Images and labels from OpenML, verified by scikit-learn's own md5 check of the download."""
    from sklearn.datasets import fetch_openml

    try:
        with quiet_openml_requests():
            pixels, target = fetch_openml(
                openml.name,
                version=openml.version,
                data_home=cache_dir / "openml",
                as_frame=False,
                return_X_y=True,
                n_retries=RETRIES,
                delay=BACKOFF,
            )
        labels = np.asarray(target).astype(np.int64)
    except OPENML_FAILURES as error:
        raise SourceError(describe(error)[0]) from error
    images = pixel_rows_to_images(np.asarray(pixels), len(labels))
    if labels.min() < 0 or labels.max() >= n_classes:
        raise SourceError(f"labels out of range 0..{n_classes - 1}")
    return images, labels.astype(np.uint8), openml.n_train


# --- all sources --------------------------------------------------------------------------------


def failure_message(dataset: IdxDataset, failures: Sequence[str]) -> str:
    tried = "".join(f"\n  - {failure}" for failure in failures)
    return (
        f"dataset '{dataset.name}': no source could provide it. Tried:{tried}\n"
        f"To fix: set data.mirrors in params.yaml to a folder (or URL) holding {', '.join(IDX_FILES)}; "
        "or use data.dataset: mnist-sample, which needs no download"
    )


def cached_arrays(dataset: IdxDataset, folder: Path, n_classes: int) -> dict[str, np.ndarray]:
    """The files in the cache that verify, without a pair whose counts disagree (an older run may have left one)."""
    arrays: dict[str, np.ndarray] = {}
    for name in IDX_FILES:
        array = cached(folder / name, dataset.digests[name], n_classes)
        if array is not None:
            arrays[name] = array
    for pair in (TRAIN_FILES, TEST_FILES):
        if reason := count_mismatch(arrays, pair):
            log(f"{folder}: cached {reason}; fetching both again")
            drop_pair(arrays, folder, pair)
    return arrays


def fetch_dataset(
    dataset: IdxDataset, mirrors: Sequence[str], cache_dir: Path, n_classes: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """All images (n, 28, 28) and labels (n,), training part first, and where the test part starts.

    Sources in order: the cache, `mirrors`, the built-in mirrors, then OpenML if the dataset has it.
    """
    folder = cache_dir / dataset.name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise cache_error(folder, error) from error
    remove_stale_temporaries(folder)
    arrays = cached_arrays(dataset, folder, n_classes)
    if len(arrays) == len(IDX_FILES):
        log(f"using the verified files cached in {folder}")
    else:
        check_writable(folder)

    failures = []
    for mirror in (*mirrors, *dataset.mirrors):
        if len(arrays) == len(IDX_FILES):
            break
        try:
            fetch_from(mirror, dataset, arrays, folder, n_classes)
        except SourceError as error:
            failures.append(f"{mirror}: {error}")
    if len(arrays) == len(IDX_FILES):
        return assemble(arrays)

    if dataset.openml is not None:
        openml = dataset.openml
        log(f"no mirror had every file; trying OpenML '{openml.name}'")
        try:
            return fetch_openml_images(openml, cache_dir, n_classes)
        except SourceError as error:
            failures.append(f"OpenML {openml.name} (version {openml.version}): {error}")
    raise UserError(failure_message(dataset, failures))
