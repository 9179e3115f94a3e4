"""Build `.dvc/plots/offline.html`: DVC's plots page with Vega, Vega-Lite and vega-embed inline.

DVC's default page loads these three libraries from a CDN, so its charts stay blank without a network. This template
carries them inside the page instead (`dvc config plots.html_template` points at it), taken from the npm registry's
tarballs at the versions dvc-render loads, each tarball checked against its pinned integrity hash and each library
file against its pinned SHA-256, so the committed template can be checked offline. Their BSD-3-Clause licences go
into the page beside them. Usage: `python tools/build_plots_template.py` (writes the template; needs the registry).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import sys
import tarfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "stages"))
from mnist_dvc.files.disk import write_bytes  # noqa: E402
from mnist_dvc.study.errors import UserError  # noqa: E402

OUTPUT = ROOT / ".dvc" / "plots" / "offline.html"
REGISTRY = "https://registry.npmjs.org"
TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    integrity: str  # the registry's `dist.integrity` of the tarball
    script_sha256: str  # of the file the CDN serves, so a test can check the committed template without a network


# The versions dvc-render's default page loads (dvc_render.vega.VegaRenderer.SCRIPTS), in its order: each library
# needs the ones before it.
PACKAGES = (
    Package(
        "vega",
        "5.20.2",
        "sha512-qmH7aD9GGPpssVdxL1xgcdxTbQzyRUeRR16Os385ymvQhiwCYQNA6+eXUPAZDTVLfk0RXu6Jzj6kUE5jQ80EVw==",
        "4794d0169cb1f3ebad8117fe98ba5bd652dd725905ec0384e832391dbccb03be",
    ),
    Package(
        "vega-lite",
        "5.2.0",
        "sha512-Yxcg8MvYfxHcG6BbkaKT0oVCIMIcE19UvqIsEwBmyd/7h2nzW7oRnID81T8UrY7hpDrIr6wa2JADOT2dhGNErw==",
        "d73157451b3978015ab31dacd55ff90d986ab8663fc0abed50f97b3cd90002cb",
    ),
    Package(
        "vega-embed",
        "6.18.2",
        "sha512-wcDyQPE4J5aiCDc3/suH5RQDvrKkjuLkhzUcbOLwEkNF8/+pp17tS0JghzEvAPNRg+5aG1/N2ydixq8Lk3dOlg==",
        "1ba9826431ddc9805e815ad92acc811c819f2bfd32bda2a128b8c4b5070fab5e",
    ),
)

# dvc-render fills every `{name}` of these in the whole page, so none may appear inside an embedded file; the page
# leaves out the scripts placeholder on purpose, which is where dvc-render would put its CDN <script> tags.
DVC_PLACEHOLDERS = ("{scripts}", "{plot_divs}", "{refresh_tag}")
# What would end an inline <script> or an HTML comment early.
SCRIPT_BREAKERS = ("</script", "<!--")
COMMENT_BREAKERS = ("-->", "--!>")


class BuildError(Exception):
    """A one-line reason the template cannot be built; nothing is written."""


@dataclass(frozen=True)
class Bundle:
    package: Package
    path: str  # inside the tarball, the file cdn.jsdelivr.net serves for `name@version`
    licence: str
    script: str


def fetch(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            return response.read()
    except urllib.error.HTTPError as error:
        raise BuildError(f"{url}: download failed (HTTP {error.code})") from error
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise BuildError(f"{url}: download failed ({reason})") from error


def check_integrity(data: bytes, integrity: str, what: str) -> None:
    """npm's Subresource-Integrity form, `sha512-<base64>`; every hash it lists must match."""
    for entry in integrity.split():
        algorithm, _, expected = entry.partition("-")
        if algorithm not in ("sha256", "sha384", "sha512"):
            raise BuildError(f"{what}: unsupported integrity {entry!r}")
        got = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
        if got != expected:
            raise BuildError(f"{what}: checksum mismatch ({algorithm} expected {expected}, got {got})")


