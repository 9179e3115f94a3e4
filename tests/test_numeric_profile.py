"""The numeric profile: where it applies, what it sets, what it overrides, and that stages and their workers run it."""

from __future__ import annotations

from mnist_dvc.runtime.numeric_profile import Blas, apply, cpu_flags, differences, why_not_applicable

import ast
import json
import platform
import sys
from pathlib import Path

import pytest

from conftest import ROOT, run
from mnist_dvc.runtime import numeric_profile

X86_64_V3 = "fpu sse sse2 ssse3 sse4_1 sse4_2 popcnt avx avx2 fma bmi1 bmi2 abm f16c movbe"
VARIABLE, NATIVE = numeric_profile.PROFILE_VARIABLE, numeric_profile.NATIVE
ON_X86_64_LINUX = platform.system() == "Linux" and platform.machine() == "x86_64"
needs_x86_64_v3 = pytest.mark.skipif(
    not ON_X86_64_LINUX or why_not_applicable("Linux", "x86_64", cpu_flags()) is not None,
    reason="the profile applies on Linux x86-64 CPUs with x86-64-v3 only; this machine runs its own kernels",
)


def cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nvendor_id\t: Made-up\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    return path


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    assert cpu_flags(cpuinfo(tmp_path, "sse2 avx2 fma")) == {"sse2", "avx2", "fma"}
    assert cpu_flags(tmp_path / "missing") == set()


def test_the_profile_needs_linux_on_x86_64_with_every_v3_feature():
    assert why_not_applicable("Linux", "x86_64", set(X86_64_V3.split())) is None
    assert why_not_applicable("Linux", "x86_64", set(X86_64_V3.split()) - {"avx2", "fma"}) == (
        "this CPU lacks avx2, fma of x86-64-v3"
    )
    assert why_not_applicable("Darwin", "arm64", set()) == "it needs Linux on x86-64, this is Darwin on arm64"


@pytest.mark.skipif(not ON_X86_64_LINUX, reason="the profile applies on Linux x86-64 only")
def test_the_profile_overrides_a_forced_kernel_and_numpy_features(tmp_path):
    environ = {"OPENBLAS_CORETYPE": "SkylakeX", "NPY_DISABLE_CPU_FEATURES": "X86_V4", "OMP_NUM_THREADS": "8"}
    status = apply(environ, cpuinfo(tmp_path, X86_64_V3))
    assert status.applied and status.replaced == ("OPENBLAS_CORETYPE=SkylakeX", "NPY_DISABLE_CPU_FEATURES=X86_V4")
    assert environ == {
        "OPENBLAS_CORETYPE": "Haswell",
        "NPY_ENABLE_CPU_FEATURES": "X86_V3",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "BLIS_NUM_THREADS": "1",
    }


@pytest.mark.skipif(not ON_X86_64_LINUX, reason="the profile applies on Linux x86-64 only")
def test_the_profiles_own_values_are_not_reported_as_replaced(tmp_path):
    environ = {"OPENBLAS_CORETYPE": "haswell", "NPY_ENABLE_CPU_FEATURES": "X86_V3"}
    assert apply(environ, cpuinfo(tmp_path, X86_64_V3)).replaced == ()


def test_without_avx2_nothing_is_forced(tmp_path):
    environ = {"OPENBLAS_CORETYPE": "Prescott"}
    status = apply(environ, cpuinfo(tmp_path, X86_64_V3.replace(" avx2", "")))
    assert not status.applied and status.error is None
    assert environ["OPENBLAS_CORETYPE"] == "Prescott" and "NPY_ENABLE_CPU_FEATURES" not in environ
    assert environ["OPENBLAS_NUM_THREADS"] == "1"  # one thread in every mode


def test_native_leaves_the_kernel_to_the_machine(tmp_path):
    environ = {VARIABLE: NATIVE, "NPY_DISABLE_CPU_FEATURES": "X86_V4"}
    status = apply(environ, cpuinfo(tmp_path, X86_64_V3))
    assert not status.applied and status.reason == f"{VARIABLE}={NATIVE}"
    assert "OPENBLAS_CORETYPE" not in environ and environ["NPY_DISABLE_CPU_FEATURES"] == "X86_V4"


def test_an_unknown_profile_is_a_user_error(tmp_path):
    status = apply({VARIABLE: "fast"}, cpuinfo(tmp_path, X86_64_V3))
    assert status.error == (f"{VARIABLE}='fast': expected 'native' (this CPU's own kernels) or unset (the profile)")


def test_differences_name_each_library_and_numpy():
    haswell = Blas("numpy", "openblas", "Haswell", 1)
    assert differences([haswell, Blas("scipy", "openblas", "Haswell", 1)], ["X86_V3"]) == []
    found = differences([haswell, Blas("scipy", "openblas", "SkylakeX", 2)], ["X86_V3", "X86_V4", "AVX512_ICL"])
    assert found == [
        "scipy's openblas (SkylakeX kernel, 2 threads) instead of Haswell, 1 thread",
        "numpy dispatches to X86_V4, AVX512_ICL beyond X86_V3",
    ]
    assert differences([Blas("numpy", "mkl", None, 1)], []) == [
        "numpy's mkl (unknown kernel, 1 thread) instead of Haswell, 1 thread"
    ]


def first_import(script: Path) -> str:
    """The first module a script imports, after `from __future__`."""
    for node in ast.parse(script.read_text()).body:
        if isinstance(node, ast.Import):
            return node.names[0].name
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            return node.module or ""
    return ""


