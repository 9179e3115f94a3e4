"""Where a stage's parallel work runs: threads of its own process, or the workers of a Dask cluster.

Most of the heavy steps run on one core (an SVC's fit and predict, a KNN's search with BLAS pinned to one thread), so
a stage keeps its workers busy by running independent jobs side by side: whole fits, CV folds, scorings of the test
set, and scikit-learn's own loops (`cross_val_predict`'s folds). Each job computes alone from its
arguments, so the results depend neither on the worker count nor on the machines nor on the order jobs finish in;
only the time does. That is why where the work runs is an environment variable, never a param.

The workers reach joblib, and through it scikit-learn, with `parallel_config`, never through an estimator's
`n_jobs`: skops would save that in the model files, and they would depend on the machine. Locally the workers are
threads: the heavy steps release Python's lock, and a pool of processes would first import scikit-learn in each
worker, which costs more than a whole stage's parallel work on the sample (measured: docs/design.md).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from joblib import Parallel, cpu_count, delayed, effective_n_jobs, parallel_config

from mnist_dvc.parallel import cluster
from mnist_dvc.runtime.messages import log
from mnist_dvc.study.errors import UserError
from mnist_dvc.study.features import IMAGES_PER_CHUNK, fill_rows

JOBS_VARIABLE = "MNIST_DVC_JOBS"

Job = tuple[str, Callable[..., Any], tuple[Any, ...]]  # a name for the progress lines, a function, its arguments


def available_cores() -> int:
    """The cores this process may use: joblib's count honours the CPU affinity and a container's CPU quota."""
    return cpu_count()


def n_jobs() -> int:
    """Local worker threads: `$MNIST_DVC_JOBS`, else every available core."""
    cores = available_cores()
    value = os.environ.get(JOBS_VARIABLE, "").strip()
    if not value:
        return cores
    if not (value.isascii() and value.isdigit()) or int(value) < 1:  # isdigit alone takes superscripts
        raise UserError(f"{JOBS_VARIABLE}={value!r}: expected a whole number of workers, at least 1")
    if int(value) > cores:
        log(f"{JOBS_VARIABLE}={value}, but only {cores} cores are available: using {cores}")
    return min(int(value), cores)


def workers_at_once() -> int:
    """How many jobs run at once in this process: on a cluster, whatever it has, the stage holds the results one
    at a time; locally, one per worker thread."""
    return 1 if cluster.scheduler_address() else n_jobs()


@contextmanager
def stage_workers() -> Iterator[None]:
    """The block's joblib work on the stage's workers: the Dask cluster `$MNIST_DVC_DASK_SCHEDULER` names, else
    `n_jobs()` threads of this process."""
    address = cluster.scheduler_address()
    if address is None:
        with parallel_config(backend="threading", n_jobs=n_jobs()):
            yield
    else:
        with cluster.connected(address):
            yield


def run_jobs(jobs: list[Job]) -> list[Any]:
    """Each job on one of the stage's workers, a progress line as each ends; the results in the order of `jobs`.

    Jobs start in the order given, one at a time as workers free up: list the longest first, so that no worker is
    left with a long job at the end while the others idle. No n_jobs here: `stage_workers` decides the workers (one
    thread means in order, in the calling thread). Inside a job, joblib runs nested loops serially.
    """
    calls = cluster.share_common_arrays([(function, args) for _, function, args in jobs])
    results: list[Any] = [None] * len(jobs)
    # Each job's arguments go as one tuple: joblib's Dask backend would send a large argument of its own to a single
    # worker, and a job whose data died with that worker could not run again elsewhere.
    outputs = Parallel(batch_size=1, return_as="generator_unordered")(
        delayed(timed_job)(index, function, args) for index, (function, args) in enumerate(calls)
    )
    for done, (index, result, seconds, worker) in enumerate(outputs, start=1):
        results[index] = result
        where = f" on {worker}" if worker else ""
        log(f"{jobs[index][0]}: {seconds:.1f} s{where} ({done} of {len(jobs)} done)")
    return results


def map_pieces(name: str, function: Callable[[np.ndarray], np.ndarray], rows: np.ndarray) -> np.ndarray:
    """`function` on `rows` cut into one piece per worker, the results joined in order: for work where each row's
    result is its own (a fitted model's predictions), so the pieces change no result, only how long it takes."""
    pieces = np.array_split(np.arange(len(rows)), min(effective_n_jobs(), len(rows)))
    jobs: list[Job] = [
        (f"{name} {piece[0] + 1:,}-{piece[-1] + 1:,} of {len(rows):,}", function, (rows[piece[0] : piece[-1] + 1],))
        for piece in pieces
    ]
    return np.concatenate(run_jobs(jobs))


def map_rows(function: Callable[[np.ndarray], np.ndarray], rows: np.ndarray) -> np.ndarray:
    """`function` on chunks of IMAGES_PER_CHUNK rows on the stage's workers, the results' rows in order in one array:
    for a model's per-image steps (deskewing, HOG), where each row's result is its own, so the chunks change no result,
    only how long it takes. A few results wait at a time, not all of them, and no progress line each."""
    starts = range(0, len(rows), IMAGES_PER_CHUNK)
    outputs = Parallel(return_as="generator")(
        delayed(timed_job)(index, function, (rows[start : start + IMAGES_PER_CHUNK],))
        for index, start in enumerate(starts)
    )
    return fill_rows(len(rows), (result for _, result, _, _ in outputs))


def timed_job(index: int, function: Callable[..., Any], args: tuple[Any, ...]) -> tuple[int, Any, float, str]:
    """One job, wherever it runs: its index, its result, its seconds, and the Dask worker it ran on ('' locally).

    The job's own loops (a forest's trees, the one-vs-rest SVCs) run in it, serially, as in a local worker thread:
    in a Dask worker, joblib would send them to the cluster as tasks of their own, and the worker would run more
    tasks at once than it has threads.
    """
    started = time.perf_counter()
    worker = cluster.this_worker()
    if worker:
        args = tuple(cluster.with_aligned_arrays(value) for value in args)
    with parallel_config(backend="sequential"):
        result = function(*args)
    return index, result, time.perf_counter() - started, worker
