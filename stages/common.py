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
RAW_DIR = ROOT / "data" / "raw"
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


def _walk(schema: type[BaseModel], loc: tuple[Any, ...]) -> tuple[list[str], list[str]]:
    """The params keys that `loc` names, and the keys allowed where it ends.

    pydantic's locations also name union members (e.g. `float` for `gamma`), which are no params keys.
    """
    model: Any = schema
    keys: list[str] = []
    for part in loc:
        if model is None or part not in model.model_fields:
            break
        keys.append(str(part))
        annotation = model.model_fields[part].annotation
        candidates = [annotation, *get_args(annotation)]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    allowed = list(model.model_fields) if model is not None else []
    return keys, allowed


def _describe_errors(errors: list[Any], section: str, schema: type[BaseModel]) -> list[str]:
    """One line per bad key: the key path, the value, what is allowed."""
    lines: dict[str, list[str]] = {}
    for error in errors:
        keys, _ = _walk(schema, error["loc"])
        path = ".".join([section, *keys])
        if error["type"] == "extra_forbidden":
            parent_keys, allowed = _walk(schema, error["loc"][:-1])
            path = ".".join([section, *parent_keys, str(error["loc"][-1])])
            lines.setdefault(f"{path}: unknown key (allowed: {', '.join(allowed)})", [])
        elif error["type"] == "missing":
            lines.setdefault(f"{path}: missing (required)", [])
        else:
            message = error["msg"].removeprefix("Value error, ")  # pydantic's wording for a validator's message
            lines.setdefault(f"{path} = {error['input']!r}", []).append(message)
    return [f"{head}: {' or '.join(messages)}" if messages else head for head, messages in lines.items()]


def load_params(section: str, schema: type[Section], params_file: Path = PARAMS_FILE) -> Section:
    """Read one section of params.yaml and validate it, before any heavy work."""
    try:
        params = yaml.safe_load(params_file.read_text())
    except OSError as error:
        raise UserError(f"{params_file}: cannot read it ({error.strerror})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise UserError(f"{params_file}: not valid YAML ({error})") from None
    if not isinstance(params, dict):
        raise UserError(f"{params_file}: expected a mapping of sections (data, split, binary, ...)")
    if section not in params:
        raise UserError(f"{params_file}: section '{section}' is missing")
    try:
        return schema.model_validate(params[section])
    except ValidationError as error:
        problems = _describe_errors(error.errors(), section, schema)
        raise UserError(f"{params_file}: invalid params:\n  " + "\n  ".join(problems)) from None


def check_at_most(key: str, value: int, limit: int, reason: str) -> None:
    """A param the data cannot support: name it, say why, and what to use instead."""
    if value > limit:
        raise UserError(f"{PARAMS_FILE.name}: {key} = {value}, but {reason}: use at most {limit}")


def check_folds(key: str, folds: int, labels: np.ndarray) -> None:
    """Stratified folds need every class present at least `folds` times."""
    counts = np.bincount(labels)
    smallest = int(counts[counts > 0].min())
    check_at_most(key, folds, smallest, f"the rarest class has {smallest} images here")


def fold_train_size(n_samples: int, folds: int) -> int:
    """The fewest images any cross-validation fold trains on."""
    return n_samples - -(-n_samples // folds)


# --- atomic writes ------------------------------------------------------------------------------


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


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
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes files private; outputs get the usual mode
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
    except OSError as error:
        raise UserError(f"{path}: cannot read it ({error.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: not valid JSON ({error})") from None


def json_value(path: Path, data: Any, *keys: str) -> Any:
    """data[key1][key2]... of a JSON file read before, or a message naming the file and the missing key."""
    for depth, key in enumerate(keys):
        if not isinstance(data, dict) or key not in data:
            raise UserError(f"{path}: missing key '{'.'.join(keys[: depth + 1])}' (run `dvc repro` to rewrite it)")
        data = data[key]
    return data


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


def load_dataset_info(folder: Path) -> dict[str, Any]:
    """The dataset.json beside the arrays: the dataset's name, class names and canonical test start."""
    path = folder / "dataset.json"
    info = read_json(path)
    names = info.get("class_names") if isinstance(info, dict) else None
    if not (
        isinstance(info, dict)
        and isinstance(info.get("name"), str)
        and isinstance(names, list)
        and len(names) >= 2
        and all(isinstance(name, str) for name in names)
    ):
        raise UserError(f'{path}: expected {{"name": "...", "class_names": [at least two names], ...}}')
    return info


def load_class_names(folder: Path = SPLIT_DIR) -> list[str]:
    return load_dataset_info(folder)["class_names"]


def load_labelled_images(folder: Path, prefix: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 28, 28) uint8 and labels (n,) uint8 from `<prefix>images.npy` and `<prefix>labels.npy`."""
    images_path, labels_path = folder / f"{prefix}images.npy", folder / f"{prefix}labels.npy"
    images, labels = load_array(images_path, np.uint8, 3), load_array(labels_path, np.uint8, 1)
    n_classes = len(load_class_names(folder))
    if images.shape[1:] != (28, 28) or len(images) == 0:
        raise UserError(f"{images_path}: expected images of 28x28 pixels, got an array of shape {images.shape}")
    if len(images) != len(labels):
        raise UserError(f"{labels_path}: {len(labels)} labels for the {len(images)} images of {images_path.name}")
    if labels.max() >= n_classes:
        raise UserError(f"{labels_path}: label {labels.max()} out of range for the {n_classes} classes of dataset.json")
    return images, labels


def load_split(part: str) -> tuple[np.ndarray, np.ndarray]:
    """The 'train' or 'test' part written by the split stage."""
    return load_labelled_images(SPLIT_DIR, f"{part}_")


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
    the clock. Renumber the addresses in order of appearance, fix the timestamps and the entry
    metadata, and store entries uncompressed (deflate's bytes depend on the zlib build).
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
                        # From 1: skops shares objects only under a non-zero id.
                        value = ids.setdefault(value, len(ids) + 1)
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
            info.create_system = 3  # unix, whatever the platform
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
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
    except OSError as error:
        raise UserError(f"{path}: cannot read the model file ({error.strerror})") from None
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as error:  # a damaged archive or schema fails in many ways
        raise UserError(f"{path}: not a valid skops model file ({type(error).__name__}: {error})") from None
    refused = sorted(set(untrusted) - set(TRUSTED_MODEL_TYPES))
    if refused:
        raise UserError(f"{path}: refused to load, the file names untrusted types: {', '.join(refused)}")
    try:
        return sio.loads(data, trusted=untrusted)
    except Exception as error:  # skops raises many kinds on a damaged archive
        raise UserError(f"{path}: could not load the model ({type(error).__name__}: {error})") from None
