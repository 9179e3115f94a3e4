"""The numeric profile every stage computes under: the same inputs give the same bytes on any x86-64-v3 CPU.

Importing this module applies the profile to the process's environment, so it must be imported before numpy or
scipy loads: every stage script imports it first (ruff's isort keeps it there, a test checks it). numpy and scipy
each carry their own OpenBLAS, which picks its kernel from the CPU once, when it loads (SkylakeX on AVX-512 CPUs,
Haswell or Zen on AVX2 ones), and the kernels round float32 products differently: the PCA and the kernel SVCs then
save other last bits. numpy picks its own SIMD code per function from the CPU too (its AVX-512 exp, log, pow and
sorting give other last bits or another order of ties). The profile fixes all three on every machine that can run it:

- OpenBLAS's Haswell kernel in both libraries (`OPENBLAS_CORETYPE`);
- numpy's dispatch capped at x86-64-v3 (`NPY_ENABLE_CPU_FEATURES`, and no `NPY_DISABLE_CPU_FEATURES`, which numpy
  refuses beside it);
- one BLAS and OpenMP thread (a kernel's summation order depends on its thread count).

Forcing a kernel the CPU lacks kills the process (SIGILL), and numpy refuses to import when told to enable a feature
the CPU lacks: the kernel and dispatch are set only on Linux x86-64 CPUs with every x86-64-v3 feature, and otherwise
left to the machine. `MNIST_DVC_NUMERIC_PROFILE=native` leaves them to the machine too, for speed over identity.
Like the worker count, this is where and how the work runs, never a param. `run_stage` then checks, once numpy and
scipy are loaded, that every OpenBLAS runs the profile's kernel and thread count and that numpy's dispatch is
capped, and says in one line what differs.
"""

from __future__ import annotations

import os
import platform
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path

PROFILE_VARIABLE = "MNIST_DVC_NUMERIC_PROFILE"
NATIVE = "native"
KERNEL = "Haswell"  # OpenBLAS's AVX2 + FMA kernel: Zen CPUs run it as their own
NUMPY_DISPATCH = "X86_V3"  # numpy's name for x86-64-v3 (AVX2, FMA, BMI1/2, LZCNT, F16C, MOVBE)
# Thread pools of BLAS and OpenMP, one thread in every mode.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")
KERNEL_VARIABLE = "OPENBLAS_CORETYPE"
NUMPY_ENABLE_VARIABLE = "NPY_ENABLE_CPU_FEATURES"
NUMPY_DISABLE_VARIABLE = "NPY_DISABLE_CPU_FEATURES"
# /proc/cpuinfo's names of the x86-64-v3 features that the Haswell kernel and numpy's X86_V3 code use
# (`abm` is LZCNT, on Intel and AMD alike).
REQUIRED_CPU_FLAGS = ("avx", "avx2", "fma", "bmi1", "bmi2", "abm", "f16c", "movbe")
CPUINFO = Path("/proc/cpuinfo")
# The environment that gives a process started by other means (a Dask worker) the profile.
WORKER_ENVIRONMENT = (
    f"{KERNEL_VARIABLE}={KERNEL} {NUMPY_ENABLE_VARIABLE}={NUMPY_DISPATCH} OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1"
)
# The libraries whose versions decide the bytes a stage's jobs compute.
LIBRARIES = ("numpy", "scipy", "scikit-learn", "scikit-image", "joblib")
MAY_DIFFER = "model files may differ from the committed ones in their last bits (predictions and reports should not)"


@dataclass(frozen=True)
class Status:
    """What `apply` decided: the profile in force, or why not (the user's choice, or the machine), or a user error."""

    applied: bool
    reason: str | None = None  # why the machine's own kernels run
    replaced: tuple[str, ...] = ()  # the user's variables the profile overrode, as NAME=value
    error: str | None = None


def cpu_flags(cpuinfo: Path = CPUINFO) -> set[str]:
    """The feature flags of the first CPU in a /proc/cpuinfo file (empty if there is none)."""
    try:
        lines = cpuinfo.read_text(errors="replace").splitlines()
    except OSError:
        return set()
    flags = next((line.split(":", 1)[1] for line in lines if line.split(":", 1)[0].strip() == "flags"), "")
    return set(flags.split())


def why_not_applicable(system: str, machine: str, flags: set[str]) -> str | None:
    """Why this machine cannot run the profile safely, or None if it can."""
    if system != "Linux" or machine not in ("x86_64", "AMD64"):
        return f"it needs Linux on x86-64, this is {system} on {machine}"
    missing = [flag for flag in REQUIRED_CPU_FLAGS if flag not in flags]
    if missing:
        return f"this CPU lacks {', '.join(missing)} of x86-64-v3"
    return None


