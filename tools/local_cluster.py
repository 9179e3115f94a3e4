"""Start a Dask scheduler and workers on 127.0.0.1, as real processes, to try the stages on a cluster without one.

The workers get the numeric profile's environment (one BLAS thread, the pinned kernel), as `docs/scale-out.md` asks
of any worker. Usage: `python tools/local_cluster.py [--workers N] [--folder DIR]`; it prints the address to put in
`MNIST_DVC_DASK_SCHEDULER` and runs until Ctrl-C, then stops every process it started.
"""

# ruff: noqa: E402  (the launching environment is read before the numeric profile changes it)
from __future__ import annotations

import os

# The environment as the user set it: importing the numeric profile (below) applies it to this process's environment.
LAUNCH_ENVIRONMENT = dict(os.environ)

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stages"))
from mnist_dvc.runtime.numeric_profile import WORKER_ENVIRONMENT

from project_copy import BIN, command_env

PROFILE_ENVIRONMENT = dict(item.split("=") for item in WORKER_ENVIRONMENT.split())
START_SECONDS = 60  # for the scheduler's address file, and then for every worker to join


@dataclass
class DaskCluster:
    """A Dask scheduler and workers started as real processes on 127.0.0.1."""

    address: str
    scheduler: subprocess.Popen
    workers: list[subprocess.Popen]
    folder: Path

    def worker_pids(self) -> dict[str, int]:
        """Each worker's address and the pid of the process that computes (the nanny's child)."""
        from distributed import Client

        with Client(self.address, timeout=20) as client:
            return client.run(os.getpid)

    def stop(self) -> None:
        for process in [*self.workers, self.scheduler]:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in [*self.workers, self.scheduler]:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def start_process(args: list[str], folder: Path, log: str, env: Mapping[str, str]) -> subprocess.Popen:
    """`args` in a process group of its own (stopped with its children), its output in `folder / log`."""
    with open(folder / log, "w") as output:
        return subprocess.Popen(
            args, cwd=folder, env=dict(env), stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )


def start_worker(address: str, folder: Path, name: str, env: Mapping[str, str], nanny: bool = True) -> subprocess.Popen:
    """`dask worker` in a folder of its own, outside any copy of the repo, with one thread."""
    (folder / name).mkdir(parents=True, exist_ok=True)
    args = [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--no-dashboard", "--name", name]
    args += ["--local-directory", str(folder / name)] + ([] if nanny else ["--no-nanny"])
    return start_process(args, folder / name, "worker.log", env)


def scheduler_address(scheduler: subprocess.Popen, folder: Path, scheduler_file: Path) -> str:
    """The address the scheduler writes into its file once it listens."""
    deadline = time.monotonic() + START_SECONDS
    while True:
        if scheduler.poll() is not None:
            raise RuntimeError(f"the scheduler stopped:\n{(folder / 'scheduler.log').read_text()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no scheduler file after {START_SECONDS} s:\n{(folder / 'scheduler.log').read_text()}")
        try:  # the scheduler writes the file in place: it may be there but not whole yet
            return json.loads(scheduler_file.read_text())["address"]
        except (FileNotFoundError, json.JSONDecodeError):
            time.sleep(0.1)


@contextmanager
def dask_cluster(
    folder: Path, workers: int = 2, nanny: bool = True, base_env: Mapping[str, str] | None = None, **worker_env: str
) -> Iterator[DaskCluster]:
    """A scheduler on a free port of 127.0.0.1 and `workers` single-thread workers with the numeric profile's
    environment (`worker_env` changes it), all real processes started from `base_env` (default: the environment this
    process was started with), stopped on exit."""
    from distributed import Client

    env = command_env(LAUNCH_ENVIRONMENT if base_env is None else base_env)
    folder.mkdir(parents=True, exist_ok=True)
    scheduler_file = folder / "scheduler.json"
    args = [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"]
    scheduler = start_process([*args, "--scheduler-file", str(scheduler_file)], folder, "scheduler.log", env)
    cluster = DaskCluster("", scheduler, [], folder)
    try:
        cluster.address = scheduler_address(scheduler, folder, scheduler_file)
        worker_env = {**env, **PROFILE_ENVIRONMENT, **worker_env}
        cluster.workers = [
            start_worker(cluster.address, folder, f"worker-{i}", worker_env, nanny=nanny) for i in range(workers)
        ]
        with Client(cluster.address, timeout=30) as client:
            client.wait_for_workers(workers, timeout=START_SECONDS)
        yield cluster
    finally:
        cluster.stop()


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of at least 1")
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=positive, default=2, help="single-thread workers to start (default 2)")
    parser.add_argument("--folder", type=Path, help="for the logs and the workers' files (default: a temp folder)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop as on Ctrl-C: the cluster is stopped on the way
    with tempfile.TemporaryDirectory(prefix="local-cluster-") as temp:
        try:
            with dask_cluster(args.folder or Path(temp), args.workers) as cluster:
                print(f"export MNIST_DVC_DASK_SCHEDULER={cluster.address}", flush=True)
                print(f"{args.workers} workers; logs in {cluster.folder}; Ctrl-C stops them", file=sys.stderr)
                while True:
                    time.sleep(3600)
        except KeyboardInterrupt:
            return 0
        except (OSError, RuntimeError, TimeoutError) as error:
            print(f"error: cannot start the cluster: {error}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
