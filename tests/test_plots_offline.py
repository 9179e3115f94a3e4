"""The plots page works offline: the committed template carries Vega inline, and Chromium draws every chart with it."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from dvc_render.base import Renderer
from dvc_render.html import HTML
from dvc_render.vega import VegaRenderer

import build_plots_template as tool
from build_plots_template import PACKAGES, BuildError, Bundle, Package, check_integrity, main, render
from conftest import ROOT, copy_repo, dvc

TEMPLATE = ROOT / ".dvc" / "plots" / "offline.html"
# One embedded library as render() writes it: its licence in a comment, then the file verbatim.
PIECE = re.compile(
    r"    <!-- (?P<name>\S+) (?P<version>\S+), (?P<path>\S+), licence:\n(?P<licence>.*?)\n    -->\n"
    r"    <script>\n(?P<script>.*?)\n    </script>\n",
    re.DOTALL,
)


def committed_bundles() -> list[Bundle]:
    """The libraries inside the committed template, cut back out, each with the pin of its name and version."""
    pins = {(package.name, package.version): package for package in PACKAGES}
    return [
        Bundle(pins[match["name"], match["version"]], match["path"], match["licence"], match["script"])
        for match in PIECE.finditer(TEMPLATE.read_text(encoding="utf-8"))
    ]


def test_the_pins_are_the_versions_dvc_render_loads_from_its_cdn():
    loaded = re.findall(r"cdn\.jsdelivr\.net/npm/([\w-]+)@([\d.]+)", VegaRenderer.SCRIPTS)
    assert loaded == [(package.name, package.version) for package in PACKAGES]


def test_the_committed_template_embeds_exactly_the_pinned_library_files():
    bundles = committed_bundles()
    assert [bundle.package for bundle in bundles] == list(PACKAGES)
    for bundle in bundles:
        assert hashlib.sha256(bundle.script.encode("utf-8")).hexdigest() == bundle.package.script_sha256
        assert "Redistribution and use in source and binary forms" in bundle.licence


def test_the_committed_template_is_byte_for_byte_what_the_tool_renders():
    assert render(committed_bundles()).encode("utf-8") == TEMPLATE.read_bytes()


def test_the_committed_template_loads_nothing_from_elsewhere():
    page = TEMPLATE.read_text(encoding="utf-8")
    assert re.findall(r"<script\b[^>]*>", page) == ["<script>"] * len(PACKAGES)
    assert "<link" not in page
    # dvc-render puts its CDN <script> tags where the scripts placeholder is; this page has none.
    with_cdn_scripts = HTML(page).with_scripts(VegaRenderer.SCRIPTS).with_element("<div>chart</div>").embed()
    assert "cdn.jsdelivr.net" not in with_cdn_scripts and "<div>chart</div>" in with_cdn_scripts


def test_dvc_is_configured_to_use_the_committed_template():
    configured = dvc(["config", "plots.html_template"], ROOT).stdout.strip()
    assert (ROOT / ".dvc" / configured).resolve() == TEMPLATE  # DVC resolves it against .dvc/


# The tool against a fake registry in a folder (file:// URLs): every step but the network.


def fake_tarball(name: str) -> bytes:
    files = {
        "package/package.json": json.dumps({"name": name, "jsdelivr": f"./build/{name}.min.js"}),
        f"package/build/{name}.min.js": f'window["{name}"] = "loaded";\n',
        "package/LICENSE": f"Copyright (c) {name} authors\n",
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def sri(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


@pytest.fixture
def registry(tmp_path, monkeypatch) -> Path:
    """A registry folder serving two fake packages, pinned in the tool in place of the real ones."""
    folder = tmp_path / "registry"
    pins = []
    for name in ("lib-a", "lib-b"):
        tarball = folder / f"{name}-1.0.0.tgz"
        tarball.parent.mkdir(parents=True, exist_ok=True)
        tarball.write_bytes(fake_tarball(name))
        dist = {"tarball": tarball.as_uri(), "integrity": sri(tarball.read_bytes())}
        (folder / name).mkdir()
        (folder / name / "1.0.0").write_text(json.dumps({"name": name, "version": "1.0.0", "dist": dist}))
        script = f'window["{name}"] = "loaded";\n'.encode()
        pins.append(Package(name, "1.0.0", dist["integrity"], hashlib.sha256(script).hexdigest()))
    monkeypatch.setattr(tool, "PACKAGES", tuple(pins))
    return folder


def build(registry: Path, output: Path) -> int:
    return main(["--registry", registry.as_uri(), "--output", str(output)])


def test_the_tool_writes_each_library_inline_in_order_with_its_licence(registry, tmp_path):
    output = tmp_path / "out" / "offline.html"
    assert build(registry, output) == 0
    page = output.read_text()
    assert page.index('window["lib-a"]') < page.index('window["lib-b"]') < page.index("{plot_divs}")
    assert "Copyright (c) lib-a authors" in page and "<script src" not in page
    assert [path.name for path in output.parent.iterdir()] == ["offline.html"]


def failure(capsys) -> str:
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("error: "), error
    return error


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda folder: (folder / "lib-b-1.0.0.tgz").write_bytes(fake_tarball("lib-x")),
            "lib-b@1.0.0: checksum mismatch",
        ),
        (lambda folder: (folder / "lib-b-1.0.0.tgz").unlink(), "lib-b-1.0.0.tgz: download failed"),
        (lambda folder: (folder / "lib-a" / "1.0.0").write_text("<html>"), "not the registry's metadata of lib-a"),
    ],
    ids=["bad-checksum", "missing-tarball", "not-metadata"],
)
def test_a_failed_download_exits_1_in_one_line_and_keeps_the_old_template(registry, tmp_path, capsys, damage, message):
    output = tmp_path / "out" / "offline.html"
    output.parent.mkdir()
    output.write_text("old")
    damage(registry)
    assert build(registry, output) == 1
    assert message in failure(capsys)
    assert output.read_text() == "old" and [path.name for path in output.parent.iterdir()] == ["offline.html"]


def test_a_registry_that_disagrees_with_the_pin_is_refused(registry, tmp_path, capsys, monkeypatch):
    first, *rest = tool.PACKAGES
    monkeypatch.setattr(
        tool, "PACKAGES", (Package(first.name, first.version, sri(b"other"), first.script_sha256), *rest)
    )
    assert build(registry, tmp_path / "offline.html") == 1
    assert "lib-a@1.0.0: the registry's integrity" in failure(capsys)
    assert not (tmp_path / "offline.html").exists()


def test_a_library_file_other_than_the_pinned_one_is_refused(registry, tmp_path, capsys, monkeypatch):
    first, *rest = tool.PACKAGES
    monkeypatch.setattr(tool, "PACKAGES", (Package(first.name, first.version, first.integrity, "0" * 64), *rest))
    assert build(registry, tmp_path / "offline.html") == 1
    assert "lib-a@1.0.0: build/lib-a.min.js sha256 expected 0000" in failure(capsys)


def test_check_integrity_accepts_the_right_hash_only():
    check_integrity(b"data", sri(b"data"), "x")
    with pytest.raises(BuildError, match="x: checksum mismatch"):
        check_integrity(b"data", sri(b"date"), "x")
    with pytest.raises(BuildError, match="unsupported integrity 'md5-"):
        check_integrity(b"data", "md5-abc", "x")


@pytest.mark.parametrize("script", ["s = '</SCRIPT>'", "s = '<!--'", "s = '{plot_divs}'", "s = '{scripts}'"])
def test_text_that_would_break_the_page_is_refused(script):
    bundle = Bundle(PACKAGES[0], "build/vega.min.js", "licence", script)
    with pytest.raises(BuildError, match="cannot go inline"):
        render([bundle])


# Chromium with no network opens what `dvc plots show` wrote: every CSV chart of dvc.yaml must be drawn.


def csv_plot_ids(plots: list) -> list[str]:
    """The element ids of the plots drawn from CSV data (Vega charts); the other entries are image folders."""
    ids = []
    for entry in plots:
        for plot_id, spec in entry.items() if isinstance(entry, dict) else [(entry, None)]:
            axes = [spec.get(axis) for axis in ("x", "y")] if spec else []
            files = [name for axis in axes if isinstance(axis, dict) for name in axis] or [plot_id]
            if any(name.endswith(".csv") for name in files):
                ids.append(Renderer.remove_special_chars(plot_id))
    return ids


def declared_csv_plot_ids() -> list[str]:
    return csv_plot_ids(yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"])


def test_csv_plots_are_told_from_image_folders_in_each_form_dvc_yaml_allows():
    plots = [
        {"curves": {"x": "recall", "y": {"reports/a.csv": "precision", "reports/b.csv": "precision"}}},
        {"reports/c.csv": {"x": "fpr", "y": "tpr"}},
        "reports/d.csv",
        "reports/figures",
        {"pictures": {"y": {"reports/e.png": "x"}}},
    ]
    assert csv_plot_ids(plots) == ["curves", "reports_c_csv", "reports_d_csv"]
    assert declared_csv_plot_ids()  # the project declares some


class DrawnCharts(HTMLParser):
    """Which of the given element ids hold a chart Vega drew: a <canvas> or <svg> of its class `marks`."""

    VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"})

    def __init__(self, ids: list[str]) -> None:
        super().__init__()
        self.ids = set(ids)
        self.seen: set[str] = set()
        self.drawn: set[str] = set()
        self.open: list[tuple[str, str | None]] = []  # (tag, id) of the elements around the current one

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if attributes.get("id") in self.ids:
            self.seen.add(attributes["id"])
        if tag in ("canvas", "svg") and "marks" in (attributes.get("class") or "").split():
            self.drawn.update(element_id for _, element_id in self.open if element_id in self.ids)
        if tag not in self.VOID:
            self.open.append((tag, attributes.get("id")))

    def handle_endtag(self, tag: str) -> None:
        while self.open and self.open.pop()[0] != tag:
            pass


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        message = "chromium is not installed: `apt-get install chromium` (.ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI must draw the page
        pytest.skip(message)
    return path


def offline_dom(chromium: str, page: Path, profile: Path) -> str:
    """The page's DOM after its scripts ran in headless Chromium, every request to the network refused."""
    result = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={profile}",
            "--proxy-server=127.0.0.1:9",  # the discard port: nothing answers
            "--proxy-bypass-list=<-loopback>",
            "--host-resolver-rules=MAP * ~NOTFOUND",  # and no name resolves
            "--virtual-time-budget=15000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0 and "</html>" in result.stdout, result.stderr[-2000:]
    return result.stdout