def apply(environ: MutableMapping[str, str], cpuinfo: Path = CPUINFO) -> Status:
    """Set the profile's variables in `environ` where the machine can run it, and say what was done."""
    environ.update(dict.fromkeys(THREAD_VARIABLES, "1"))
    mode = environ.get(PROFILE_VARIABLE, "").strip()
    if mode == NATIVE:
        return Status(applied=False, reason=f"{PROFILE_VARIABLE}={NATIVE}")
    if mode:
        error = f"{PROFILE_VARIABLE}={mode!r}: expected '{NATIVE}' (this CPU's own kernels) or unset (the profile)"
        return Status(applied=False, error=error)
    reason = why_not_applicable(platform.system(), platform.machine(), cpu_flags(cpuinfo))
    if reason is not None:
        return Status(applied=False, reason=reason)
    wanted = {KERNEL_VARIABLE: KERNEL, NUMPY_ENABLE_VARIABLE: NUMPY_DISPATCH}
    replaced = tuple(
        f"{name}={environ[name]}"
        for name in (KERNEL_VARIABLE, NUMPY_ENABLE_VARIABLE, NUMPY_DISABLE_VARIABLE)
        if name in environ and environ[name].strip().lower() != wanted.get(name, "").lower()
    )
    environ.pop(NUMPY_DISABLE_VARIABLE, None)
    environ.update(wanted)
    return Status(applied=True, replaced=replaced)


@dataclass(frozen=True)
class Blas:
    """One BLAS library loaded in the process, as threadpoolctl reports it."""

    library: str  # the package that carries it: numpy, scipy
    implementation: str  # openblas, mkl, blis, ...
    kernel: str | None
    threads: int
    version: str | None = None

    def __str__(self) -> str:
        threads = f"{self.threads} thread{'' if self.threads == 1 else 's'}"
        return f"{self.library}'s {self.implementation} ({self.kernel or 'unknown'} kernel, {threads})"


def loaded_blas() -> list[Blas]:
    """Every BLAS loaded in this process, with its kernel and thread count."""
    from threadpoolctl import threadpool_info

    return [
        Blas(
            library=Path(pool["filepath"]).parent.name.removesuffix(".libs"),
            implementation=pool["internal_api"],
            kernel=pool.get("architecture"),
            threads=pool["num_threads"],
            version=pool.get("version"),
        )
        for pool in threadpool_info()
        if pool["user_api"] == "blas"
    ]


def numpy_dispatch() -> list[str]:
    """The SIMD targets numpy dispatches to on this CPU beyond its build's baseline (e.g. X86_V3, X86_V4)."""
    # numpy's own runtime report (`np.show_runtime`) reads these two names.
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    return [target for target in __cpu_dispatch__ if __cpu_features__.get(target)]


def differences(blas: list[Blas], dispatch: list[str]) -> list[str]:
    """What differs from the profile, a phrase each: a BLAS on another kernel or thread count, numpy uncapped."""
    found = [
        f"{entry} instead of {KERNEL}, 1 thread"
        for entry in blas
        if (entry.implementation, entry.kernel, entry.threads) != ("openblas", KERNEL, 1)
    ]
    beyond = [target for target in dispatch if target != NUMPY_DISPATCH]
    if beyond:
        found.append(f"numpy dispatches to {', '.join(beyond)} beyond {NUMPY_DISPATCH}")
    return found


def describe() -> dict[str, str]:
    """What decides the bytes this process computes: Python's and the libraries' versions, each BLAS with its kernel
    and thread count, numpy's dispatch. Loads numpy's and scipy's BLAS if they are not loaded yet.

    A stage compares the description of every Dask worker with its own before sending work.
    """
    import importlib.metadata
    import platform

    import numpy  # noqa: F401  (loads its OpenBLAS)
    import scipy.linalg  # noqa: F401  (loads its OpenBLAS)

    description = {"Python": ".".join(platform.python_version_tuple()[:2])}
    description |= {name: importlib.metadata.version(name) for name in LIBRARIES}
    for blas in sorted(loaded_blas(), key=lambda blas: blas.library):
        description[f"{blas.library}'s BLAS"] = f"{blas} {blas.version}"
    description["numpy's dispatch"] = ", ".join(numpy_dispatch()) or "baseline only"
    return description


def report(status: Status) -> list[str]:
    """What a stage says about its numeric profile once numpy and scipy are loaded: nothing when the profile holds."""
    lines = []
    if status.replaced:
        lines.append(
            f"numeric profile: {', '.join(status.replaced)} replaced by {KERNEL_VARIABLE}={KERNEL} "
            f"{NUMPY_ENABLE_VARIABLE}={NUMPY_DISPATCH} (set {PROFILE_VARIABLE}={NATIVE} to keep your own)"
        )
    blas = loaded_blas()
    if not status.applied:
        running = ", ".join([*map(str, blas), f"numpy up to {(numpy_dispatch() or ['its baseline'])[-1]}"])
        lines.append(f"numeric profile off ({status.reason}): {running}: {MAY_DIFFER}")
    else:
        found = differences(blas, numpy_dispatch())
        if found:
            lines.append(f"numeric profile not in force: {'; '.join(found)}: {MAY_DIFFER}")
    return lines


STATUS = apply(os.environ)
