"""Whole fits and predictions of a stage spread over its workers, one task each.

Most of the heavy steps run on one core (an SVC's fit and predict, a KNN's search with BLAS pinned to one thread), so
a stage with several models keeps every core busy by running independent tasks side by side rather than parallel
loops inside one model. Each task computes alone from its arguments, so the results do not depend on the worker
count or the order the tasks finish in, only the time does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from joblib import Parallel, delayed

Task = tuple[Callable[..., Any], tuple[Any, ...]]


def run_tasks(tasks: list[Task]) -> list[Any]:
    """Each `(function, args)` in one of the stage's workers; results in the order of `tasks`.

    Tasks start in the order given, one at a time as workers free up: list the longest first, so that no worker
    is left with a long task at the end while the others idle. No n_jobs here: the stage's `parallel_config`
    decides the workers (threads; one means in the calling thread, in order). Inside a worker, joblib runs nested
    loops serially.
    """
    return Parallel(batch_size=1)(delayed(function)(*args) for function, args in tasks)