def drawn_charts(chromium: str, repo: Path, tmp_path: Path) -> DrawnCharts:
    charts = DrawnCharts(declared_csv_plot_ids())
    charts.feed(offline_dom(chromium, repo / "dvc_plots" / "index.html", tmp_path / "profile"))
    assert charts.seen == charts.ids  # every chart's element is on the page, drawn or not
    return charts


@pytest.mark.slow
@pytest.mark.parametrize("command", [["plots", "show"], ["plots", "diff", "HEAD"]], ids=["show", "diff"])
def test_every_csv_chart_is_drawn_offline(chromium, tmp_path, command):
    repo = copy_repo(tmp_path / "repo")
    dvc(command, repo)
    charts = drawn_charts(chromium, repo, tmp_path)
    assert charts.drawn == charts.ids


@pytest.mark.slow
def test_dvc_default_template_draws_no_chart_offline(chromium, tmp_path):
    """Without the template, the same check fails: the page waits for Vega from its CDN."""
    repo = copy_repo(tmp_path / "repo")
    dvc(["config", "--unset", "plots.html_template"], repo)
    dvc(["plots", "show"], repo)
    assert "cdn.jsdelivr.net" in (repo / "dvc_plots" / "index.html").read_text()
    assert drawn_charts(chromium, repo, tmp_path).drawn == set()
