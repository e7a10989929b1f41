"""Runs to compare, loaded from their records: a records folder, a TensorBoard/CSV version folder, a W&B run folder,
or a folder above several of them.

A :class:`Run` is what one training run left on disk: its checks (one record per symmetry and step), the arrays of
each check (loaded on demand), and, for records written since run metadata existed, its probe set, group elements,
tag, model class, seed and ``hparams`` (:mod:`eqmonitor.records_meta`). Older folders load too; what they lack
(probe inputs, top-1 classes, probabilities) is ``None``, and comparisons that need it say so.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from eqmonitor._records_format import RECORDS_FILE
from eqmonitor.callbacks.records_folder import RECORDS_FOLDER
from eqmonitor.records_meta import read_meta, read_probe
from eqmonitor.records_read import _read_run_file, load_arrays, read_records

__all__ = [
    "CompareError",
    "NoRecordsError",
    "Run",
    "UsageError",
    "epochs_done",
    "find_records",
    "load_run",
    "load_runs",
    "pick_reference",
]

PathLike = Union[str, Path]
_WANDB_RUN = re.compile(r"^(?:offline-)?run-\d{8}_\d{6}-(?P<id>[A-Za-z0-9]+)$")
_MAX_DEPTH = 4


class CompareError(ValueError):
    """Runs that cannot be compared as asked (no common symmetry, different probes, a check they lack)."""


class NoRecordsError(CompareError):
    """A path that holds no (usable) records."""


class UsageError(CompareError):
    """Arguments that do not fit the runs: names of the wrong count, a check past the end, more runs than a command
    takes, a reference that is none of the runs (the command line exits with 2, a bad command line)."""


def epochs_done(record: dict) -> int:
    """The training epochs completed at a check, what comparisons and the explorer call its epoch: 0 at the check
    before training, 1 after the first epoch. A record's ``epoch`` is Lightning's ``current_epoch`` (0-based: the
    epoch in progress, so 0 both before training and at the end of the first epoch); records written since
    ``epochs_done`` existed hold it, older ones are read as ``epoch + 1`` once training started."""
    done = record.get("epochs_done")
    if isinstance(done, int) and not isinstance(done, bool):
        return done
    return int(record["epoch"]) + int(record["global_step"] > 0)


@dataclass
class Run:
    """One run's records.

    Attributes:
        name: what tables and legends call the run: its ``tag``, else its folder's name (made unique by
            :func:`load_runs`).
        path: the records folder.
        info: ``run.json`` (``{}`` for folders written before it existed).
        meta: the run metadata (``tag``, ``model_class``, ``seed``, ``hparams``, ``probe``, ``symmetries``) or
            ``None`` for older records.
        records: every check's record, all symmetries, in step order.
    """

    name: str
    path: Path
    info: dict
    meta: Optional[dict]
    records: list[dict]
    _arrays: dict = field(default_factory=dict, repr=False)
    _probe: Any = field(default=False, repr=False)

    @property
    def symmetries(self) -> list[str]:
        """The symmetries checked, in first-seen order."""
        return list(dict.fromkeys(r["symmetry"] for r in self.records))

    @property
    def tag(self) -> Optional[str]:
        return (self.meta or {}).get("tag")

    @property
    def fingerprint(self) -> Optional[str]:
        """The probe set's fingerprint, ``None`` for records written without one."""
        return ((self.meta or {}).get("probe") or {}).get("fingerprint")

    def checks(self, symmetry: str) -> list[dict]:
        """The records of ``symmetry``, in step order."""
        return [r for r in self.records if r["symmetry"] == symmetry]

    def arrays(self, record: dict) -> dict[str, np.ndarray]:
        """The arrays of one check (cached): ``errors [N, K]``, ``nonfinite``, ``elements``, ``exact`` and, in newer
        records, ``flips``, ``top1``, ``probs``, ``confidence``."""
        key = (record["symmetry"], record["global_step"])
        if key not in self._arrays:
            self._arrays[key] = load_arrays(record, self.path)
        return self._arrays[key]

    def probe(self) -> Optional[dict[str, np.ndarray]]:
        """The probe set (``x``, ``labels``, ``indices``, ``elements.<symmetry>``), ``None`` for older records."""
        if self._probe is False:
            self._probe = read_probe(self.path)
        return self._probe

    def labels(self) -> Optional[np.ndarray]:
        probe = self.probe()
        return None if probe is None or "labels" not in probe else probe["labels"]

    def symmetry_spec(self, symmetry: str) -> dict:
        """The symmetry's spec from the metadata (``group``, ``input``, ``output``, ``error``...), ``{}`` if unknown."""
        return ((self.meta or {}).get("symmetries") or {}).get(symmetry) or {}

    def group(self, symmetry: str) -> Any:
        """The symmetry's group, rebuilt from its spec name (``None`` when unknown or not rebuildable)."""
        from eqmonitor.groups import group_from_spec

        spec = self.symmetry_spec(symmetry)
        name = spec.get("group")
        if not isinstance(name, str):
            return None
        try:
            group = group_from_spec(name)
        except (ValueError, TypeError):
            return None
        return group if repr(group) == spec.get("group_repr", repr(group)) else None


