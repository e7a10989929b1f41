"""Records: the on-disk log of every check of one run, one JSON line each, with its orbit matrices in an ``.npz``.

Layout of a records directory (one per run; ``<log_dir>/eqmonitor`` by default)::

    run.json                               the run the folder belongs to: run id, created time, eqmonitor version,
                                           and its "meta" (tag, model class, seed, hparams, probe fingerprint)
    probe.npz                              the probe set (inputs, labels) and group elements (eqmonitor.records_meta)
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

One run per folder: a writer opened for a new run refuses a folder that holds another run's records
(:class:`RunMismatchError`), so two runs never blend. A run resumed from a checkpoint either reopens its folder
(``RecordWriter(directory, run_id, resume=True)``, then :meth:`RecordWriter.truncate_after` ``(S)`` drops the checks
after the checkpoint's step ``S`` that the crashed run wrote, and their arrays) or starts a new one and first copies
the history up to ``S`` into it (:func:`carry_over`). Readers also keep one record per ``(symmetry, global_step)``,
the last written, so a file that was appended to without truncation still reads without duplicates.

Nothing read from a folder is trusted: lines of the wrong shape are skipped with a warning, and a path a record names
is used (read, copied or deleted) only if it resolves inside the folder's ``checks/``.

Rank-aware: only global rank 0 writes records (several processes appending to one file would interleave lines).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
import warnings
from pathlib import Path
from typing import IO, Any, Callable, Mapping, Optional

import numpy as np

from eqmonitor._records_format import (
    _CHECKS_DIR,
    _NONFINITE,
    _TMP_NAMES,
    RECORDS_FILE,
    RUN_FILE,
    PathLike,
    _arrays_path,
    _as_array,
    _as_float,
    _as_int,
    _atomic_write,
    _check_record,
    _created,
    _eqmonitor_version,
    _restore_nonfinite,
    _run_ids,
    _to_json,
)
from eqmonitor.records_read import (
    _latest,
    _parse_lines,
    _read_run_file,
    _records_file,
    load_arrays,
    read_records,
    read_run_info,
    records_to_table,
)

__all__ = [
    "RECORDS_FILE",
    "RUN_FILE",
    "RecordWriter",
    "RunMismatchError",
    "carry_over",
    "load_arrays",
    "read_records",
    "read_run_info",
    "records_to_table",
]


class RunMismatchError(ValueError):
    """A new run opened a records folder that holds another run's records."""


