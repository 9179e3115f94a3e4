"""A stage's parallel work on a Dask cluster: `MNIST_DVC_DASK_SCHEDULER=tcp://host:8786`, through joblib's Dask backend.

The stage process still reads its inputs and writes its outputs; joblib's work (`workers.run_jobs`, and
scikit-learn's own loops: `cross_val_predict`'s folds) goes to the cluster's workers. The results are the bytes a local
run gives, because each job computes alone and every worker computes like the stage: before any work is sent the stage
uploads its own package (workers need only the pinned requirements, not a clone of the repo) and asks every worker
for its numeric profile and library versions, refusing a cluster where one would compute other bytes.

Faults: a scheduler that does not answer is named within `CONNECT_SECONDS`; a worker that dies is survived, as Dask
runs its jobs again elsewhere and can send their inputs again (`share_common_arrays`); a cluster left without any
worker for `NO_WORKER_SECONDS` stops the stage with a message instead of waiting forever.
"""

from __future__ import annotations

import _thread
import copy
import hashlib
import importlib
import io
import os
import sys
import tempfile
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from joblib import effective_n_jobs

from mnist_dvc.files.disk import FIXED_ZIP_TIME
from mnist_dvc.runtime import numeric_profile
from mnist_dvc.runtime.messages import log
from mnist_dvc.study.errors import UserError

SCHEDULER_VARIABLE = "MNIST_DVC_DASK_SCHEDULER"
CONNECT_SECONDS = 20  # to reach the scheduler
WORKER_WAIT_SECONDS = 30  # for a first worker to join
NO_WORKER_SECONDS = 30  # without any worker before the stage gives up
SHARED_ARRAY_BYTES = 1024 * 1024  # a job argument this large goes to every worker once, not with each job
PACKAGE = "mnist_dvc"
PACKAGE_DIR = Path(__file__).resolve().parents[1]

Call = tuple[Callable[..., Any], tuple[Any, ...]]

_client: Any = None  # the connected distributed.Client while a stage's work runs on a cluster


def scheduler_address() -> str | None:
    return os.environ.get(SCHEDULER_VARIABLE, "").strip() or None


def this_worker() -> str:
    """The address of the Dask worker running the caller, or '' outside one."""
    if "distributed" not in sys.modules:
        return ""
    from distributed import get_worker

    try:
        return get_worker().address
    except ValueError:
        return ""


def with_aligned_arrays(value: Any) -> Any:
    """A job's argument as it arrived on a worker, with every numpy array it holds aligned in memory.

    Dask hands a worker the arrays of a message in place, at whatever offset they sit in it, and a product of
    misaligned float32 arrays takes other code paths with other last bits (measured: PCA on data 9 bytes off a
    64-byte boundary gave other components than on aligned data; 4, 8, 16 or 32 bytes off gave the same). An aligned
    array is kept as it is, a misaligned one copied in its own memory layout (C or Fortran order: a product's bits
    depend on it too); any other object (a model) is copied whole, which copies its arrays the same way.
    """
    if isinstance(value, np.ndarray):
        return value if value.flags.aligned else value.copy(order="K")
    if value is None or isinstance(value, (str, bytes, int, float)):
        return value
    return copy.deepcopy(value)


def package_archive(folder: Path = PACKAGE_DIR) -> tuple[str, bytes]:
    """The package as a zip for the workers, named after its content: the same code gives the same name and bytes."""
    digest = hashlib.sha256()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*.py")):
            name, data = path.relative_to(folder).as_posix(), path.read_bytes()
            digest.update(name.encode() + b"\0" + data + b"\0")
            archive.writestr(zipfile.ZipInfo(f"{PACKAGE}/{name}", date_time=FIXED_ZIP_TIME), data)
    return f"{PACKAGE}-{digest.hexdigest()[:16]}.zip", buffer.getvalue()


def load_package(archive_name: str) -> str:
    """On a worker: import the package from the uploaded archive, dropping what an upload of other code had loaded.

    Runs on the workers by value (the stage registers this module with cloudpickle), so it works whatever they have.
    Returns where the package came from.
    """
    archive = next(path for path in sys.path if path.endswith(archive_name))
    loaded = sys.modules.get(PACKAGE)
    if loaded is None or not str(getattr(loaded, "__file__", "")).startswith(archive):
        for name in [name for name in sys.modules if name == PACKAGE or name.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]
        sys.path.remove(archive)
        sys.path.insert(0, archive)
        importlib.invalidate_caches()
        importlib.import_module(PACKAGE)
    return str(sys.modules[PACKAGE].__file__)


def worker_command(address: str) -> str:
    return f"`{numeric_profile.WORKER_ENVIRONMENT} dask worker {address}`, in an environment from requirements.txt"


def refusal(address: str, worker: str, ours: dict[str, str], theirs: dict[str, str]) -> str | None:
    """Why `worker` would compute other bytes than this stage, or None if it would not."""
    differ = [
        f"{key} {theirs.get(key, 'missing')} instead of {value}"
        for key, value in ours.items()
        if theirs.get(key) != value
    ]
    if not differ:
        return None
    return (
        f"{SCHEDULER_VARIABLE}={address}: worker {worker} would compute other bytes than this stage "
        f"({'; '.join(differ)}): start it as {worker_command(address)}"
    )