def find_records(path: PathLike) -> list[Path]:
    """The records folders at ``path``: the folder itself, its ``eqmonitor_records`` (a TensorBoard or CSV version
    folder), the records of a W&B run folder (``wandb/run-<date>-<id>`` → ``eqmonitor_records/<id>``), or every
    records folder below ``path`` (a ``lightning_logs`` folder of several versions) in the order the runs started
    (``run.json``'s ``created``; folders without it last, by name with numbers in numeric order: ``version_2``
    before ``version_10``), so that the first run trained comes first whatever the folders are called.

    Raises:
        NoRecordsError: ``path`` does not exist or holds no records.
    """
    path = Path(path)
    if not path.exists():
        raise NoRecordsError(f"{str(path)!r} does not exist.")
    if path.is_file():
        if path.name == RECORDS_FILE:
            return [path.parent]
        raise NoRecordsError(f"{str(path)!r} is a file, not {RECORDS_FILE} or a folder holding runs.")
    for candidate in (path, path / RECORDS_FOLDER, path / "eqmonitor"):
        if (candidate / RECORDS_FILE).is_file():
            return [candidate]
    match = _WANDB_RUN.match(path.name)
    if match and path.parent.name == "wandb":
        candidate = path.parent.parent / RECORDS_FOLDER / match.group("id")
        if (candidate / RECORDS_FILE).is_file():
            return [candidate]
        raise NoRecordsError(
            f"{str(path)!r} is a W&B run folder, but its records are not at {str(candidate)!r}: the monitor writes "
            f"them to <save_dir>/{RECORDS_FOLDER}/<run id>; pass that folder."
        )
    found = sorted((p.parent for p in _walk(path, 0)), key=_run_order)
    if not found:
        raise NoRecordsError(
            f"No records in {str(path)!r}: expected {RECORDS_FILE} there, in {RECORDS_FOLDER}/ (a TensorBoard or CSV "
            f"version folder), or in folders below it. Records are written by EquivarianceMonitor(records=True)."
        )
    return found


def _run_order(folder: Path) -> tuple:
    """Sort key of a records folder: when its run started, then its path with numbers compared as numbers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        created = (_read_run_file(folder) or {}).get("created")
    natural = [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", str(folder))]
    known = isinstance(created, (int, float)) and not isinstance(created, bool)
    return (0, float(created), natural) if known else (1, 0.0, natural)


def _walk(path: Path, depth: int) -> list[Path]:
    if depth > _MAX_DEPTH:
        return []
    try:
        entries = sorted(path.iterdir())
    except OSError:
        return []
    if (path / RECORDS_FILE).is_file():
        return [path / RECORDS_FILE]
    return [f for e in entries if e.is_dir() and not e.is_symlink() for f in _walk(e, depth + 1)]


def load_run(folder: PathLike, name: Optional[str] = None) -> Run:
    """Load one records folder (see :func:`find_records` for a path that is not one).

    Raises:
        NoRecordsError: no usable record in it (every line torn or malformed: the warnings say which).
    """
    folders = find_records(folder)
    if len(folders) > 1:
        raise CompareError(f"{str(folder)!r} holds {len(folders)} runs; load them with load_runs().")
    path = folders[0]
    records = read_records(path)
    if not records:
        raise NoRecordsError(f"{str(path)!r} holds no usable record (its {RECORDS_FILE} is empty or unreadable).")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = _read_run_file(path) or {}
    meta = read_meta(path)
    tag = (meta or {}).get("tag")
    return Run(name or tag or _default_name(path), path, info, meta, records)


def _default_name(path: Path) -> str:
    """``version_3`` for ``.../version_3/eqmonitor_records``, else the folder's own name."""
    return path.parent.name if path.name in (RECORDS_FOLDER, "eqmonitor") else path.name


def load_runs(paths: Sequence[PathLike], names: Optional[Sequence[str]] = None) -> list[Run]:
    """Load every run at ``paths`` (each expanded with :func:`find_records`), with unique names.

    Runs keep the order of ``paths``; a path above several runs gives them in the order they started (see
    :func:`find_records`). The first run is the reference of paired statistics unless one is chosen
    (:func:`pick_reference`).

    Raises:
        NoRecordsError: a path holds no records.
        UsageError: ``names`` does not match the runs found.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    folders = [f for p in paths for f in find_records(p)]
    if names is not None and len(names) != len(folders):
        raise UsageError(f"Got {len(names)} names for {len(folders)} runs ({', '.join(map(str, folders))}).")
    runs = [load_run(f, None if names is None else names[i]) for i, f in enumerate(dict.fromkeys(folders))]
    seen: dict[str, int] = {}
    for run in runs:
        if run.name in seen:
            seen[run.name] += 1
            run.name = f"{run.name} ({seen[run.name]})"
        else:
            seen[run.name] = 1
    return runs


def pick_reference(runs: Sequence[Run], reference: Optional[Union[str, int]] = None) -> Run:
    """The run the others are measured against (paired differences are ``run − reference``): ``runs[0]`` (the first
    run named, or the first started of a folder of runs) when ``reference`` is ``None``, else the run of that name,
    tag, records path or index.

    Raises:
        UsageError: ``reference`` is none of the runs.
    """
    if not runs:
        raise UsageError("No runs to compare.")
    if reference is None:
        return runs[0]
    if isinstance(reference, int) and not isinstance(reference, bool):
        if -len(runs) <= reference < len(runs):
            return runs[reference]
    else:
        for key in (lambda r: r.name, lambda r: r.tag, lambda r: str(r.path), lambda r: str(r.path.parent)):
            hits = [r for r in runs if key(r) == str(reference)]
            if len(hits) == 1:
                return hits[0]
    listing = ", ".join(f"{r.name} ({r.path})" for r in runs)
    raise UsageError(f"The reference {reference!r} is none of the runs: {listing}.")
