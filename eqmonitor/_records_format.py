"""The records format: file names, the JSON encoding of a record and its checks, and atomic file writes.

Shared by the writer (:mod:`eqmonitor.records`) and the readers (:mod:`eqmonitor.records_read`); see
:mod:`eqmonitor.records` for the layout of a records folder.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import time
from enum import Enum
from pathlib import Path
from typing import IO, Any, Callable, Mapping, Optional, Union

import numpy as np
import torch

RECORDS_FILE = "records.jsonl"
RUN_FILE = "run.json"
_CHECKS_DIR = "checks"
_NONFINITE = "_nonfinite"
_NONFINITE_NAMES = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}

PathLike = Union[str, "os.PathLike[str]"]
_RESERVED = (_NONFINITE, "arrays")
_REQUIRED = ("symmetry", "epoch", "global_step", "metrics")
_TMP_SUFFIX = ".eqmonitor-tmp"
_TARGETS = rf"(?:.+-step\d{{9}}\.npz|{re.escape(RECORDS_FILE)}|{re.escape(RUN_FILE)}|probe\.npz)"
_TMP_NAMES = (
    re.compile(rf"\.{_TARGETS}\.[0-9a-f]{{16}}{re.escape(_TMP_SUFFIX)}"),
    re.compile(rf"\.{_TARGETS}\.[a-z0-9_]{{8}}\.tmp"),  # tempfile.mkstemp's, used by eqmonitor 0.1.0
)


# ---------------------------------------------------------------------------------------------- encoding
def _float_name(x: float) -> str:
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def _to_json(value: Any, path: list, nonfinite: list) -> Any:
    """``value`` as plain JSON types; non-finite floats become ``None`` and are listed in ``nonfinite``."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        value = value.item() if value.numel() == 1 and value.dim() == 0 else value.tolist()
    elif isinstance(value, np.ndarray):
        value = value.item() if value.ndim == 0 else value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    elif isinstance(value, Enum):
        value = value.value
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        nonfinite.append([list(path), _float_name(value)])
        return None
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"Expected the keys of record field `{'.'.join(map(str, path)) or '<record>'}` to be strings, "
                    f"but got {key!r} ({type(key).__name__}); convert them with str() before appending."
                )
            out[key] = _to_json(item, [*path, key], nonfinite)
        return out
    if isinstance(value, (list, tuple)):
        return [_to_json(item, [*path, i], nonfinite) for i, item in enumerate(value)]
    raise TypeError(
        f"Expected record field `{'.'.join(map(str, path))}` to hold numbers, strings, booleans, None, lists, dicts, "
        f"tensors or numpy values, but got {type(value).__name__}; convert it before appending."
    )


def _check_record(record: Mapping[str, Any]) -> None:
    if not isinstance(record, Mapping):
        raise TypeError(f"Expected `record` to be a dict, but got {type(record).__name__}.")
    missing = [k for k in _REQUIRED if k not in record]
    if missing:
        raise ValueError(f"Expected `record` to have the fields {list(_REQUIRED)}, but {missing} are missing.")
    reserved = [k for k in _RESERVED if k in record]
    if reserved:
        raise ValueError(f"The record fields {reserved} are written by RecordWriter itself; remove them from `record`.")
    name = record["symmetry"]
    if not _is_file_name(name):
        raise ValueError(f"Expected `record['symmetry']` to be a non-empty file-name-safe name, but got {name!r}.")
    if not isinstance(record["metrics"], Mapping):
        kind = type(record["metrics"]).__name__
        raise TypeError(f"Expected `record['metrics']` to be a dict of scalars, but got {kind}.")


def _as_int(value: Any, field: str) -> int:
    if isinstance(value, (torch.Tensor, np.generic, np.ndarray)):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"Expected `record['{field}']` to be a non-negative integer, but got {value!r}.")
    return value


def _as_float(value: Any, name: str) -> float:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        if (value.numel() if isinstance(value, torch.Tensor) else value.size) != 1:
            raise ValueError(f"Expected metric `{name}` to be a scalar, but got shape {tuple(value.shape)}.")
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    if not isinstance(value, (int, float)):
        raise TypeError(f"Expected metric `{name}` to be a number, but got {type(value).__name__}.")
    return float(value)


