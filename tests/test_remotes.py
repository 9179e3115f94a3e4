"""Results shared through DVC remotes instead of retrained: a local folder, an SSH server on 127.0.0.1 (Debian's
openssh-server, started here with keys made here), and a bare git repo for experiments."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import dvc, free_port, ran_stages, run

pytestmark = pytest.mark.slow

SSHD = Path("/usr/sbin/sshd")


def cached_files(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in (root / ".dvc/cache").rglob("*") if path.is_file()}


def share(root: Path, name: str, url: str, *options: tuple[str, str]) -> None:
    """Make `url` the repo's default DVC remote, committed so that a clone knows it."""
    dvc(["remote", "add", "-d", name, url], root)
    for option, value in options:
        dvc(["remote", "modify", name, option, value], root)
    run(["git", "commit", "-qam", f"share results on {name}"], root)


def test_a_teammate_pulls_data_and_models_instead_of_retraining(scratch, tmp_path):
    share(scratch, "team", str(tmp_path / "store"))
    dvc(["push"], scratch)
    teammate = tmp_path / "teammate"
    run(["git", "clone", "-q", str(scratch), str(teammate)], tmp_path)
    assert not list(teammate.glob("data/models/**/*.skops"))  # no models before the pull
    dvc(["pull"], teammate)
    assert json.loads(dvc(["status", "--json"], teammate).stdout) == {}
    result = dvc(["repro"], teammate)
    assert ran_stages(result.stdout) == [] and "up to date" in result.stdout
    assert run(["git", "status", "--porcelain"], teammate).stdout == ""


@dataclass
class SshServer:
    port: int
    key: Path  # a key the server accepts
    stranger: Path  # a key it does not
    home: Path  # a HOME whose .ssh/known_hosts knows the server's host key

    def url(self, folder: Path) -> str:
        return f"ssh://{getpass.getuser()}@127.0.0.1:{self.port}{folder}"


def keygen(path: Path) -> Path:
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], path.parent)
    return path


@pytest.fixture
def ssh_server(tmp_path) -> Iterator[SshServer]:
    """Debian's sshd on a free port of 127.0.0.1, for the current user, with keys made here."""
    if not SSHD.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{SSHD} is missing: .ci/run installs Debian's openssh-server")
        pytest.skip(f"{SSHD} is missing (apt-get install openssh-server)")
    folder = tmp_path / "sshd"
    folder.mkdir()
    host_key, key, stranger = (keygen(folder / name) for name in ("host_key", "user_key", "stranger_key"))
    shutil.copy(key.with_suffix(".pub"), folder / "authorized_keys")
    port = free_port()
    config = folder / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nAuthorizedKeysFile {folder}/authorized_keys\n"
        "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        f"StrictModes no\nPermitRootLogin prohibit-password\nPidFile {folder}/sshd.pid\n"
        "Subsystem sftp internal-sftp\n"
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation folder, when run as root
    with open(folder / "sshd.log", "w") as log:
        server = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stderr=log)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert server.poll() is None, (folder / "sshd.log").read_text()
            time.sleep(0.1)
        else:
            pytest.fail(f"sshd did not listen on port {port} within 30 s:\n{(folder / 'sshd.log').read_text()}")
        home = tmp_path / "home"
        (home / ".ssh").mkdir(parents=True)
        host_type, host_public = host_key.with_suffix(".pub").read_text().split()[:2]
        (home / ".ssh/known_hosts").write_text(f"[127.0.0.1]:{port} {host_type} {host_public}\n")
        yield SshServer(port, key, stranger, home)
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_an_ssh_remote_shares_results_with_a_teammate(scratch, tmp_path, ssh_server):
    store = tmp_path / "ssh-store"
    share(scratch, "ssh", ssh_server.url(store), ("keyfile", str(ssh_server.key)))
    dvc(["push"], scratch, HOME=str(ssh_server.home))
    assert any(store.rglob("*"))  # the files are on the server's side
    teammate = tmp_path / "teammate"
    run(["git", "clone", "-q", str(scratch), str(teammate)], tmp_path)
    dvc(["pull"], teammate, HOME=str(ssh_server.home))
    assert json.loads(dvc(["status", "--json"], teammate).stdout) == {}
    assert ran_stages(dvc(["repro"], teammate).stdout) == []


def test_an_unreachable_or_refusing_ssh_remote_fails_clearly_and_loses_nothing(scratch, tmp_path, ssh_server):
    before = cached_files(scratch)
    closed = free_port()
    share(scratch, "gone", f"ssh://{getpass.getuser()}@127.0.0.1:{closed}{tmp_path}/store")
    dvc(["remote", "modify", "gone", "keyfile", str(ssh_server.key)], scratch)
    unreachable = dvc(["push", "-r", "gone"], scratch, check=False, HOME=str(ssh_server.home))
    assert unreachable.returncode != 0 and "ERROR" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr

    dvc(["remote", "add", "locked", ssh_server.url(tmp_path / "locked-store")], scratch)
    dvc(["remote", "modify", "locked", "keyfile", str(ssh_server.stranger)], scratch)
    refused = dvc(["push", "-r", "locked"], scratch, check=False, HOME=str(ssh_server.home))
    assert refused.returncode != 0 and "ERROR" in refused.stderr and "Traceback" not in refused.stderr
    assert "Permission denied" in refused.stderr or "permission denied" in refused.stderr.lower()

    assert cached_files(scratch) == before
    assert json.loads(dvc(["status", "--json"], scratch).stdout) == {}


def experiments(root: Path) -> dict[str, float]:
    """Each experiment's name and its multilabel KNN's test F1, as `dvc exp show` reports them."""
    found = {}
    for commit in json.loads(dvc(["exp", "show", "--json"], root).stdout):
        for experiment in commit.get("experiments") or []:
            for revision in experiment["revs"]:
                metrics = revision["data"]["metrics"]["reports/metrics/test.json"]["data"]
                found[revision["name"]] = metrics["multilabel"]["knn"]["test"]["f1_macro"]
    return found


def test_experiments_travel_through_a_bare_git_remote(scratch, tmp_path):
    share(scratch, "team", str(tmp_path / "store"))
    origin = tmp_path / "origin.git"
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], tmp_path)
    run(["git", "remote", "add", "origin", str(origin)], scratch)
    run(["git", "push", "-q", "origin", "main"], scratch)
    dvc(["exp", "run", "-n", "knn-3", "-S", "multilabel.knn.n_neighbors=3"], scratch)
    dvc(["exp", "push", "origin", "knn-3"], scratch)  # the experiment's commit, and its outputs to the DVC remote

    teammate = tmp_path / "teammate"
    run(["git", "clone", "-q", str(origin), str(teammate)], tmp_path)
    dvc(["exp", "pull", "origin", "knn-3"], teammate)
    shared = experiments(scratch)
    assert set(shared) == {"knn-3"} and experiments(teammate) == shared
    dvc(["exp", "apply", "knn-3"], teammate)
    dvc(["pull"], teammate)
    assert json.loads(dvc(["status", "--json"], teammate).stdout) == {}  # its models came along, nothing to retrain
