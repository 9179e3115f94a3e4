"""Getting one file from a source: a mirror's URL (https://, http://, file://) or a folder, within a size cap and a
deadline, retried after a transient failure, every failure described in a line.

The HTTP download is the project's own, plugged into pooch (which places the file in the cache) as its downloader:
pooch's HTTPDownloader reads a whole chunk before any check, so a mirror that trickles a byte now and then never
meets the deadline (measured: docs/design.md). Here each read returns what has arrived (`read1`), and the deadline is
checked after it.
"""

from __future__ import annotations

import http.client
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import urllib.response
from pathlib import Path
from typing import Any, BinaryIO

from tqdm import tqdm

from mnist_dvc.runtime.messages import log

# Network knobs, module constants so tests can make failures fast.
TIMEOUT = 30.0  # seconds for the connect and for each read: a stalled mirror is given up
# Seconds for one file, every attempt included: the largest (26 MB) at 45 kB/s. A mirror that trickles a byte now
# and then never hits TIMEOUT; this ends it. Checked between reads (each waits at most TIMEOUT); no retry starts late.
DEADLINE = 600.0
RETRIES = 2  # further attempts after a transient failure (timeout, cut connection, HTTP 5xx or 429)
BACKOFF = 1.0  # seconds before the first retry, doubled for each next one
READ_BYTES = 1 << 20
USER_AGENT = "mnist-dvc"  # some mirrors refuse urllib's default agent


class SourceError(Exception):
    """Why one source could not provide a file: a line of the final message."""

    def __init__(self, reason: str, transient: bool = False) -> None:
        super().__init__(reason)
        self.transient = transient


class CacheError(Exception):
    """The local file a download goes into cannot be written: no other source can fix that."""

    def __init__(self, oserror: OSError) -> None:
        super().__init__(str(oserror))
        self.oserror = oserror


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


def mirror_problem(mirror: str) -> str | None:
    """Why a `data.mirrors` entry cannot be a source, or None."""
    if "\x00" in mirror:
        return "contains a NUL character"
    if "://" in mirror:
        try:
            parts = urllib.parse.urlsplit(mirror)
        except ValueError as error:
            return f"not a valid URL ({error})"
        if parts.scheme.lower() not in ("https", "http", "file"):
            return f"unsupported URL scheme '{parts.scheme}' (use https://, http://, file:// or a folder)"
        if parts.scheme.lower() != "file" and not parts.hostname:
            return "a URL without a host"
        return None
    try:
        Path(mirror).expanduser()
    except RuntimeError:  # `~user` of a user this machine does not have
        return f"{mirror.split('/', 1)[0]} names no user of this machine"
    return None


def base_url(mirror: str) -> str:
    """A `data.mirrors` entry as a base URL ending in '/': folders become file:// URLs."""
    if problem := mirror_problem(mirror):
        raise SourceError(problem)
    if "://" not in mirror:
        return Path(mirror).expanduser().resolve().as_uri() + "/"
    return mirror.rstrip("/") + "/"


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
        while chunk := read_some(response, min(READ_BYTES, limit + 1 - received)):  # one byte more tells "too long"
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
            raise CacheError(error) from error
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


def downloader(limit: int) -> Any:
    """pooch's downloader hook: `download` into the temporary file pooch names, at most `limit` bytes."""

    def fetch(url: str, output_file: str, pooch: Any) -> None:
        download(url, Path(output_file), limit)

    return fetch
