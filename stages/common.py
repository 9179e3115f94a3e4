"""What several stages share: user errors, params, atomic writes, arrays and model files."""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, get_args

import numpy as np
import yaml
from pydantic import BaseModel, ValidationError

ROOT = Path(__file__).resolve().parent.parent
PARAMS_FILE = ROOT / "params.yaml"
SPLIT_DIR = ROOT / "data" / "split"
MODELS_DIR = ROOT / "data" / "models"
REPORTS_DIR = ROOT / "reports"
METRICS_DIR = REPORTS_DIR / "metrics"
PLOTS_DIR = REPORTS_DIR / "plots"
FIGURES_DIR = REPORTS_DIR / "figures"

Section = TypeVar("Section", bound=BaseModel)


class UserError(Exception):
    """A mistake in params, data or model files: reported as one line, no traceback."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_stage(main: Callable[[], None], description: str) -> None:
    """Entry point of every stage: `--help`, then `main()`, user errors as one clear line."""
    argparse.ArgumentParser(description=description).parse_args()
    try:
        main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


# --- params -------------------------------------------------------------------------------------


def _allowed_keys(schema: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys the schema accepts at the place `loc` points into."""
    model: Any = schema
    for part in loc[:-1]:
        annotation = model.model_fields[part].annotation
        candidates = [annotation, *get_args(annotation)]
        model = next(c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel))
    return list(model.model_fields)


def _describe_error(error: Any, section: str, schema: type[BaseModel]) -> str:
    path = ".".join([section, *(str(part) for part in error["loc"])])
    if error["type"] == "extra_forbidden":
        return f"{path}: unknown key (allowed: {', '.join(_allowed_keys(schema, error['loc']))})"
    if error["type"] == "missing":
        return f"{path}: missing (required)"
    return f"{path} = {error['input']!r}: {error['msg']}"


def load_params(section: str, schema: type[Section], params_file: Path = PARAMS_FILE) -> Section:
    """Read one section of params.yaml and validate it, before any heavy work."""
    try:
        params = yaml.safe_load(params_file.read_text())
    except FileNotFoundError:
        raise UserError(f"{params_file}: file not found") from None
    except yaml.YAMLError as error:
        raise UserError(f"{params_file}: not valid YAML ({error})") from None
    if not isinstance(params, dict) or section not in params:
        raise UserError(f"{params_file}: section '{section}' is missing")
    try:
        return schema.model_validate(params[section])
    except ValidationError as error:
        problems = [_describe_error(e, section, schema) for e in error.errors()]
        raise UserError(f"{params_file}: invalid params:\n  " + "\n  ".join(problems)) from None


