"""Model files: skops archives, written canonically so the same model gives the same bytes, loaded trusting only
the types the pipeline writes. Nothing is pickled, ever."""

from __future__ import annotations

import io
import itertools
import json
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from mnist_dvc.files.arrays import DAMAGED_NPY
from mnist_dvc.files.disk import FIXED_ZIP_TIME, record_input, write_bytes
from mnist_dvc.files.paths import display_path
from mnist_dvc.study.errors import UserError

# skops trusts scikit-learn's estimators and numpy's arrays by default. These are the only other types the
# pipeline's models contain (a forest's trees, the project's feature steps); a file naming anything else is refused.
TRUSTED_MODEL_TYPES = [
    "sklearn.tree._tree.Tree",
    "mnist_dvc.study.features.Deskew",
    "mnist_dvc.study.features.HogFeatures",
    "mnist_dvc.study.features.ShiftAugmented",
]

# How skops fails on a damaged archive (found by fuzzing archives and their schema): not a zip, an entry or key
# missing, a schema that is not JSON or not of the right shape (AttributeError, TypeError: a list where a mapping
# belongs), and numpy's ways with a damaged array entry.
DAMAGED_SKOPS = (zipfile.BadZipFile, KeyError, AttributeError, zlib.error, *DAMAGED_NPY)


def zero_padding(npy: bytes) -> bytes:
    """An .npy record array with its padding bytes zeroed; any other array unchanged.

    A tree's nodes are records of 57 bytes padded to 64, and the padding holds whatever memory the tree was built
    in: without this, the same forest gives other bytes from one run (or one load and save) to the next.
    """
    array = np.load(io.BytesIO(npy), allow_pickle=False)
    fields = array.dtype.fields
    if not fields or sum(dtype.itemsize for dtype, *_ in fields.values()) == array.dtype.itemsize:
        return npy
    clean = np.zeros(array.shape, array.dtype)
    for name in fields:
        clean[name] = array[name]
    buffer = io.BytesIO()
    np.save(buffer, clean, allow_pickle=False)
    return buffer.getvalue()


def canonical_skops(raw: bytes) -> bytes:
    """Rewrite a skops archive so that the same model always gives the same bytes.

    skops names objects and array entries after memory addresses and stamps zip entries with
    the clock. Renumber the addresses in order of appearance, fix the timestamps and the entry
    metadata, and store entries uncompressed (deflate's bytes depend on the zlib build).
    """
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        schema = json.loads(archive.read("schema.json"))
        ids: dict[int, int] = {}
        new_ids = itertools.count(1)  # from 1: skops shares objects only under a non-zero id
        files: dict[str, str] = {}

        def renumber(node: Any) -> Any:
            if isinstance(node, dict):
                result = {}
                for key, value in node.items():
                    if key == "__id__" and node.get("__loader__") == "JsonNode":
                        # A plain value (str, int, float): sharing it means nothing, yet whether two attributes hold
                        # the same object depends on how joblib batched the fits that made them. One id each.
                        value = next(new_ids)
                    elif key == "__id__":
                        if value not in ids:
                            ids[value] = next(new_ids)
                        value = ids[value]
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
        unreferenced = set(archive.namelist()) - {"schema.json", *files}
        if unreferenced:
            # A skops release that writes other entries: copying only the referenced ones would drop them.
            raise RuntimeError(f"skops wrote entries the schema does not reference: {sorted(unreferenced)}")
        entries = {
            new: zero_padding(archive.read(old)) if new.endswith(".npy") else archive.read(old)
            for old, new in files.items()
        }

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in [("schema.json", json.dumps(schema, indent=2).encode()), *entries.items()]:
            info = zipfile.ZipInfo(name, date_time=FIXED_ZIP_TIME)
            info.create_system = 3  # unix, whatever the platform
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def save_model(path: Path, model: Any) -> None:
    import skops.io as sio

    write_bytes(path, canonical_skops(sio.dumps(model)))


def read_model(path: Path) -> Any:
    """Load a skops file, trusting only the types the pipeline writes; any damage is named, never a traceback."""
    import skops.io as sio

    shown = display_path(path)
    record_input(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as error:
        raise UserError(f"{shown}: model file not found (run `dvc repro`)") from error
    except OSError as error:
        raise UserError(f"{shown}: cannot read the model file ({error.strerror})") from error
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except DAMAGED_SKOPS as error:
        raise UserError(f"{shown}: not a valid skops model file ({type(error).__name__}: {error})") from error
    refused = sorted(set(untrusted) - set(TRUSTED_MODEL_TYPES))
    if refused:
        raise UserError(f"{shown}: refused to load, the file names untrusted types: {', '.join(refused)}")
    try:
        return sio.loads(data, trusted=untrusted)
    except DAMAGED_SKOPS as error:
        raise UserError(f"{shown}: could not load the model ({type(error).__name__}: {error})") from error


def load_model(path: Path, expected: type | tuple[type, ...], n_features: int) -> Any:
    """`read_model`, then check it is the kind of model expected, fitted on `n_features` features.

    A valid file of another model (a binary SGD where the multilabel KNN belongs) is refused here, before a stage
    writes anything, rather than failing halfway through.
    """
    model = read_model(path)
    kinds = expected if isinstance(expected, tuple) else (expected,)
    if not isinstance(model, kinds):
        wanted = " or ".join(kind.__name__ for kind in kinds)
        raise UserError(f"{display_path(path)}: holds a {type(model).__name__}, expected a {wanted} (run `dvc repro`)")
    if getattr(model, "n_features_in_", None) != n_features:
        raise UserError(f"{display_path(path)}: the model is not fitted on {n_features} features (run `dvc repro`)")
    return model
