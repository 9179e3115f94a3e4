"""The stages' work on a Dask cluster: a scheduler and workers started here as real processes on 127.0.0.1."""

from __future__ import annotations

import copy
import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.decomposition import PCA

from conftest import ROOT, dask_cluster, dvc, free_port, run, run_until, stages_with_parallel_work
from mnist_dvc.parallel import cluster
from mnist_dvc.parallel.cluster import SCHEDULER_VARIABLE, package_archive, refusal, with_aligned_arrays


def misaligned(array: np.ndarray) -> np.ndarray:
    """A copy of `array` one byte off an aligned address, in its memory layout, as Dask may hand it to a worker."""
    buffer = np.empty(array.nbytes + 64, np.uint8)
    start = (-buffer.ctypes.data) % 64 + 1
    order = "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"
    copy = np.ndarray(array.shape, array.dtype, buffer=buffer, offset=start, order=order)
    copy[...] = array
    return copy


def test_the_package_archive_is_named_after_its_content(tmp_path):
    name, data = package_archive()
    assert (name, data) == package_archive()  # the same code, the same name and bytes
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = set(archive.namelist())
    package = ROOT / "stages/mnist_dvc"
    modules = [path.relative_to(package).as_posix() for path in package.rglob("*.py")]
    assert names == {f"mnist_dvc/{module}" for module in modules} and "mnist_dvc/files/paths.py" in names
    changed = tmp_path / "mnist_dvc"
    for module in modules:
        (changed / module).parent.mkdir(parents=True, exist_ok=True)
        (changed / module).write_bytes((package / module).read_bytes())
    (changed / "files/paths.py").write_text((changed / "files/paths.py").read_text() + "\n# another version\n")
    assert package_archive(changed)[0] != name


def test_a_worker_that_differs_is_refused_with_what_differs_and_how_to_start_it():
    ours = {"numpy": "2.4.6", "numpy's BLAS": "numpy's openblas (Haswell kernel, 1 thread) 0.3.31"}
    assert refusal("tcp://h:8786", "tcp://w:1", ours, dict(ours)) is None
    theirs = {**ours, "numpy's BLAS": "numpy's openblas (SkylakeX kernel, 1 thread) 0.3.31"}
    assert refusal("tcp://h:8786", "tcp://w:1", ours, theirs) == (
        f"{SCHEDULER_VARIABLE}=tcp://h:8786: worker tcp://w:1 would compute other bytes than this stage (numpy's BLAS "
        "numpy's openblas (SkylakeX kernel, 1 thread) 0.3.31 instead of numpy's openblas (Haswell kernel, 1 thread) "
        "0.3.31): start it as `OPENBLAS_CORETYPE=Haswell NPY_ENABLE_CPU_FEATURES=X86_V3 OPENBLAS_NUM_THREADS=1 "
        "OMP_NUM_THREADS=1 dask worker tcp://h:8786`, in an environment from requirements.txt"
    )


def test_misaligned_arrays_reach_a_job_aligned_and_give_the_local_bytes():
    """A product of misaligned float32 arrays takes other code paths: the reason jobs realign their arguments."""
    features = np.random.default_rng(0).random((500, 784), dtype=np.float32)
    off = misaligned(features)
    assert not off.flags.aligned
    local = PCA(20, svd_solver="covariance_eigh").fit_transform(features)
    realigned = with_aligned_arrays(off)
    assert realigned.flags.aligned and np.array_equal(realigned, features)
    assert PCA(20, svd_solver="covariance_eigh").fit_transform(realigned).tobytes() == local.tobytes()
    assert with_aligned_arrays(features) is features  # an aligned array is not copied

    fitted = PCA(20, svd_solver="covariance_eigh").fit(features)
    arrived = copy.deepcopy(fitted)
    arrived.components_ = misaligned(fitted.components_)
    copied = with_aligned_arrays(arrived)
    assert copied.components_.flags.aligned and copied.components_.flags.f_contiguous  # as scikit-learn made it
    assert copied.transform(features).tobytes() == fitted.transform(features).tobytes()


def test_without_a_cluster_calls_keep_their_arrays():
    features = np.zeros((1000, 784), np.float32)
    calls = [(len, (features,)), (len, (features,))]
    assert cluster.share_common_arrays(calls) is calls


def untouched(root: Path) -> bool:
    """No committed report changed, and every DVC-tracked output is as dvc.lock records it."""
    clean_git = run(["git", "status", "--porcelain"], root).stdout == ""
    return clean_git and json.loads(dvc(["status", "--json"], root).stdout) == {}


@pytest.mark.slow
def test_a_scheduler_that_does_not_answer_is_named_within_a_minute(scratch):
    address = f"tcp://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = run([sys.executable, "stages/train_multilabel.py"], scratch, check=False, **{SCHEDULER_VARIABLE: address})
    assert time.monotonic() - started < 60
    assert result.returncode == 1 and "Traceback" not in result.stderr
    error = result.stderr.splitlines()[-1]
    assert error.startswith(f"error: {SCHEDULER_VARIABLE}={address}: no Dask scheduler answers there (")
    assert error.endswith(f"or unset {SCHEDULER_VARIABLE} to run on this machine")
    assert untouched(scratch)


