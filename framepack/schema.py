"""Reading JSON into dataclasses: one type check for every file a user or a machine can break.

Queue job files, training configs and LoRA configs are JSON written by hand, half-written, or
synced from another machine. `check_types` compares each value with its dataclass field's type
(the annotations are the schema) before the dataclass's own `__post_init__` checks the ranges, and
raises a `ValueError` naming the key: "seed must be an integer, got 'x'". Numbers must be finite
(JSON's `Infinity` and `NaN` are refused); integers are not booleans; unknown keys are refused.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, Union

from framepack.errors import UserError

# what a value must be, for messages
_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def check_types(cls: type, raw: Any, prefix: str = "") -> None:
    """Raise ValueError (naming `prefix + key`) if `raw` is not a JSON object whose keys are
    fields of the dataclass `cls` and whose values have the fields' types. Nested dataclass
    fields are checked the same way (`data.seed`)."""
    if not isinstance(raw, dict):
        raise ValueError(f"{prefix.rstrip('.') or 'the file'} must be a JSON object, got {_show(raw)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names), key=str)
    if unknown:
        listed = ", ".join(repr(prefix + str(k)) for k in unknown)
        raise ValueError(f"unknown field{'s' * (len(unknown) > 1)} {listed}; allowed: {', '.join(names)}")
    for name, value in raw.items():
        check_value(hints[name], value, prefix + name)


def check_value(kind: Any, value: Any, key: str) -> None:
    """Raise ValueError naming `key` unless `value` (from JSON) has the type `kind`."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                check_value(option, value, key)
                return
            except ValueError as err:
                errors.append(err)
        raise errors[0]
    if dataclasses.is_dataclass(kind):
        if isinstance(value, kind):
            return
        check_types(kind, value, prefix=key + ".")
        return
    if origin in (tuple, list) or kind in (tuple, list):
        if not isinstance(value, list | tuple):
            raise ValueError(f"{key} must be a list, got {_show(value)}")
        inner = args[0] if args and args[0] is not Ellipsis else Any
        if origin is tuple and len(args) > 1 and args[1] is not Ellipsis:  # a fixed-length tuple
            if len(value) != len(args):
                raise ValueError(f"{key} must be a list of {len(args)} values, got {_show(value)}")
            for i, (item_kind, item) in enumerate(zip(args, value, strict=True)):
                check_value(item_kind, item, f"{key}[{i}]")
            return
        for i, item in enumerate(value):
            check_value(inner, item, f"{key}[{i}]")
        return
    if origin is dict or kind is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{key} must be a JSON object, got {_show(value)}")
        return
    _check_scalar(kind, value, key)


def _check_scalar(kind: Any, value: Any, key: str) -> None:
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and not math.isfinite(value):
            raise ValueError(f"{key} must be a finite number, got {value}")
    elif kind is str:
        ok = isinstance(value, str)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise ValueError(f"{key} must be {_NAMES.get(kind, kind.__name__)}, got {_show(value)}")


def _show(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_finite(obj: Any, prefix: str = "") -> None:
    """Raise ValueError naming the first float field of the dataclass `obj` that is NaN or
    infinite (a learning rate of Infinity trains a model whose every weight is NaN)."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{prefix}{f.name} must be a finite number, got {value}")


def read_json_object(path: str | os.PathLike, what: str, holds: str) -> dict[str, Any]:
    """The JSON object in the file `path` (UTF-8), or a one-line UserError naming the file and
    what is wrong: missing, a folder, unreadable, not UTF-8 (a UTF-16 file says so), not JSON,
    not an object. `what` names the file ("config file"), `holds` its fields ("TrainConfig fields")."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist; give an existing JSON file") from None
    except IsADirectoryError:
        raise UserError(f"{what} {path} is a folder; give a JSON file") from None
    except OSError as err:
        raise UserError(
            f"cannot read {what} {path} ({err.strerror or err}); give a readable JSON file"
        ) from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UserError(f"{what} {path} is UTF-16 text; save it as UTF-8")
    try:
        raw = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise UserError(f"{what} {path} is not UTF-8 text; save it as UTF-8 JSON") from None
    except ValueError as err:
        raise UserError(f"{what} {path} is not valid JSON ({err}); fix the file") from None
    if not isinstance(raw, dict):
        raise UserError(f"{what} {path} must hold a JSON object of {holds}, got {_show(raw)}")
    return raw
