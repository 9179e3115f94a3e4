"""How stages run: worker count from the environment, one BLAS thread, user errors as one line."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from conftest import ROOT, run
from mnist_dvc.parallel import workers
from mnist_dvc.parallel.workers import JOBS_VARIABLE
from mnist_dvc.study.errors import UserError


def test_workers_default_to_every_available_core(monkeypatch):
    monkeypatch.delenv(JOBS_VARIABLE, raising=False)
    assert workers.n_jobs() == workers.available_cores()


def test_more_workers_than_cores_are_capped(monkeypatch, capsys):
    monkeypatch.setenv(JOBS_VARIABLE, "32")
    monkeypatch.setattr(workers, "available_cores", lambda: 2)
    assert workers.n_jobs() == 2
    assert f"{JOBS_VARIABLE}=32, but only 2 cores are available: using 2" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", "\u00b2", "\u0663"])
def test_a_bad_worker_count_is_named(monkeypatch, value):
    monkeypatch.setenv(JOBS_VARIABLE, value)
    with pytest.raises(UserError, match=f"{JOBS_VARIABLE}={value!r}: expected a whole number of workers, at least 1"):
        workers.n_jobs()


STAGE = """
import json, os, sys
sys.path.insert(0, "stages")
import mnist_dvc.runtime.numeric_profile
import numpy
from joblib import Parallel, delayed
from mnist_dvc.study.errors import UserError
from mnist_dvc.parallel.workers import stage_workers
from mnist_dvc.runtime.runner import run_stage

def pools():
    from threadpoolctl import threadpool_info
    return os.getpid(), sorted({pool["num_threads"] for pool in threadpool_info()})

def main():
    workers = Parallel(n_jobs=2)(delayed(pools)() for _ in range(2))
    print(json.dumps({"stage": pools(), "workers": workers}))
    if FAIL:
        raise UserError("params.yaml: something is wrong")

FAIL = False
run_stage(main, "a test stage", workers=stage_workers)
"""


def test_a_stage_runs_its_workers_as_threads_with_one_blas_thread():
    result = run([sys.executable, "-c", STAGE], ROOT)
    threads = json.loads(result.stdout)
    stage_pid = threads["stage"][0]
    assert threads == {"stage": [stage_pid, [1]], "workers": [[stage_pid, [1]], [stage_pid, [1]]]}


def test_a_user_error_is_one_line_and_exit_code_1():
    failing = STAGE.replace("FAIL = False", "FAIL = True")
    result = run([sys.executable, "-c", failing], ROOT, check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == "error: params.yaml: something is wrong"


def test_only_scikit_learns_parameter_validation_becomes_a_param_message():
    from sklearn.linear_model import SGDClassifier

    from mnist_dvc.runtime.runner import refused_by_estimator

    features, labels = np.zeros((4, 2)), np.array([0, 1, 0, 1])
    message = r"^params.yaml: binary.sgd: scikit-learn refused it \(The 'alpha'"
    with pytest.raises(UserError, match=message) as raised, refused_by_estimator("binary.sgd"):
        SGDClassifier(alpha=-1.0).fit(features, labels)
    assert raised.value.__cause__ is not None  # kept, for MNIST_DVC_DEBUG=1
    with pytest.raises(ValueError, match="a bug of our own"), refused_by_estimator("binary.sgd"):
        raise ValueError("a bug of our own")  # not the user's param: it keeps its traceback


def test_debug_shows_the_traceback_behind_a_one_line_message():
    failing = STAGE.replace("FAIL = False", "FAIL = True")
    quiet = run([sys.executable, "-c", failing], ROOT, check=False)
    loud = run([sys.executable, "-c", failing], ROOT, check=False, MNIST_DVC_DEBUG="1")
    assert "Traceback" not in quiet.stderr
    assert loud.returncode == 1 and "Traceback (most recent call last)" in loud.stderr
    assert loud.stderr.splitlines()[-1] == "error: params.yaml: something is wrong"