@pytest.mark.slow
def test_a_worker_without_the_profile_is_refused(tmp_path, scratch):
    with dask_cluster(tmp_path / "cluster", workers=1, OPENBLAS_CORETYPE="Sandybridge") as started:
        (worker,) = started.worker_pids()
        env = {SCHEDULER_VARIABLE: started.address}
        result = run([sys.executable, "stages/train_multilabel.py"], scratch, check=False, **env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    error = result.stderr.splitlines()[-1]
    assert error.startswith(f"error: {SCHEDULER_VARIABLE}={started.address}: worker {worker} would compute other bytes")
    assert "(Sandybridge kernel, 1 thread)" in error
    assert "instead of numpy's openblas (Haswell kernel, 1 thread)" in error
    assert error.endswith(f"dask worker {started.address}`, in an environment from requirements.txt")
    assert untouched(scratch)


@pytest.mark.slow
def test_the_local_cluster_command_prints_an_address_that_answers_and_stops_what_it_started(tmp_path):
    from distributed import Client

    command = [sys.executable, "tools/local_cluster.py", "--workers", "1", "--folder", str(tmp_path / "cluster")]
    # Printed once the workers have joined.
    process = run_until(command, ROOT, f"export {SCHEDULER_VARIABLE}=tcp://127.0.0.1:", timeout=120, new_session=True)
    address = (tmp_path / "cluster/scheduler.json").read_text()
    with Client(json.loads(address)["address"], timeout=20) as client:
        (environment,) = client.run(lambda: {name: os.environ.get(name) for name in ("OPENBLAS_CORETYPE",)}).values()
    assert environment == {"OPENBLAS_CORETYPE": "Haswell"}  # the numeric profile's kernel, as the stages ask
    os.killpg(process.pid, signal.SIGTERM)
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 0, output
    left = subprocess.run(["pgrep", "-f", str(tmp_path / "cluster")], capture_output=True, text=True).stdout
    assert left == ""  # no scheduler or worker outlives the command


def test_the_local_cluster_command_refuses_a_worker_count_below_one():
    result = run([sys.executable, "tools/local_cluster.py", "--workers", "0"], ROOT, check=False)
    assert result.returncode == 2 and "--workers: '0': give a whole number of at least 1" in result.stderr


def lock_outs(path: Path) -> dict[str, str]:
    lock = yaml.safe_load(path.read_text())
    return {f"{stage}:{out['path']}": out["md5"] for stage, entry in lock["stages"].items() for out in entry["outs"]}


@pytest.mark.slow
def test_dvc_repro_on_a_cluster_gives_the_committed_lock_and_runs_the_fits_on_the_workers(tmp_path, scratch):
    """Forced: every stage with parallel work; the others do not connect to the cluster."""
    from distributed import Client

    root = scratch
    with dask_cluster(tmp_path / "cluster", workers=2) as started, Client(started.address) as client:
        client.get_task_stream()  # the scheduler records every task from here on
        dvc(["repro", "-f", "-s", *stages_with_parallel_work()], root, **{SCHEDULER_VARIABLE: started.address})
        tasks = client.get_task_stream()
        workers = set(started.worker_pids())
    assert lock_outs(root / "dvc.lock") == lock_outs(ROOT / "dvc.lock")
    assert run(["git", "status", "--porcelain"], root).stdout == ""
    jobs = [task for task in tasks if task["key"].startswith("batch_of_timed_job_")]
    # Each multiclass model's final fit and CV, train_binary's four jobs, validation and test pieces, HOG chunks.
    assert len(jobs) >= 6 * 2 + 4 + 12
    assert {task["worker"] for task in jobs} == workers  # both workers computed, and nothing else did
    folds = [task for task in tasks if "_fit_and_predict" in task["key"]]  # train_multilabel's cross_val_predict
    assert folds and {task["worker"] for task in folds} <= workers  # scikit-learn's own loops too


@pytest.mark.slow
def test_a_worker_killed_during_train_multiclass_is_survived_with_the_same_bytes(tmp_path, scratch):
    root = scratch
    with dask_cluster(tmp_path / "cluster", workers=2) as started:
        victim, pid = sorted(started.worker_pids().items())[0]
        # Every train_multiclass@<model>, one after the other: killed during the first's jobs.
        command = [sys.executable, "-m", "dvc", "repro", "-f", "-s", "train_multiclass"]
        process = run_until(command, root, "(1 of 2 done)", **{SCHEDULER_VARIABLE: started.address})
        assert process.poll() is None  # killed mid-run, not after
        os.kill(pid, signal.SIGKILL)
        output, _ = process.communicate(timeout=600)
        scheduler_log = (started.folder / "scheduler.log").read_text()
    assert process.returncode == 0, output
    assert f"Remove worker addr: {victim}" in scheduler_log  # the scheduler saw it die mid-run
    committed = lock_outs(ROOT / "dvc.lock")
    reproduced = lock_outs(root / "dvc.lock")
    trained = [key for key in committed if key.startswith("train_multiclass@")]
    assert len(trained) == 12 and {key: reproduced[key] for key in trained} == {key: committed[key] for key in trained}
    assert run(["git", "status", "--porcelain"], root).stdout == ""


@pytest.mark.slow
def test_a_cluster_that_loses_every_worker_stops_the_stage_with_a_message(tmp_path, scratch):
    root = scratch
    with dask_cluster(tmp_path / "cluster", workers=2, nanny=False) as started:
        command = [sys.executable, "stages/train_multiclass.py", "svc_ovo"]
        process = run_until(command, root, "svc_ovo: learns from", **{SCHEDULER_VARIABLE: started.address})
        for worker in started.workers:
            worker.kill()
        killed = time.monotonic()
        output, _ = process.communicate(timeout=180)
    assert time.monotonic() - killed < cluster.NO_WORKER_SECONDS + 30
    assert process.returncode == 1 and "Traceback" not in output
    assert output.splitlines()[-1] == (
        f"error: {SCHEDULER_VARIABLE}={started.address}: the cluster has had no worker (or no scheduler) for "
        f"{cluster.NO_WORKER_SECONDS} s, so the stage stopped and wrote nothing: start workers as "
        f"{cluster.worker_command(started.address)}, and rerun"
    )
    assert untouched(root)
