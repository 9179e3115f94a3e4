"""Reading params.yaml: one key (a section or a single value) validated against its schema, with clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar, get_args

import numpy as np
from pydantic import BaseModel, TypeAdapter, ValidationError
from ruamel.yaml import YAML, YAMLError
from ruamel.yaml.events import AliasEvent

from mnist_dvc.files.disk import record_input
from mnist_dvc.files.paths import PARAMS_FILE, display_path
from mnist_dvc.study.errors import UserError
from mnist_dvc.study.schema import AllParams

Value = TypeVar("Value")
Model = TypeVar("Model", bound=BaseModel)


def _walk(schema: Any, loc: tuple[Any, ...]) -> tuple[list[str], list[str]]:
    """The params keys that `loc` names, and the keys allowed where it ends.

    pydantic's locations also name union members (e.g. `float` for `gamma`), which are no params keys.
    """
    model: Any = schema if isinstance(schema, type) and issubclass(schema, BaseModel) else None
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


def _describe_errors(errors: list[Any], key: str, schema: Any) -> list[str]:
    """One line per bad key: the key path, the value, what is allowed."""
    lines: dict[str, list[str]] = {}
    for error in errors:
        keys, _ = _walk(schema, error["loc"])
        path = ".".join(part for part in [key, *keys] if part)
        if error["type"] == "extra_forbidden":
            parent_keys, allowed = _walk(schema, error["loc"][:-1])
            path = ".".join(part for part in [key, *parent_keys, str(error["loc"][-1])] if part)
            lines.setdefault(f"{path}: unknown key (allowed: {', '.join(allowed)})", [])
        elif error["type"] == "missing":
            lines.setdefault(f"{path}: missing (required)", [])
        else:
            message = error["msg"].removeprefix("Value error, ")  # pydantic's wording for a validator's message
            lines.setdefault(f"{path} = {quoted(repr(error['input']))}", []).append(quoted(message, 200))
    return [f"{head}: {' or '.join(messages)}" if messages else head for head, messages in lines.items()]


def read_key(params: Any, key: str) -> Any:
    """params[a][b]... for the dotted `key`, or a message naming the first part that is missing."""
    node = params
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            raise UserError(f"{display_path(PARAMS_FILE)}: '{'.'.join(parts[: depth + 1])}' is missing")
        node = node[part]
    return node


def read_params_file(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """params.yaml as a mapping of sections, read as DVC reads it, or a message saying why it is not one.

    DVC reads params.yaml with ruamel.yaml (YAML 1.2): `1e-05` is a number, `yes` a string. Reading it the same way
    makes what `dvc params diff` shows what a stage used (PyYAML, YAML 1.1, read `1e-05` as a string).
    """
    try:
        text = path.read_text()
        refuse_aliases(text, path)
        params = YAML(typ="safe").load(text)
    except OSError as error:
        raise UserError(f"{display_path(path)}: cannot read it ({error.strerror})") from error
    except (YAMLError, UnicodeDecodeError) as error:
        reason = " ".join(str(error).split())
        raise UserError(f"{display_path(path)}: not valid YAML ({quoted(reason, 300)})") from error
    if not isinstance(params, dict):
        raise UserError(f"{display_path(path)}: expected a mapping of sections (data, split, binary, ...)")
    record_input(path)
    return params


def refuse_aliases(text: str, path: Path) -> None:
    """YAML anchors and aliases would let a few lines expand to gigabytes while the file is read: params.yaml has no
    use for them, so they are refused before anything is built."""
    for event in YAML(typ="safe").parse(text):
        if isinstance(event, AliasEvent) or getattr(event, "anchor", None):
            line = event.start_mark.line + 1
            raise UserError(f"{display_path(path)}: line {line}: YAML anchors (&) and aliases (*) are not allowed here")


def quoted(text: str, limit: int = 80) -> str:
    """`text` as a message quotes it: at most `limit` characters, the cut said."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def validated(value: Any, key: str, schema: type[Value], path: Path = PARAMS_FILE) -> Value:
    """`value`, read at `key` ('' for the whole file), checked against `schema`; one line per problem otherwise."""
    try:
        return TypeAdapter(schema).validate_python(value, strict=True)
    except ValidationError as error:
        problems = _describe_errors(error.errors(), key, schema)
        raise UserError(f"{display_path(path)}: invalid params:\n  " + "\n  ".join(problems)) from error


