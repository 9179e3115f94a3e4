"""Files every stage writes and reads: atomic writes, JSON and CSV, and the leftovers of killed writes."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError

from mnist_dvc.files.paths import display_path
from mnist_dvc.study.errors import UserError

Model = TypeVar("Model", bound=BaseModel)
# The time every entry of the zips we write carries (model files, the package for Dask workers): zip stores the
# writing time, which would make the bytes differ on every run.
FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
STALE_SECONDS = 3600  # a temporary file untouched this long is a killed writer's, not a running one's

# Every file the stage has read, as it was when first read: (modification time, size, inode). None outside a stage
# (`watch_inputs` starts it): a test or a notebook may rewrite what it read.
_inputs: dict[Path, tuple[int, int, int] | None] | None = None


def watch_inputs() -> None:
    """From now on, remember every file read, for `check_inputs_unchanged` (`runner.run_stage` calls it)."""
    global _inputs
    _inputs = {}


def record_input(path: Path) -> None:
    """Remember `path` as the stage read it, so that `changed_inputs` can tell if it changed before the end."""
    if _inputs is not None and path not in _inputs:
        _inputs[path] = _stat(path)


def changed_inputs() -> list[Path]:
    """The files read since the stage started that another process has changed, replaced or removed since.

    DVC hashes a stage's params and deps after the stage ends: a file changed meanwhile (a second `dvc exp run` in
    the same workspace rewrites params.yaml) would be recorded as what the stage used.
    """
    return [path for path, seen in (_inputs or {}).items() if _stat(path) != seen]


def check_inputs_unchanged() -> None:
    """Stop the stage, before it writes or as it ends, if a file it read has changed since: its outputs would be
    computed from the old contents while DVC records the new ones."""
    changed = changed_inputs()
    if changed:
        raise UserError(
            f"{', '.join(display_path(path) for path in changed)} changed while the stage ran (another `dvc exp run` "
            "or `dvc repro` in this workspace?): the stage stops, so that DVC does not record inputs its outputs were "
            "not computed from; run it again"
        )


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_mtime_ns, status.st_size, status.st_ino


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def remove_stale_temporaries(folder: Path) -> None:
    """Delete `.name.*.tmp` files of killed writes; recent ones may belong to a running experiment."""
    try:
        leftovers = list(folder.glob(".*.tmp"))
    except OSError:
        return
    for leftover in leftovers:
        with contextlib.suppress(OSError):  # another process may remove it first
            if time.time() - leftover.stat().st_mtime > STALE_SECONDS:
                leftover.unlink()


def _cannot_write(path: Path, error: OSError) -> UserError:
    reason = "no space left on the device" if error.errno == errno.ENOSPC else error.strerror or str(error)
    return UserError(f"{display_path(path)}: cannot write it ({reason})")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.

    A killed or failing stage therefore never leaves a file that looks complete; the temporary files of a
    killed one are removed by the next write into the same folder once they are stale.
    """
    check_inputs_unchanged()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path.parent)
        handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise _cannot_write(path, error) from error
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes files private; outputs get the usual mode
        os.replace(tmp, path)
    except OSError as error:
        raise _cannot_write(path, error) from error
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: Path, data: Any) -> None:
    """JSON that every reader accepts: a NaN or infinity is a bug here, never written."""
    try:
        text = json.dumps(data, indent=2, allow_nan=False)
    except ValueError as error:
        raise ValueError(f"{path}: refusing to write a non-finite number ({error})") from error
    write_bytes(path, (text + "\n").encode())


def read_json(path: Path) -> Any:
    record_input(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as error:
        raise UserError(f"{display_path(path)}: file not found (run the stage that writes it: `dvc repro`)") from error
    except OSError as error:
        raise UserError(f"{display_path(path)}: cannot read it ({error.strerror})") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{display_path(path)}: not valid JSON ({error})") from error


def read_json_model(path: Path, model: type[Model], expected: str) -> Model:
    """A JSON file a stage wrote, checked against the pydantic `model`; `expected` says what it should be if not."""
    data = read_json(path)
    try:
        return model.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'the file'}: {e['msg']}" for e in error.errors(include_url=False)
        )
        raise UserError(f"{display_path(path)}: {expected} ({problems}; run `dvc repro`)") from error


def json_value(path: Path, data: Any, keys: str) -> Any:
    """data[key1][key2]... (`keys` dotted) of a JSON file read before, or a message naming the missing key."""
    parts = keys.split(".")
    for depth, key in enumerate(parts):
        if not isinstance(data, dict) or key not in data:
            missing = ".".join(parts[: depth + 1])
            raise UserError(f"{display_path(path)}: missing key '{missing}' (run `dvc repro` to rewrite it)")
        data = data[key]
    return data


def json_number(path: Path, data: Any, keys: str, nullable: bool = False) -> float | None:
    """A finite number at `keys` (or null if `nullable`): a hand-edited `"accuracy": "high"` is named, no crash."""
    value = json_value(path, data, keys)
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{display_path(path)}: '{keys}' should be a number, got {value!r} (run `dvc repro`)")
    return float(value)


def write_csv(path: Path, columns: dict[str, np.ndarray], digits: int = 4) -> None:
    """Equal-length columns as CSV (pandas); floats with `digits` significant digits, so the bytes are stable."""
    import pandas as pd  # here, not above: most stages write no CSV

    text = pd.DataFrame(columns).to_csv(index=False, float_format=f"%.{digits}g", lineterminator="\n")
    write_bytes(path, text.encode())


def read_csv(path: Path, columns: Sequence[str], text: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The named columns of a CSV a stage wrote, numbers except those in `text`; a missing, damaged or hand-edited
    file is named with what is wrong, never a traceback."""
    import pandas as pd

    shown = display_path(path)
    record_input(path)
    try:
        with warnings.catch_warnings():
            # A row longer than the header would otherwise shift a column into the index without a word.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(path, index_col=False)
    except FileNotFoundError as error:
        raise UserError(f"{shown}: file not found (run the stage that writes it: `dvc repro`)") from error
    except OSError as error:
        raise UserError(f"{shown}: cannot read it ({error.strerror})") from error
    except (pd.errors.ParserError, pd.errors.ParserWarning, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"{shown}: not a valid CSV file ({reason}; run `dvc repro` to rewrite it)") from error
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise UserError(f"{shown}: missing the columns {', '.join(missing)} (run `dvc repro` to rewrite it)")
    wrong = [c for c in columns if c not in text and not pd.api.types.is_numeric_dtype(frame[c].dtype)]
    if wrong:
        raise UserError(f"{shown}: the columns {', '.join(wrong)} should hold numbers (run `dvc repro` to rewrite it)")
    empty = [column for column in columns if frame[column].isna().any()]
    if empty:
        raise UserError(f"{shown}: the columns {', '.join(empty)} have empty cells (run `dvc repro` to rewrite it)")
    return {column: frame[column].to_numpy() for column in columns}
