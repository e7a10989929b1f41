"""Records: the on-disk log of every check, one JSON line each, with its orbit matrices in an ``.npz``.

Layout of a records directory (``<log_dir>/eqmonitor`` by default)::

    records.jsonl                          one JSON object per line, one line per (symmetry, check)
    checks/<symmetry>-step<global_step:09d>.npz   the per-sample arrays of that check (errors [N, K], ...)

Every line is standard JSON (``allow_nan=False``), so ``jq``, pandas and browsers read it. JSON has no NaN or
infinity: a non-finite float is written as ``null`` and its place and value are listed in the line's
``"_nonfinite"`` field as ``[path, "nan" | "inf" | "-inf"]`` pairs (``path`` a list of keys and list indices);
:func:`read_records` puts the floats back. The ``.npz`` is written first, to a temporary file that is renamed into
place, so a line never names a missing or half-written file; the line is then flushed and ``fsync``'d before
:meth:`RecordWriter.append` returns, so a crash loses at most the check being written. A torn last line (the process
died mid-write) is skipped by the readers with a warning and cut off by the next writer.

Resume: a run resumed from a checkpoint at step ``S`` calls :meth:`RecordWriter.truncate_after` ``(S)``, which
rewrites the file atomically without the checks after ``S`` that the previous (crashed) run wrote, and deletes their
arrays. Readers also keep one record per ``(symmetry, global_step)``, the last written, so a file that was appended
to without truncation still reads without duplicates.

Rank-aware: only global rank 0 writes records (several processes appending to one file would interleave lines).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
import warnings
from enum import Enum
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

import numpy as np
import torch

__all__ = ["RECORDS_FILE", "RecordWriter", "load_arrays", "read_records", "records_to_table"]

RECORDS_FILE = "records.jsonl"
_CHECKS_DIR = "checks"
_NONFINITE = "_nonfinite"
_RESERVED = (_NONFINITE, "arrays")
_REQUIRED = ("symmetry", "epoch", "global_step", "metrics")
_NONFINITE_NAMES = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}

PathLike = Union[str, "os.PathLike[str]"]


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


def _restore_nonfinite(record: dict) -> dict:
    """Put the floats listed in ``record["_nonfinite"]`` back in place (inverse of the encoding)."""
    for path, name in record.pop(_NONFINITE, None) or []:
        target: Any = record
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = _NONFINITE_NAMES[name]
    return record


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
    if not isinstance(name, str) or not name or name in (".", "..") or any(c in name for c in "/\\\0"):
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


# ---------------------------------------------------------------------------------------------- writer
class RecordWriter:
    """Append one JSON line (and one ``.npz`` of arrays) per check to ``<directory>/records.jsonl``.

    Used on global rank 0 only. Each :meth:`append` opens the file, writes one complete line, flushes and
    ``fsync``'s it, and closes it, so nothing is buffered between checks and there is no handle to close.

    Args:
        directory: the records directory, created if missing.
        resume_after: when resuming from a checkpoint at this global step, drop the records written after it
            (see :meth:`truncate_after`); ``None`` keeps the file as it is.

    Example:
        >>> import tempfile, math
        >>> tmp = tempfile.TemporaryDirectory()
        >>> w = RecordWriter(d := tmp.name)
        >>> rec = w.append({"symmetry": "c4", "epoch": 0, "global_step": 8, "metrics": {"error_max": math.inf}},
        ...                {"errors": np.zeros((2, 4))})
        >>> rec["arrays"], rec["metrics"]["error_max"]
        ('checks/c4-step000000008.npz', inf)
        >>> [r["global_step"] for r in read_records(d)], load_arrays(rec, d)["errors"].shape
        ([8], (2, 4))
        >>> tmp.cleanup()
    """

    def __init__(self, directory: PathLike, resume_after: Optional[int] = None) -> None:
        self.directory = Path(directory)
        self.path = self.directory / RECORDS_FILE
        (self.directory / _CHECKS_DIR).mkdir(parents=True, exist_ok=True)
        self._cut_torn_tail()
        if resume_after is not None:
            self.truncate_after(resume_after)

    def append(self, record: Mapping[str, Any], arrays: Optional[Mapping[str, Any]] = None) -> dict:
        """Write ``arrays`` to ``checks/<symmetry>-step<global_step:09d>.npz``, then ``record`` as one durable line.

        Args:
            record: at least ``symmetry`` (str), ``epoch`` and ``global_step`` (ints) and ``metrics`` (name →
                scalar, stored as floats); ``time`` (unix seconds) is added when absent. Optional fields such as
                ``layers``, ``gradients``, ``alerts``, ``breach`` and any other JSON-able field are kept. Tensors
                and numpy values become Python numbers (or lists); NaN/±inf are kept (see the module docstring).
            arrays: name → ``np.ndarray`` or tensor (e.g. ``errors [N, K]``, ``elements [K, p]``).

        Returns:
            The record as :func:`read_records` will return it, with ``arrays`` naming the ``.npz`` relative to the
            directory (``None`` without arrays).

        Raises:
            ValueError: a required field is missing, a reserved field (``arrays``, ``_nonfinite``) is set, or the
                symmetry name or the step is unusable.
            TypeError: a field or an array cannot be stored.
        """
        _check_record(record)
        record = dict(record)
        record["global_step"] = _as_int(record["global_step"], "global_step")
        record["epoch"] = _as_int(record["epoch"], "epoch")
        record.setdefault("time", time.time())
        record["metrics"] = {k: _as_float(v, k) for k, v in record["metrics"].items()}
        nonfinite: list = []
        encoded = _to_json(record, [], nonfinite)
        arrays_np = {k: _as_array(v, k) for k, v in (arrays or {}).items()}  # validate before writing anything
        encoded["arrays"] = self._write_arrays(record["symmetry"], record["global_step"], arrays_np) if arrays else None
        if nonfinite:
            encoded[_NONFINITE] = nonfinite
        line = json.dumps(encoded, allow_nan=False, separators=(",", ":")) + "\n"
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        return _restore_nonfinite(json.loads(line))

    def truncate_after(self, global_step: int) -> int:
        """Drop the records with ``global_step > global_step`` (and their arrays): the resume point of a new run.

        The file is rewritten to a temporary file and renamed over the old one, so a crash leaves either file
        whole. Unreadable lines are dropped with a warning.

        Returns:
            How many lines were dropped.
        """
        if not self.path.exists():
            return 0
        kept, dropped = [], []
        for line, record in _parse_lines(self.path):
            if record is not None and record.get("global_step", -1) <= global_step:
                kept.append(line)
            else:
                dropped.append(record)
        if not dropped:
            return 0
        self._atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        for record in dropped:
            if record is not None and record.get("arrays"):
                (self.directory / record["arrays"]).unlink(missing_ok=True)
        return len(dropped)

    # ------------------------------------------------------------------------------------------ helpers
    def _cut_torn_tail(self) -> None:
        """Cut a last line that has no newline (a write interrupted by a crash), so appends start a fresh line."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as fh:
            data = fh.read()
            if data.endswith(b"\n"):
                return
            end = data.rfind(b"\n") + 1
            warnings.warn(
                f"{self.path}: the last line ({len(data) - end} bytes) was cut off mid-write by a crash; dropping it.",
                RuntimeWarning,
                stacklevel=3,
            )
            fh.truncate(end)
            fh.flush()
            os.fsync(fh.fileno())

    def _write_arrays(self, symmetry: str, global_step: int, arrays: dict[str, np.ndarray]) -> str:
        relative = f"{_CHECKS_DIR}/{symmetry}-step{global_step:09d}.npz"
        target = self.directory / relative
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez_compressed(fh, **arrays)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)
        return relative

    def _atomic_write_text(self, target: Path, text: str) -> None:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)