def load_params(key: str, schema: type[Value], params_file: Path = PARAMS_FILE) -> Value:
    """Read one key of params.yaml (a section like `binary`, or one value like `binary.digit`) and validate it.

    `dvc.yaml` declares the same keys for the stage, so a stage depends on exactly the params it reads.
    """
    return validated(read_key(read_params_file(params_file), key), key, schema, params_file)


def load_keys(section: str, schema: type[Model], params_file: Path = PARAMS_FILE) -> Model:
    """The keys of `section` that `schema`'s fields name, validated together; the section's other keys are not read.

    A stage that reads only some keys of a section (each multiclass model's stage: the shared `multiclass.*` keys,
    not the other models) declares each `section.key` in `dvc.yaml`, so a change to another key reruns nothing.
    """
    node = read_key(read_params_file(params_file), section)
    if not isinstance(node, dict):
        raise UserError(f"{display_path(params_file)}: '{section}' should be a mapping of keys")
    return validated({key: node[key] for key in schema.model_fields if key in node}, section, schema, params_file)


def load_all_params(params_file: Path = PARAMS_FILE) -> AllParams:
    """The whole of params.yaml, every section validated and no other section allowed: the stage that reads it
    (`report`) depends on the whole file, so a misspelled section stops a run instead of being ignored."""
    return validated(read_params_file(params_file), "", AllParams, params_file)


def check_at_most(key: str, value: int, limit: int, reason: str) -> None:
    """A param the data cannot support: name it, say why, and what to use instead."""
    if value > limit:
        raise UserError(f"{PARAMS_FILE.name}: {key} = {value}, but {reason}: use at most {limit}")


def binary_class_name(digit: int, class_names: list[str]) -> str:
    """The class `binary.digit` asks about: it must be one of the dataset's."""
    check_at_most("binary.digit", digit, len(class_names) - 1, f"the dataset has {len(class_names)} classes")
    return class_names[digit]


def check_stratified_split(key: str, size: float, labels: np.ndarray, images: str) -> int:
    """A stratified split that holds out `size` (a fraction) of `labels`, as `train_test_split` counts it, needs every
    class on both sides: at least one image per class on each, so two of each class. Returns how many it holds out."""
    classes, counts = np.unique(labels, return_counts=True)
    n_held = int(np.ceil(size * len(labels)))
    if n_held < len(classes) or len(labels) - n_held < len(classes):
        raise UserError(
            f"{PARAMS_FILE.name}: {key} = {size} holds out {n_held} of {len(labels)} {images}: each side needs at "
            f"least {len(classes)} (one per class)"
        )
    if counts.min() < 2:
        raise UserError(
            f"{PARAMS_FILE.name}: {key}: class {classes[counts.argmin()]} has a single one of the {len(labels)} "
            f"{images}, which cannot be on both sides of a stratified split"
        )
    return n_held


def check_at_least(key: str, value: int, limit: int, reason: str) -> None:
    if value < limit:
        raise UserError(f"{PARAMS_FILE.name}: {key} = {value}, but {reason}: use at least {limit}")


def check_folds(key: str, folds: int, labels: np.ndarray, subset_key: str | None = None) -> None:
    """Stratified folds need every class present at least `folds` times.

    `subset_key` names the param that chose these labels (the first N images), the other way to fix it.
    """
    counts = np.bincount(labels)
    smallest = int(counts[counts > 0].min())
    where = f"the {len(labels)} images it cross-validates on" if subset_key else "the training images"
    reason = f"the rarest class has {smallest} images among {where}"
    if subset_key and folds > smallest:
        raise UserError(
            f"{PARAMS_FILE.name}: {key} = {folds}, but {reason} (set by {subset_key}): "
            f"use at most {smallest} folds, or raise {subset_key}"
        )
    check_at_most(key, folds, smallest, reason)


def fold_train_size(n_samples: int, folds: int) -> int:
    """The fewest images any cross-validation fold trains on."""
    return n_samples - -(-n_samples // folds)