def download_tarball(registry: str, package: Package) -> bytes:
    """The tarball the registry lists for the pinned version, refused unless registry and pin agree on its hash."""
    what = f"{package.name}@{package.version}"
    url = f"{registry.rstrip('/')}/{package.name}/{package.version}"
    try:
        dist = json.loads(fetch(url))["dist"]
        tarball, integrity = dist["tarball"], dist["integrity"]
    except (ValueError, KeyError, TypeError) as error:
        raise BuildError(
            f"{url}: not the registry's metadata of {what} (no dist.tarball and dist.integrity)"
        ) from error
    if integrity != package.integrity:
        raise BuildError(f"{what}: the registry's integrity {integrity} differs from the pinned {package.integrity}")
    data = fetch(tarball)
    check_integrity(data, package.integrity, what)
    return data


def read_member(archive: tarfile.TarFile, name: str, what: str) -> str:
    try:
        member = archive.extractfile(f"package/{name}")
    except KeyError:
        member = None
    if member is None:
        raise BuildError(f"{what}: the tarball has no package/{name}")
    return member.read().decode("utf-8")


def unpack(package: Package, tarball: bytes) -> Bundle:
    """The library file that `cdn.jsdelivr.net/npm/<name>@<version>` serves (package.json's `jsdelivr`)."""
    what = f"{package.name}@{package.version}"
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        path = json.loads(read_member(archive, "package.json", what)).get("jsdelivr")
        if not isinstance(path, str):
            raise BuildError(f"{what}: package.json names no `jsdelivr` file")
        path = path.removeprefix("./")
        script, licence = read_member(archive, path, what), read_member(archive, "LICENSE", what)
    got = hashlib.sha256(script.encode("utf-8")).hexdigest()
    if got != package.script_sha256:
        raise BuildError(f"{what}: {path} sha256 expected {package.script_sha256}, got {got}")
    return Bundle(package, path, licence, script)


def check_embeddable(bundle: Bundle) -> None:
    """Refuse text that would break out of its <script> or comment, or that dvc-render would fill in."""
    what = f"{bundle.package.name}@{bundle.package.version}"
    for text, breakers in ((bundle.script, SCRIPT_BREAKERS), (bundle.licence, COMMENT_BREAKERS)):
        for token in (*breakers, *DVC_PLACEHOLDERS):
            if token in text.lower():
                raise BuildError(f"{what}: holds {token!r}, which cannot go inline into the page")


def render(bundles: Sequence[Bundle]) -> str:
    """DVC's default page (dvc_render.html.PAGE_HTML) with the libraries inline, and a charset for their text."""
    for bundle in bundles:
        check_embeddable(bundle)
    # Each file goes in verbatim, so a test can cut it back out and check its pinned hash.
    scripts = "".join(
        f"    <!-- {b.package.name} {b.package.version}, {b.path}, licence:\n{b.licence}\n    -->\n"
        f"    <script>\n{b.script}\n    </script>\n"
        for b in bundles
    )
    return (
        "<!DOCTYPE html>\n"
        "<!-- Written by tools/build_plots_template.py; rebuild it with that command rather than edit it. -->\n"
        "<html>\n<head>\n"
        '    <meta charset="utf-8">\n'
        "    {refresh_tag}\n"
        "    <title>DVC Plot</title>\n"
        f"{scripts}"
        "    <style>\n        table {\n            border-spacing: 15px;\n        }\n    </style>\n"
        "</head>\n<body>\n    {plot_divs}\n</body>\n</html>\n"
    )


def build(registry: str, output: Path) -> None:
    bundles = [unpack(package, download_tarball(registry, package)) for package in PACKAGES]
    write_bytes(output, render(bundles).encode("utf-8"))  # atomic, as every file the stages write


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", default=REGISTRY, help=f"npm registry base URL (default {REGISTRY})")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="where to write the template")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        build(args.registry, args.output)
    except (BuildError, UserError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.output} ({args.output.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
