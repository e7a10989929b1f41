"""Records readers: :func:`read_records`, :func:`load_arrays`, :func:`read_run_info`, :func:`records_to_table`.

A records folder may be damaged (a torn last line), hand-edited or crafted, so nothing read from it is trusted: a
line that is not a JSON object with the fields a record has, of the types it has, is skipped with one warning naming
its line number and what is wrong, and a path read from a record is used only if it resolves (symlinks followed) to
a file inside the folder's ``checks/``. The layout of a records folder is described in :mod:`eqmonitor.records`.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import numpy as np

from eqmonitor._records_format import (
    RECORDS_FILE,
    RUN_FILE,
    PathLike,
    _arrays_path,
    _problem,
    _restore_nonfinite,
)

__all__ = ["RECORDS_FILE", "RUN_FILE", "load_arrays", "read_records", "read_run_info", "records_to_table"]


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


def _parse_lines(path: Path) -> list[tuple[str, Optional[dict]]]:
    """``(line, record)`` pairs, NaN/±inf restored; ``record`` is ``None`` (one warning) for an unusable line.

    A list, not a generator, so the warnings name the caller of the function that calls this one.
    """
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    parsed: list[tuple[str, Optional[dict]]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            last = not any(rest.strip() for rest in lines[number:])
            where = "the last line (cut off mid-write?)" if last else f"line {number}"
            warnings.warn(f"{path}: skipping {where}, which is not a JSON record.", RuntimeWarning, stacklevel=3)
            parsed.append((line, None))
            continue
        problem = _problem(record)
        try:
            if problem is None:
                record.setdefault("arrays", None)
                if record["arrays"] is not None:
                    _arrays_path(path.parent, record["arrays"])
                _restore_nonfinite(record)
        except ValueError as error:
            problem = str(error)
        if problem is not None:
            warnings.warn(f"{path}: skipping line {number}: {problem}.", RuntimeWarning, stacklevel=3)
            record = None
        parsed.append((line, record))
    return parsed


def _latest(records: Iterable[Optional[dict]], symmetry: Optional[str] = None) -> list[dict]:
    """One record per ``(symmetry, global_step)``, the last one, in step order (then file order)."""
    latest: dict[tuple[str, int], tuple[int, dict]] = {}
    for order, record in enumerate(records):
        if record is not None and (symmetry is None or record["symmetry"] == symmetry):
            latest[(record["symmetry"], record["global_step"])] = (order, record)
    return [record for _, record in sorted(latest.values(), key=lambda item: (item[1]["global_step"], item[0]))]


def read_records(path_or_dir: PathLike, symmetry: Optional[str] = None) -> list[dict]:
    """Read the records, one per ``(symmetry, global_step)`` (the last written wins), in step order.

    Unusable lines (torn, not a record, fields of the wrong type, an ``arrays`` path outside ``checks/``) are
    skipped with a ``RuntimeWarning`` each.

    Args:
        path_or_dir: ``records.jsonl``, its directory, or a log directory holding ``eqmonitor/records.jsonl``.
        symmetry: keep only this symmetry's records.

    Returns:
        The records as dicts, NaN/±inf restored as floats, ``arrays`` naming the ``.npz`` (or ``None``).

    Raises:
        FileNotFoundError: no records file there.
    """
    return _latest([record for _, record in _parse_lines(_records_file(path_or_dir))], symmetry)


def load_arrays(record: Mapping[str, Any], directory: PathLike) -> dict[str, np.ndarray]:
    """Load the per-sample arrays of one record (e.g. ``errors [N, K]``) from its ``.npz``.

    Args:
        record: a record from :func:`read_records` or :meth:`RecordWriter.append`.
        directory: the records directory (or its ``records.jsonl``, or the log directory above it).

    Raises:
        ValueError: the record was written without arrays, or its ``arrays`` path leaves the folder's ``checks/``.
        FileNotFoundError: its ``.npz`` is gone.
    """
    if not record.get("arrays"):
        raise ValueError(
            f"The record of {record.get('symmetry')!r} at step {record.get('global_step')} was written without arrays."
        )
    try:
        path = _arrays_path(_records_file(directory).parent, record["arrays"])
    except ValueError as error:
        where = f"{record.get('symmetry')!r} at step {record.get('global_step')}"
        raise ValueError(f"Refusing to load the arrays of {where}: {error} (was the records file edited?).") from None
    with np.load(path, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def _read_run_file(directory: Path) -> Optional[dict]:
    """``run.json`` of ``directory``; ``None`` when absent, ``{}`` (with a warning) when unreadable."""
    try:
        info = json.loads((directory / RUN_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        info = None
    if not isinstance(info, dict) or not isinstance(info.get("run_id"), str):
        warnings.warn(f"{directory / RUN_FILE} is not a run identity; the run is unknown.", RuntimeWarning, 3)
        return {}
    return info


def read_run_info(path_or_dir: PathLike) -> Optional[dict]:
    """The identity of the run a records folder belongs to (its ``run.json``), or ``None`` if it has none.

    Keys: ``run_id``, ``created`` (unix seconds), ``eqmonitor_version``; ``resumes`` (``run_id``, ``time`` and
    ``eqmonitor_version`` of each resume into the folder) and ``carried_from`` (see
    :func:`~eqmonitor.records.carry_over`) when they happened. Folders written before run identities have none.
    """
    path = Path(path_or_dir)
    for directory in (path.parent,) if path.is_file() else (path, path / "eqmonitor"):
        if (directory / RUN_FILE).exists():
            return _read_run_file(directory) or None
    return None


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