# ---------------------------------------------------------------------------------------------- readers
def _records_file(path: PathLike) -> Path:
    """``records.jsonl`` itself, a records directory, or a log dir holding ``eqmonitor/records.jsonl``."""
    path = Path(path)
    for candidate in (path, path / RECORDS_FILE, path / "eqmonitor" / RECORDS_FILE):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"No records at {str(path)!r}: expected a {RECORDS_FILE} file, a directory holding one, or a log directory "
        f"holding eqmonitor/{RECORDS_FILE}."
    )


def _parse_lines(path: Path) -> Iterable[tuple[str, Optional[dict]]]:
    """Yield ``(line, record)``; ``record`` is ``None`` (with a warning) for a line that does not parse."""
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not an object")
        except ValueError:
            last = not any(rest.strip() for rest in lines[number:])
            where = "the last line (cut off mid-write?)" if last else f"line {number}"
            warnings.warn(f"{path}: skipping {where}, which is not a JSON record.", RuntimeWarning, stacklevel=3)
            record = None
        yield line, record


def read_records(path_or_dir: PathLike, symmetry: Optional[str] = None) -> list[dict]:
    """Read the records, one per ``(symmetry, global_step)`` (the last written wins), in step order.

    Args:
        path_or_dir: ``records.jsonl``, its directory, or a log directory holding ``eqmonitor/records.jsonl``.
        symmetry: keep only this symmetry's records.

    Returns:
        The records as dicts, NaN/±inf restored as floats, ``arrays`` naming the ``.npz`` (or ``None``).

    Raises:
        FileNotFoundError: no records file there.
    """
    latest: dict[tuple[str, int], tuple[int, dict]] = {}
    for order, (_, record) in enumerate(_parse_lines(_records_file(path_or_dir))):
        if record is None or (symmetry is not None and record.get("symmetry") != symmetry):
            continue
        latest[(record.get("symmetry"), record.get("global_step"))] = (order, _restore_nonfinite(record))
    ordered = sorted(latest.values(), key=lambda item: (item[1].get("global_step", -1), item[0]))
    return [record for _, record in ordered]


