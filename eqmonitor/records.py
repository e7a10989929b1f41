"""Records: the on-disk log of every check, one JSON line each, with its orbit matrices in an ``.npz``.

Layout of a records directory (``<log_dir>/eqmonitor`` by default)::

    records.jsonl                          one JSON object per line, one line per (symmetry, check)
    checks/<symmetry>-step<global_step:09d>.npz   the per-sample arrays of that check (errors [N, K], ...)

Every line is standard JSON (``allow_nan=False``), so ``jq``, pandas and browsers read it. JSON has no NaN or
infinity: a non-finite float is written as ``null`` and its place and value are listed in the line's
``"_nonfinite"`` field as ``[path, "nan" | "inf" | "-inf"]`` pairs (``path`` a list of keys and list indices);
:func:`read_records` puts the floats back. The ``.npz`` is written first, to a temporary file
(``.<name>.<16 hex digits>.eqmonitor-tmp``) that is renamed into place, so a line never names a missing or
half-written file; the line is then flushed and ``fsync``'d before :meth:`RecordWriter.append` returns, so a crash
loses at most the check being written. A torn last line (the process died mid-write) is skipped by the readers with
a warning and cut off by the next writer, which also removes the temporaries a killed writer left. Files get the mode
a plain ``open(path, "w")`` gives a new file (``0o666 & ~umask``).

Resume: a run resumed from a checkpoint at step ``S`` calls :meth:`RecordWriter.truncate_after` ``(S)``, which
rewrites the file atomically without the checks after ``S`` that the previous (crashed) run wrote, and deletes their
arrays. Readers also keep one record per ``(symmetry, global_step)``, the last written, so a file that was appended
to without truncation still reads without duplicates.

Nothing read from a folder is trusted: lines of the wrong shape are skipped with a warning, and a path a record names
is used (read, copied or deleted) only if it resolves inside the folder's ``checks/``.

Rank-aware: only global rank 0 writes records (several processes appending to one file would interleave lines).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import IO, Any, Callable, Mapping, Optional

import numpy as np

from eqmonitor._records_format import (
    _CHECKS_DIR,
    _NONFINITE,
    _TMP_NAMES,
    RECORDS_FILE,
    PathLike,
    _arrays_path,
    _as_array,
    _as_float,
    _as_int,
    _atomic_write,
    _check_record,
    _restore_nonfinite,
    _to_json,
)
from eqmonitor.records_read import (
    _parse_lines,
    load_arrays,
    read_records,
    records_to_table,
)

__all__ = ["RECORDS_FILE", "RecordWriter", "load_arrays", "read_records", "records_to_table"]


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
        self._remove_stale_temporaries()
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
        encoded["arrays"] = (
            self._write_check(
                record["symmetry"], record["global_step"], lambda fh: np.savez_compressed(fh, **arrays_np)
            )
            if arrays
            else None
        )
        if nonfinite:
            encoded[_NONFINITE] = nonfinite
        line = json.dumps(encoded, allow_nan=False, separators=(",", ":")) + "\n"
        self._append_lines([line])
        return _restore_nonfinite(json.loads(line))

    def truncate_after(self, global_step: int) -> int:
        """Drop the records with ``global_step > global_step`` (and their arrays): the resume point of a new run.

        The file is rewritten to a temporary file and renamed over the old one, so a crash leaves either file
        whole. Unusable lines are dropped with a warning; the arrays of a dropped record are deleted only if they
        lie inside ``checks/`` and no kept record names them.

        Returns:
            How many lines were dropped.
        """
        if not self.path.exists():
            return 0
        kept, dropped = [], []
        for line, record in _parse_lines(self.path):
            (kept if record is not None and record["global_step"] <= global_step else dropped).append((line, record))
        if not dropped:
            return 0
        _atomic_write(self.path, lambda fh: fh.write("".join(line + "\n" for line, _ in kept).encode("utf-8")))
        named = {_arrays_path(self.directory, r["arrays"]) for _, r in kept if r is not None and r["arrays"]}
        for _, record in dropped:
            if record is not None and record["arrays"]:
                path = _arrays_path(self.directory, record["arrays"])
                if path not in named:
                    path.unlink(missing_ok=True)
        return len(dropped)

    # ------------------------------------------------------------------------------------------ helpers
    def _remove_stale_temporaries(self) -> None:
        """Remove the temporary files a killed writer left (named as :func:`_atomic_write` names them)."""
        for folder in (self.directory, self.directory / _CHECKS_DIR):
            for entry in os.scandir(folder):
                if any(p.fullmatch(entry.name) for p in _TMP_NAMES) and entry.is_file(follow_symlinks=False):
                    Path(entry.path).unlink(missing_ok=True)

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

    def _append_lines(self, lines: list[str]) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write("".join(lines))
            fh.flush()
            os.fsync(fh.fileno())

    def _write_check(self, symmetry: str, global_step: int, write: Callable[[IO[bytes]], Any]) -> str:
        relative = f"{_CHECKS_DIR}/{symmetry}-step{global_step:09d}.npz"
        _atomic_write(self.directory / relative, write)
        return relative