def _as_array(value: Any, key: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:
            value = value.float()
        return value.numpy()
    if isinstance(value, np.ndarray):
        return value
    raise TypeError(f"Expected `arrays['{key}']` to be a numpy array or a tensor, but got {type(value).__name__}.")


# ---------------------------------------------------------------------------------------------- decoding
def _arrays_path(directory: Path, relative: Any) -> Path:
    """The resolved file a record's ``arrays`` names, refused (``ValueError``) unless it lies inside ``checks/``."""
    checks = directory.resolve() / _CHECKS_DIR
    try:
        if not isinstance(relative, str) or Path(relative).is_absolute():
            raise ValueError
        path = (directory / relative).resolve()
    except (ValueError, OSError, RuntimeError):  # a NUL byte, a symlink loop
        path = None
    if path is None or path.parent != checks or not path.name.endswith(".npz"):
        raise ValueError(f"its `arrays` names {relative!r}, which is outside {checks}")
    return path


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _is_file_name(value: Any) -> bool:
    """A symmetry name usable in a file name: non-empty, no path separator, not ``.`` or ``..``."""
    return isinstance(value, str) and value not in ("", ".", "..") and not any(c in value for c in "/\\\0")


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


_FIELD_TYPES = (  # field, test, what it should be
    ("symmetry", _is_file_name, "a name without path separators"),
    ("epoch", _is_index, "a non-negative integer"),
    ("global_step", _is_index, "a non-negative integer"),
    ("metrics", lambda v: isinstance(v, dict), "an object of numbers"),
    ("layers", lambda v: isinstance(v, (dict, type(None))), "an object of numbers"),
    ("time", _is_number, "a number"),
    ("arrays", lambda v: isinstance(v, (str, type(None))), "a path or null"),
)


def _problem(record: Any) -> Optional[str]:
    """What makes a parsed line unusable as a record (``None`` when it is usable)."""
    if not isinstance(record, dict):
        return f"it is a JSON {_JSON_TYPES.get(type(record), type(record).__name__)}, not an object"
    for field in ("symmetry", "epoch", "global_step", "metrics"):
        if field not in record:
            return f"it has no `{field}`"
    for field, test, expected in _FIELD_TYPES:
        if not test(record.get(field)):
            return f"its `{field}` is {record[field]!r}; expected {expected}"
    for name, value in record["metrics"].items():
        if not _is_number(value):
            return f"its `metrics.{name}` is {value!r}; expected a number"
    return None


def _restore_nonfinite(record: dict) -> dict:
    """Put the floats listed in ``record["_nonfinite"]`` back in place (inverse of the encoding).

    Raises:
        ValueError: the list is malformed or names a place the record does not have.
    """
    entries = record.pop(_NONFINITE, None) or []
    try:
        if not isinstance(entries, list):
            raise TypeError
        for path, name in entries:
            if not isinstance(path, list) or not path:
                raise TypeError
            target: Any = record
            for key in path[:-1]:
                target = target[key]
            if not isinstance(target, (dict, list)) or isinstance(path[-1], bool) or name not in _NONFINITE_NAMES:
                raise TypeError
            target[path[-1]]  # noqa: B018 -- the place must exist
            target[path[-1]] = _NONFINITE_NAMES[name]
    except (TypeError, KeyError, IndexError, ValueError) as error:
        raise ValueError(f"its `{_NONFINITE}` list does not match the record ({entries!r})") from error
    return record


# ---------------------------------------------------------------------------------------------- run.json
def _eqmonitor_version() -> str:
    from eqmonitor._version import __version__

    return __version__


def _created(created: Any) -> str:
    """`` created <local time>`` for a ``run.json``'s ``created`` (unix seconds); empty if it is not a time."""
    if _is_number(created) and created is not None:
        try:
            return time.strftime(" created %Y-%m-%d %H:%M:%S", time.localtime(created))
        except (OverflowError, ValueError, OSError):
            pass
    return ""


def _run_ids(info: Mapping[str, Any]) -> set:
    """The run ids a ``run.json`` names: the run that created the folder and every run resumed into it."""
    resumes = info.get("resumes") if isinstance(info.get("resumes"), list) else []
    return {info.get("run_id")} | {r.get("run_id") for r in resumes if isinstance(r, dict)}


# ---------------------------------------------------------------------------------------------- files
def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(target: Path, write: Callable[[IO[bytes]], Any], exclusive: bool = False) -> None:
    """Write ``target`` whole or not at all: a temporary file is written, ``fsync``'d and renamed over it.

    The temporary is created with mode ``0o666`` less the umask (what ``open`` gives a new file). ``exclusive``
    links it into place instead of replacing, raising ``FileExistsError`` if ``target`` exists.
    """
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(8)}{_TMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if not exclusive:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)
            except FileExistsError:
                raise
            except OSError:  # no hard links on this file system: not atomic against a racing writer
                if target.exists():
                    raise FileExistsError(target) from None
                os.replace(tmp, target)
            tmp.unlink(missing_ok=True)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