def load_arrays(record: Mapping[str, Any], directory: PathLike) -> dict[str, np.ndarray]:
    """Load the per-sample arrays of one record (e.g. ``errors [N, K]``) from its ``.npz``.

    Args:
        record: a record from :func:`read_records` or :meth:`RecordWriter.append`.
        directory: the records directory (or its ``records.jsonl``, or the log directory above it).

    Raises:
        ValueError: the record was written without arrays.
        FileNotFoundError: its ``.npz`` is gone.
    """
    if not record.get("arrays"):
        raise ValueError(
            f"The record of {record.get('symmetry')!r} at step {record.get('global_step')} was written without arrays."
        )
    base = _records_file(directory).parent
    with np.load(base / record["arrays"], allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def records_to_table(records: Iterable[Mapping[str, Any]]) -> dict[str, list]:
    """Records as columns for plotting and comparing runs.

    Columns: ``symmetry``, ``global_step``, ``epoch``, ``time``, one per metric (``error_mean``, ...) and one per
    layer (``layer/<name>``); a value a record lacks is NaN. Several symmetries share the metric columns, so filter
    with ``read_records(..., symmetry=...)`` or the ``symmetry`` column.

    Example:
        >>> records_to_table([
        ...     {"symmetry": "c4", "global_step": 0, "epoch": 0, "time": 1.0, "metrics": {"error_mean": 0.5}},
        ...     {"symmetry": "c4", "global_step": 4, "epoch": 1, "time": 2.0, "metrics": {"error_mean": 0.25},
        ...      "layers": {"conv": 0.1}},
        ... ])
        {'symmetry': ['c4', 'c4'], 'global_step': [0, 4], 'epoch': [0, 1], 'time': [1.0, 2.0],
         'error_mean': [0.5, 0.25], 'layer/conv': [nan, 0.1]}
    """
    records = list(records)
    columns: dict[str, list] = {key: [r.get(key) for r in records] for key in ("symmetry", "global_step", "epoch")}
    columns["time"] = [r.get("time", math.nan) for r in records]
    fields = [(name, "metrics", name) for r in records for name in r.get("metrics") or {}]
    fields += [(f"layer/{name}", "layers", name) for r in records for name in r.get("layers") or {}]
    for column, field, name in dict.fromkeys(fields):
        columns[column] = [(r.get(field) or {}).get(name, math.nan) for r in records]
    return columns
