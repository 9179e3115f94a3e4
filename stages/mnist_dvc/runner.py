"""How every stage runs: `--help`, the numeric profile checked, workers from the environment, user errors as one line.

The worker count reaches scikit-learn through joblib's `parallel_config`, not through the estimators' `n_jobs`:
an estimator keeps its `n_jobs` and skops saves it, so passing it would make the model files depend on the machine.
The workers are threads: the heavy steps (libsvm, tree building, SGD epochs, BLAS, KNN search) release the GIL, and
a pool of processes would first spend 2-3 s importing scikit-learn in each worker, more than a whole stage's
parallel work on the sample (measured: train_binary 7.9 s with processes, 5.6 s with threads).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from joblib import parallel_config
from threadpoolctl import threadpool_limits

from mnist_dvc import numeric_profile

JOBS_VARIABLE = "MNIST_DVC_JOBS"


class UserError(Exception):
    """A mistake in params, data, model files or the environment: reported as one line, no traceback."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def n_jobs() -> int:
    """Worker threads for forests, cross-validation and KNN: `$MNIST_DVC_JOBS`, else every available core.

    Where the work runs never changes a result, so this is not a param: changing it reruns nothing.
    """
    cores = available_cores()
    value = os.environ.get(JOBS_VARIABLE, "").strip()
    if not value:
        return cores
    if not value.isdigit() or int(value) < 1:
        raise UserError(f"{JOBS_VARIABLE}={value!r}: expected a whole number of workers, at least 1")
    if int(value) > cores:
        log(f"{JOBS_VARIABLE}={value}, but only {cores} cores are available: using {cores}")
    return min(int(value), cores)


@contextmanager
def refused_by_estimator(key: str) -> Iterator[None]:
    """A value scikit-learn refuses on this data (what the stages' own checks do not foresee): name the params."""
    try:
        yield
    except ValueError as error:
        reason = str(error).splitlines()[0]
        raise UserError(f"params.yaml: {key}: scikit-learn refused it on this data ({reason})") from None


def run_stage(main: Callable[[], None], description: str) -> None:
    """Entry point of every stage: `--help`, then `main()` under the numeric profile with `n_jobs()` workers.

    The profile was applied when the stage imported `numeric_profile`, before numpy loaded; here, with every library
    loaded, the stage says in one line if it is not in force. BLAS and OpenMP keep one thread in this process and so
    in its worker threads. A user error ends the stage with one line and exit code 1.
    """
    argparse.ArgumentParser(description=description).parse_args()
    try:
        if numeric_profile.STATUS.error:
            raise UserError(numeric_profile.STATUS.error)
        with threadpool_limits(limits=1), parallel_config(backend="threading", n_jobs=n_jobs()):
            for line in numeric_profile.report(numeric_profile.STATUS):
                log(line)
            main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