# --- atomic writes ------------------------------------------------------------------------------


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.

    A killed or failing stage therefore never leaves a file that looks complete.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: Path, data: Any) -> None:
    write_bytes(path, (json.dumps(data, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: file not found (run the stage that writes it: `dvc repro`)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: not valid JSON ({error})") from None


def write_csv(path: Path, columns: dict[str, np.ndarray]) -> None:
    """Write equal-length columns as CSV, with a fixed float format so the bytes are stable."""
    names = list(columns)
    rows = zip(*(columns[name] for name in names), strict=True)
    lines = [",".join(names)]
    lines += [",".join(_format_cell(cell) for cell in row) for row in rows]
    write_bytes(path, ("\n".join(lines) + "\n").encode())


def _format_cell(cell: Any) -> str:
    if isinstance(cell, (float, np.floating)):
        return f"{float(cell):.6g}"
    return str(cell)


# --- arrays -------------------------------------------------------------------------------------


def save_array(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        np.save(out, array, allow_pickle=False)


def load_array(path: Path, dtype: type, ndim: int) -> np.ndarray:
    """Load a .npy file written by a stage, checking it is what the pipeline expects."""
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found (run the stage that writes it: `dvc repro`)") from None
    except (ValueError, OSError, EOFError) as error:
        raise UserError(f"{path}: not a valid .npy array file, corrupt or truncated ({error})") from None
    if array.dtype != dtype or array.ndim != ndim:
        raise UserError(
            f"{path}: expected a {ndim}-d {np.dtype(dtype).name} array, got {array.ndim}-d {array.dtype.name}"
        )
    return array


def load_split(part: str, split_dir: Path = SPLIT_DIR) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 28, 28) uint8 and labels (n,) uint8 of the 'train' or 'test' part."""
    images = load_array(split_dir / f"{part}_images.npy", np.uint8, 3)
    labels = load_array(split_dir / f"{part}_labels.npy", np.uint8, 1)
    if len(images) != len(labels):
        raise UserError(f"{split_dir}: {len(images)} {part} images but {len(labels)} {part} labels")
    return images, labels


def load_class_names(split_dir: Path = SPLIT_DIR) -> list[str]:
    info = read_json(split_dir / "dataset.json")
    if not isinstance(info, dict) or not isinstance(info.get("class_names"), list):
        raise UserError(f"{split_dir / 'dataset.json'}: expected a 'class_names' list")
    return info["class_names"]


def to_features(images: np.ndarray) -> np.ndarray:
    """Flatten (n, 28, 28) uint8 images to (n, 784) float32 pixels in [0, 1]."""
    return images.reshape(len(images), -1).astype(np.float32) / np.float32(255)


def first_n(n: int | None, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """The first n rows of each array (all rows when n is None): a subset knob for slow models."""
    return tuple(array[:n] for array in arrays)


# --- models -------------------------------------------------------------------------------------

# skops trusts scikit-learn's estimators and numpy's arrays by default. These are the only other types the
# pipeline's models contain; a file naming anything else is refused.
TRUSTED_MODEL_TYPES = ["sklearn.tree._tree.Tree"]

_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def canonical_skops(raw: bytes) -> bytes:
    """Rewrite a skops archive so that the same model always gives the same bytes.

    skops names objects and array entries after memory addresses and stamps zip entries with
    the clock. Renumber the addresses in order of appearance and fix the timestamps.
    """
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        schema = json.loads(archive.read("schema.json"))
        ids: dict[int, int] = {}
        files: dict[str, str] = {}

        def renumber(node: Any) -> Any:
            if isinstance(node, dict):
                result = {}
                for key, value in node.items():
                    if key == "__id__":
                        value = ids.setdefault(value, len(ids))
                    elif key == "file" and isinstance(value, str):
                        value = files.setdefault(value, f"{len(files)}{Path(value).suffix}")
                    else:
                        value = renumber(value)
                    result[key] = value
                return result
            if isinstance(node, list):
                return [renumber(item) for item in node]
            return node

        schema = renumber(schema)
        entries = {new: archive.read(old) for old, new in files.items()}

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in [("schema.json", json.dumps(schema, indent=2).encode()), *entries.items()]:
            info = zipfile.ZipInfo(name, date_time=_FIXED_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data, compresslevel=6)
    return buffer.getvalue()


def save_model(path: Path, model: Any) -> None:
    import skops.io as sio

    write_bytes(path, canonical_skops(sio.dumps(model)))


def load_model(path: Path) -> Any:
    """Load a model with skops, trusting only the types the pipeline itself writes."""
    import skops.io as sio

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: model file not found (run `dvc repro`)") from None
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, ValueError) as error:
        raise UserError(f"{path}: not a valid skops model file ({error})") from None
    refused = sorted(set(untrusted) - set(TRUSTED_MODEL_TYPES))
    if refused:
        raise UserError(f"{path}: refused to load, the file names untrusted types: {', '.join(refused)}")
    try:
        return sio.loads(data, trusted=untrusted)
    except Exception as error:  # skops raises many kinds on a damaged archive
        raise UserError(f"{path}: could not load the model ({type(error).__name__}: {error})") from None