# ---------------------------------------------------------------------------------------------- writer
class RecordWriter:
    """Append one JSON line (and one ``.npz`` of arrays) per check to ``<directory>/records.jsonl``.

    Used on global rank 0 only. Each :meth:`append` opens the file, writes one complete line, flushes and
    ``fsync``'s it, and closes it, so nothing is buffered between checks and there is no handle to close.

    Args:
        directory: the run's records directory, created if missing.
        run_id: the run writing (e.g. the logger's run id, or a fresh ``uuid4().hex``). A new run (``resume=False``)
            is refused a folder holding records of another run, or records written before ``run.json`` existed.
            ``None`` (the signature of eqmonitor 0.1.0) skips that check and keeps the folder's id, or makes one.
        resume: this run continues the folder's records (resumed from a checkpoint); any run id may resume.
        resume_after: resume, and drop the records written after this global step (see :meth:`truncate_after`).

    Attributes:
        run_id: the run id written to ``run.json``.

    Raises:
        RunMismatchError: a new run opened another run's folder.
        TypeError: ``run_id`` is not a non-empty string.

    Example:
        >>> import tempfile, math
        >>> tmp = tempfile.TemporaryDirectory()
        >>> w = RecordWriter(d := tmp.name, "run-1")
        >>> rec = w.append({"symmetry": "c4", "epoch": 0, "global_step": 8, "metrics": {"error_max": math.inf}},
        ...                {"errors": np.zeros((2, 4))})
        >>> rec["arrays"], rec["metrics"]["error_max"]
        ('checks/c4-step000000008.npz', inf)
        >>> [r["global_step"] for r in read_records(d)], load_arrays(rec, d)["errors"].shape
        ([8], (2, 4))
        >>> read_run_info(d)["run_id"]
        'run-1'
        >>> tmp.cleanup()
    """

    def __init__(
        self,
        directory: PathLike,
        run_id: Optional[str] = None,
        *,
        resume: bool = False,
        resume_after: Optional[int] = None,
    ) -> None:
        if run_id is not None and (not isinstance(run_id, str) or not run_id):
            hint = " (pass the resume step as `resume_after=`)" if isinstance(run_id, int) else ""
            raise TypeError(f"Expected `run_id` to be a non-empty string, but got {run_id!r}{hint}.")
        self.directory = Path(directory)
        self.path = self.directory / RECORDS_FILE
        resume = resume or resume_after is not None
        info = _read_run_file(self.directory)
        self._check_owner(run_id, resume, info)
        (self.directory / _CHECKS_DIR).mkdir(parents=True, exist_ok=True)
        self.run_id = self._record_run(run_id, resume, info)
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
    def _check_owner(self, run_id: Optional[str], resume: bool, info: Optional[dict]) -> None:
        """Raise :class:`RunMismatchError` if a new run ``run_id`` may not write this folder."""
        if run_id is None or resume:
            return
        if info is None:
            checks = self.directory / _CHECKS_DIR
            holds = (self.path.exists() and self.path.stat().st_size > 0) or (
                checks.is_dir() and any(p.suffix == ".npz" for p in checks.iterdir())
            )
            if not holds:
                return
            owner = f"an unknown run (written before eqmonitor recorded run ids in {RUN_FILE})"
        elif run_id in _run_ids(info):
            return
        elif not info:
            owner = f"an unknown run (its {RUN_FILE} is unreadable)"
        else:
            owner = f"run {info['run_id']!r}{_created(info.get('created'))}"
        raise RunMismatchError(
            f"{self.directory} holds the records of {owner}, and this is a new run, {run_id!r}. Records belong to "
            "one run and are never mixed: give this run its own folder (a new `records_dir`, or a new logger "
            "version), or continue that run by resuming it from its checkpoint (`ckpt_path=`), which reopens the "
            "folder with `resume=True`."
        )

    def _record_run(self, run_id: Optional[str], resume: bool, info: Optional[dict]) -> str:
        """Create ``run.json`` (exclusively: of two new runs racing for a folder one wins), or note a resume."""
        own = {"run_id": run_id or (info or {}).get("run_id") or uuid.uuid4().hex}
        version = {"eqmonitor_version": _eqmonitor_version()}
        if info is None:
            try:
                self._write_run_file({**own, "created": time.time(), **version}, exclusive=True)
                return own["run_id"]
            except FileExistsError:  # another writer created it since we looked
                info = _read_run_file(self.directory) or {}
                self._check_owner(run_id, resume, info)
                own["run_id"] = run_id or info.get("run_id") or own["run_id"]
        if resume:
            info = dict(info) if info else {"run_id": own["run_id"], "created": time.time()}
            resumes = info.get("resumes") if isinstance(info.get("resumes"), list) else []
            self._write_run_file({**info, "resumes": [*resumes, {**own, "time": time.time(), **version}]})
        return own["run_id"]

    def _write_run_file(self, info: Mapping[str, Any], exclusive: bool = False) -> None:
        text = json.dumps(info, indent=1, allow_nan=False) + "\n"
        _atomic_write(self.directory / RUN_FILE, lambda fh: fh.write(text.encode("utf-8")), exclusive)

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