def _connect(address: str) -> Any:
    from distributed import Client

    try:
        return Client(address, timeout=CONNECT_SECONDS, set_as_default=False)
    except (OSError, TimeoutError, ValueError, TypeError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(
            f"{SCHEDULER_VARIABLE}={address}: no Dask scheduler answers there ({reason}): start one with "
            f"`dask scheduler` and workers with {worker_command(address)}, or unset {SCHEDULER_VARIABLE} to run on "
            "this machine"
        ) from error


def _prepare_workers(client: Any, address: str) -> int:
    """Wait for a worker, upload the package, check every worker computes like this stage; the workers' threads."""
    import cloudpickle
    from distributed.diagnostics.plugin import SchedulerUploadFile, UploadFile

    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT_SECONDS)
    except TimeoutError as error:
        raise UserError(
            f"{SCHEDULER_VARIABLE}={address}: no worker joined the scheduler within {WORKER_WAIT_SECONDS} s: start "
            f"workers as {worker_command(address)}"
        ) from error
    for module in (sys.modules[__name__], numeric_profile):
        cloudpickle.register_pickle_by_value(module)
    try:
        client.get_versions(check=True)
    except ValueError as error:  # Dask's own check: client, scheduler and workers must run the same Dask stack
        reason = " ".join(str(error).split())
        raise UserError(f"{SCHEDULER_VARIABLE}={address}: {reason}: start it with {worker_command(address)}") from error
    # The scheduler unpickles the jobs' graph too, so it gets the package as well.
    name, data = package_archive()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        for plugin in (SchedulerUploadFile(str(path)), UploadFile(str(path))):
            client.register_plugin(plugin, name=name.removesuffix(".zip"))
    client.run_on_scheduler(load_package, name)
    client.run(load_package, name)
    ours = numeric_profile.describe()
    for worker, theirs in sorted(client.run(numeric_profile.describe).items()):
        reason = refusal(address, worker, ours, theirs)
        if reason:
            raise UserError(reason)
    return sum(client.nthreads().values())


def _workers(client: Any) -> int:
    """How many workers the cluster has now; 0 when the scheduler does not answer."""
    try:
        return len(client.nthreads()) if client.status == "running" else 0
    except Exception:  # the scheduler has gone: the client cannot ask it, whatever the error
        return 0


@contextmanager
def _watched(client: Any, address: str) -> Iterator[None]:
    """Stop the stage, with a message, once the cluster has had no worker (or no scheduler) for NO_WORKER_SECONDS.

    Dask would otherwise keep the jobs waiting for a worker forever. The watch interrupts the main thread, which
    waits on joblib; the interrupt is turned into the message here.
    """
    stop, gone = threading.Event(), threading.Event()

    def watch() -> None:
        empty_since: float | None = None
        while not stop.wait(1.0):
            if _workers(client):
                empty_since = None
            elif empty_since is None:
                empty_since = time.monotonic()
            elif time.monotonic() - empty_since > NO_WORKER_SECONDS:
                gone.set()
                _thread.interrupt_main()
                return

    watcher = threading.Thread(target=watch, name="cluster-watch", daemon=True)
    watcher.start()
    try:
        yield
    except (KeyboardInterrupt, TimeoutError) as error:
        # joblib's Dask backend raises TimeoutError when it has found no worker for `wait_for_workers_timeout`.
        if gone.is_set() or (isinstance(error, TimeoutError) and not _workers(client)):
            raise UserError(
                f"{SCHEDULER_VARIABLE}={address}: the cluster has had no worker (or no scheduler) for "
                f"{NO_WORKER_SECONDS} s, so the stage stopped and wrote nothing: start workers as "
                f"{worker_command(address)}, and rerun"
            ) from error
        raise
    finally:
        stop.set()
        watcher.join()


@contextmanager
def connected(address: str) -> Iterator[None]:
    """joblib's work of the block on the cluster at `address`, once its workers are checked."""
    global _client
    import dask
    from joblib import parallel_config

    log(f"{SCHEDULER_VARIABLE}={address}: connecting")
    client = _connect(address)
    try:
        threads = _prepare_workers(client, address)
        _client = client
        log(f"{SCHEDULER_VARIABLE}={address}: {len(client.nthreads())} workers with {threads} threads, all checked")
        if threads == 1:
            log("a single worker thread: joblib runs the jobs in this process, not on the cluster (start more workers)")
        # A job's own inputs (evaluate's models) travel inside its graph on purpose (see share_common_arrays): no
        # warning about graphs of a few hundred MB.
        quiet = {"distributed.admin.large-graph-warning-threshold": "4GiB"}
        dask_backend = parallel_config(backend="dask", client=client, wait_for_workers_timeout=NO_WORKER_SECONDS)
        with _watched(client, address), dask.config.set(quiet), dask_backend:
            yield
    finally:
        _client = None
        client.close()


def shared_array(array: np.ndarray) -> np.ndarray:
    """The task that hands a shared array to the cluster: the array, aligned, on the worker that runs it."""
    return with_aligned_arrays(array)


def share_common_arrays(calls: list[Call]) -> list[Call]:
    """On a cluster, each large array that several calls take sent once, as the result of a task of its own, and the
    calls given its future instead; anything else travels inside its call.

    A worker that needs the array fetches it once from a worker that has it, not once per job. A task, not
    `Client.scatter`: if the worker holding the only copy dies, the scheduler runs the task again, while scattered
    data is lost with it, and so are the jobs that needed it (measured: Dask's memory manager keeps one replica of a
    broadcast array, and killing its holder cancelled the jobs with "lost dependencies").
    """
    if _client is None or effective_n_jobs(None) <= 1:
        return calls  # with a single worker thread, joblib runs the calls here, in the stage: no futures for them
    uses = Counter(identity for _, args in calls for identity in {id(value) for value in args})
    shared: dict[int, Any] = {}

    def share(value: Any) -> Any:
        if not isinstance(value, np.ndarray) or value.nbytes < SHARED_ARRAY_BYTES or uses[id(value)] < 2:
            return value
        if id(value) not in shared:
            shared[id(value)] = _client.submit(shared_array, value, pure=False)
        return shared[id(value)]

    return [(function, tuple(share(value) for value in args)) for function, args in calls]
