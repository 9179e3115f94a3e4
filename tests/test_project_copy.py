"""tools/project_copy.py: the project as a fresh git repo in a new folder, or a one-line refusal."""

from __future__ import annotations

import subprocess
import sys

from project_copy import project_files

from conftest import ROOT, run


def test_the_copy_holds_every_project_file_committed_once(tmp_path):
    result = run([sys.executable, "tools/project_copy.py", str(tmp_path / "copy")], ROOT)
    files = project_files()
    assert result.stdout == f"copied {len(files)} files to {tmp_path / 'copy'}\n"
    listed = subprocess.run(["git", "ls-files"], cwd=tmp_path / "copy", capture_output=True, text=True, check=True)
    assert sorted(listed.stdout.splitlines()) == sorted(files)
    assert (tmp_path / "copy/params.yaml").read_bytes() == (ROOT / "params.yaml").read_bytes()
    log = subprocess.run(["git", "log", "--format=%s"], cwd=tmp_path / "copy", capture_output=True, text=True)
    assert log.stdout == "copy\n"


def test_an_existing_destination_is_refused_and_left_alone(tmp_path):
    (tmp_path / "mine.txt").write_text("keep")
    result = run([sys.executable, "tools/project_copy.py", str(tmp_path)], ROOT, check=False)
    assert result.returncode == 2 and f"{tmp_path} already exists: give a new folder" in result.stderr
    assert [path.name for path in tmp_path.iterdir()] == ["mine.txt"]