# ---------------------------------------------------------------------------------------------- resume elsewhere
def carry_over(source_dir: PathLike, target_dir: PathLike, up_to_step: int, run_id: str) -> int:
    """Copy the history up to a checkpoint into a new run's folder, so that folder alone holds the whole history.

    For a run resumed from a checkpoint at step ``up_to_step`` into a new folder (a new logger version): every
    record of ``source_dir`` with ``global_step <= up_to_step`` (the last one per ``(symmetry, global_step)``, as
    readers keep) is appended to ``target_dir`` with a copy of its ``.npz``; the steps the dead run wrote after the
    checkpoint stay behind. Records ``target_dir`` already has (same symmetry and step) are not copied again, so a
    second call adds nothing. Lines of the wrong shape and ``arrays`` paths outside ``source_dir``'s ``checks/``
    are skipped with a warning; a record whose ``.npz`` is gone is carried without arrays, with a warning.
    ``target_dir``'s ``run.json`` notes the source under ``carried_from``.

    Args:
        source_dir: the dead run's records (directory, its ``records.jsonl``, or the log directory above it).
        target_dir: the new run's records directory, missing, empty or already this run's.
        up_to_step: the checkpoint's global step.
        run_id: the new run's id; then open its writer with ``RecordWriter(target_dir, run_id)``.

    Returns:
        How many records were copied by this call.

    Raises:
        FileNotFoundError: ``source_dir`` does not exist (a folder without records carries nothing).
        RunMismatchError: ``target_dir`` holds another run's records.
        ValueError: ``target_dir`` is ``source_dir`` (resume into it with ``resume=True`` instead).
        TypeError: ``up_to_step`` is not an integer, or ``run_id`` not a non-empty string.
    """
    if not isinstance(up_to_step, int) or isinstance(up_to_step, bool):
        raise TypeError(f"Expected `up_to_step` to be an integer global step, but got {up_to_step!r}.")
    if not isinstance(run_id, str) or not run_id:
        raise TypeError(f"Expected `run_id` to be a non-empty string, but got {run_id!r}.")
    try:
        source: Optional[Path] = _records_file(source_dir)
    except FileNotFoundError:
        if not Path(source_dir).is_dir():
            raise
        source = None  # the dead run wrote no check yet
    base = source.parent if source is not None else Path(source_dir)
    if Path(target_dir).resolve() == base.resolve():
        raise ValueError(
            f"`source_dir` and `target_dir` are the same folder ({base}); a run resumed into its own folder opens "
            "it with RecordWriter(directory, run_id, resume=True) and truncate_after(step) instead."
        )
    writer = RecordWriter(target_dir, run_id)
    present = set()
    if writer.path.exists():
        present = {(r["symmetry"], r["global_step"]) for _, r in _parse_lines(writer.path) if r is not None}
    lines = []
    for record in _latest([r for _, r in _parse_lines(source)]) if source is not None else []:
        key = (record["symmetry"], record["global_step"])
        if record["global_step"] > up_to_step or key in present:
            continue
        relative = record.pop("arrays")
        nonfinite: list = []
        encoded = _to_json(record, [], nonfinite)
        encoded["arrays"] = _copy_arrays(writer, _arrays_path(base, relative), *key) if relative else None
        if nonfinite:
            encoded[_NONFINITE] = nonfinite
        lines.append(json.dumps(encoded, allow_nan=False, separators=(",", ":")) + "\n")
    if lines:  # the arrays are on disk before the lines that name them
        writer._append_lines(lines)
        info = _read_run_file(writer.directory) or {"run_id": run_id}
        source_run = (_read_run_file(base) or {}).get("run_id")
        carried = {"directory": str(base.resolve()), "run_id": source_run, "up_to_step": up_to_step}
        writer._write_run_file({**info, "carried_from": {**carried, "time": time.time()}})
    return len(lines)


def _copy_arrays(writer: RecordWriter, source: Path, symmetry: str, global_step: int) -> Optional[str]:
    try:
        fh = open(source, "rb")
    except FileNotFoundError:
        warnings.warn(
            f"{source} is gone; carrying the record of {symmetry!r} at step {global_step} without arrays.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    with fh:
        return writer._write_check(symmetry, global_step, lambda out: shutil.copyfileobj(fh, out))
