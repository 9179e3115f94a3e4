"""How every stage runs: `--help`, the numeric profile checked, the stage's workers, user errors as one line."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from joblib import parallel_config
from sklearn.utils._param_validation import InvalidParameterError  # scikit-learn exports it nowhere else
from threadpoolctl import threadpool_limits

from mnist_dvc.files.disk import check_inputs_unchanged, watch_inputs
from mnist_dvc.runtime import numeric_profile
from mnist_dvc.runtime.messages import log
from mnist_dvc.study.errors import UserError

DEBUG_VARIABLE = "MNIST_DVC_DEBUG"  # set to 1: a user error shows its traceback too


@contextmanager
def refused_by_estimator(key: str) -> Iterator[None]:
    """A param value scikit-learn's own validation refuses (what the schema does not foresee): name the params.

    Only scikit-learn's parameter validation, not any ValueError: one from a fit or a predict on bad data or from
    the pipeline's own code is a bug, and keeps its traceback.
    """
    try:
        yield
    except InvalidParameterError as error:
        reason = str(error).splitlines()[0]
        raise UserError(f"params.yaml: {key}: scikit-learn refused it ({reason})") from error


def run_stage(
    main: Callable[..., None],
    description: str,
    workers: Callable[[], AbstractContextManager[None]] | None = None,
    arguments: dict[str, str] | None = None,
) -> None:
    """Entry point of every stage: `--help`, then `main()` under the numeric profile, on the stage's workers.

    `arguments`: the stage's positional arguments (name -> help), passed to `main` by name: a `foreach` stage of
    `dvc.yaml` names its item on the command line.

    The profile was applied when the stage imported `numeric_profile`, before numpy loaded; here, with every library
    loaded, the stage says in one line if it is not in force. BLAS and OpenMP keep one thread in this process and so
    in its worker threads. `workers` is the block the stage's joblib work runs in (`parallel.workers.stage_workers`);
    a stage without it runs in its own thread only, and so never connects to a cluster. A user error ends the stage
    with one line and exit code 1 (and, with `MNIST_DVC_DEBUG=1`, the traceback behind it first); any other exception
    is a bug and shows its traceback.
    """
    parser = argparse.ArgumentParser(description=description)
    for name, help_text in (arguments or {}).items():
        parser.add_argument(name, help=help_text)
    options = vars(parser.parse_args())
    watch_inputs()
    try:
        if numeric_profile.STATUS.error:
            raise UserError(numeric_profile.STATUS.error)
        with threadpool_limits(limits=1):
            for line in numeric_profile.report(numeric_profile.STATUS):
                log(line)
            with workers() if workers else parallel_config(backend="sequential"):
                main(**options)
            check_inputs_unchanged()  # after the last write too
    except UserError as error:
        if os.environ.get(DEBUG_VARIABLE, "").strip() not in ("", "0"):
            traceback.print_exception(error)  # what led to the message, causes included
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