@pytest.mark.parametrize("script", sorted((ROOT / "stages").glob("*.py")), ids=lambda path: path.stem)
def test_every_stage_imports_the_profile_before_anything_else(script):
    assert first_import(script) == "mnist_dvc.runtime.numeric_profile"


# A stage's view of its own numeric profile, from its main thread and from its worker threads.
PROBE = """
import json, sys
sys.path.insert(0, "stages")
import mnist_dvc.runtime.numeric_profile
from joblib import Parallel, delayed
from mnist_dvc.runtime.numeric_profile import loaded_blas, numpy_dispatch
from mnist_dvc.parallel.workers import stage_workers
from mnist_dvc.runtime.runner import run_stage
import scipy.linalg

def seen():
    return sorted({(blas.kernel, blas.threads) for blas in loaded_blas()}), numpy_dispatch()

def main():
    print(json.dumps({"stage": seen(), "workers": Parallel(n_jobs=2)(delayed(seen)() for _ in range(2))}))

run_stage(main, "probe", workers=stage_workers)
"""


def machine_kernel(**env: str | None) -> str:
    """The kernel OpenBLAS picks in a process that does not apply the profile."""
    probe = "import numpy, threadpoolctl; print(threadpoolctl.threadpool_info()[0]['architecture'])"
    return run([sys.executable, "-c", probe], ROOT, **env).stdout.strip()


@needs_x86_64_v3
def test_a_stage_and_its_workers_run_the_profile_whatever_the_environment_forces():
    forced = {"OPENBLAS_CORETYPE": "Sandybridge", "NPY_DISABLE_CPU_FEATURES": "X86_V4"}
    assert machine_kernel(**forced) == "Sandybridge"  # without the profile, the variable would take effect
    result = run([sys.executable, "-c", PROBE], ROOT, **forced)
    profile = [[["Haswell", 1]], ["X86_V3"]]
    assert json.loads(result.stdout) == {"stage": profile, "workers": [profile, profile]}
    assert result.stderr.splitlines()[0].endswith(
        "numeric profile: OPENBLAS_CORETYPE=Sandybridge, NPY_DISABLE_CPU_FEATURES=X86_V4 replaced by "
        "OPENBLAS_CORETYPE=Haswell NPY_ENABLE_CPU_FEATURES=X86_V3 (set MNIST_DVC_NUMERIC_PROFILE=native to keep "
        "your own)"
    )


@needs_x86_64_v3
def test_a_stage_says_nothing_when_the_profile_holds():
    result = run([sys.executable, "-c", PROBE], ROOT, OPENBLAS_CORETYPE=None, NPY_ENABLE_CPU_FEATURES=None)
    assert result.stderr == ""


@needs_x86_64_v3
def test_native_runs_the_machines_own_kernel_and_says_so():
    kernel = machine_kernel(OPENBLAS_CORETYPE=None)
    result = run(
        [sys.executable, "-c", PROBE],
        ROOT,
        OPENBLAS_CORETYPE=None,
        **{VARIABLE: NATIVE},
    )
    assert json.loads(result.stdout)["stage"][0] == [[kernel, 1]]
    (line,) = result.stderr.splitlines()
    assert f"numeric profile off ({VARIABLE}={NATIVE}): " in line and f"({kernel} kernel, 1 thread)" in line
    assert line.endswith(numeric_profile.MAY_DIFFER)


def test_an_unknown_profile_stops_the_stage_in_one_line():
    result = run([sys.executable, "-c", PROBE], ROOT, check=False, **{VARIABLE: "fast"})
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        f"error: {VARIABLE}='fast': expected 'native' (this CPU's own kernels) or unset (the profile)\n"
    )


# A real stage on a CPU without AVX2: /proc/cpuinfo read as a made-up file that lacks it.
WITHOUT_AVX2 = """
import pathlib, runpy, sys
made_up_cpuinfo = sys.argv[1]
read_text = pathlib.Path.read_text
def made_up(path, *args, **kwargs):
    return open(made_up_cpuinfo).read() if str(path) == "/proc/cpuinfo" else read_text(path, *args, **kwargs)
pathlib.Path.read_text = made_up
sys.argv = ["stages/split.py"]
sys.path.insert(0, "stages")
runpy.run_path("stages/split.py", run_name="__main__")
"""


@pytest.mark.slow
@pytest.mark.skipif(not ON_X86_64_LINUX, reason="the profile applies on Linux x86-64 only")
def test_a_stage_on_a_cpu_without_avx2_runs_without_the_profile_and_says_so(tmp_path, sample):
    from test_scripts import make_workspace

    workspace = make_workspace(tmp_path / "workspace", *sample)
    made_up = cpuinfo(tmp_path, X86_64_V3.replace(" avx2", ""))
    kernel = machine_kernel(OPENBLAS_CORETYPE=None)
    result = run([sys.executable, "-c", WITHOUT_AVX2, str(made_up)], workspace, OPENBLAS_CORETYPE=None)
    notes = [line for line in result.stderr.splitlines() if "numeric profile" in line]
    assert len(notes) == 1
    assert "numeric profile off (this CPU lacks avx2 of x86-64-v3): " in notes[0]
    assert f"({kernel} kernel, 1 thread)" in notes[0]  # the machine's own choice, nothing forced
    assert (workspace / "data/split/train_images.npy").is_file()
