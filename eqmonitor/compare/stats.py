"""What a comparison computes from runs' records: curves over training, a summary per run, per-class aggregates and
paired statistics (numpy only; the figures and the command line read these)."""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Union

import numpy as np

from eqmonitor.compare.runs import CompareError, Run, UsageError, epochs_done, pick_reference

__all__ = [
    "SUMMARY_COLUMNS",
    "aggregate_curve",
    "check_at",
    "common_symmetry",
    "curve",
    "paired",
    "per_class",
    "same_probe",
    "summary",
]

#: columns of :func:`summary`, in table order
SUMMARY_COLUMNS = (
    "run",
    "checks",
    "final_error",
    "best_error",
    "best_at",
    "error_auc",
    "orbit_accuracy",
    "flip_rate",
    "exact_error",
    "interp_error",
    "exact_elements",
    "interp_elements",
    "probe",
)


def common_symmetry(runs: Sequence[Run], symmetry: Optional[str] = None) -> str:
    """The symmetry to compare: ``symmetry`` (which every run must have checked), else the only one they share.

    Raises:
        CompareError: a run did not check ``symmetry``, or the runs share no symmetry or several (name one).
    """
    if not runs:
        raise CompareError("No runs to compare.")
    had = {run.name: run.symmetries for run in runs}
    listing = "; ".join(f"{name}: {', '.join(s)}" for name, s in had.items())
    if symmetry is not None:
        missing = [name for name, s in had.items() if symmetry not in s]
        if missing:
            raise CompareError(f"{', '.join(missing)} did not check {symmetry!r} (symmetries per run: {listing}).")
        return symmetry
    shared = [s for s in runs[0].symmetries if all(s in other for other in had.values())]
    if not shared:
        raise CompareError(f"The runs share no symmetry, so they cannot be compared (symmetries per run: {listing}).")
    if len(shared) > 1:
        raise CompareError(f"The runs share several symmetries ({', '.join(shared)}); choose one with --symmetry.")
    return shared[0]


def _x(record: dict, by: str) -> float:
    """A check's position: its global step, or (``by="epoch"``) the training epochs completed at it
    (:func:`~eqmonitor.compare.runs.epochs_done`: 0 before training, 1 after the first epoch)."""
    if by == "step":
        return float(record["global_step"])
    if by == "epoch":
        return float(epochs_done(record))
    raise ValueError(f"Expected `by` to be 'epoch' or 'step', but got {by!r}.")


def curve(run: Run, symmetry: str, metric: str = "error_mean", by: str = "epoch") -> tuple[np.ndarray, np.ndarray]:
    """``(x, values)`` of one logged scalar over the run's checks of ``symmetry`` (NaN where a check lacks it)."""
    checks = run.checks(symmetry)
    x = np.array([_x(r, by) for r in checks], dtype=np.float64)
    v = np.array([r["metrics"].get(metric, math.nan) for r in checks], dtype=np.float64)
    return x, v


def check_at(run: Run, symmetry: str, check: int = -1) -> dict:
    """The ``check``-th record of ``symmetry`` (``-1``: the last).

    Raises:
        UsageError: there is no such check (the error says which there are).
    """
    checks = run.checks(symmetry)
    try:
        return checks[check]
    except IndexError:
        raise UsageError(
            f"{run.name} has {len(checks)} checks of {symmetry!r}, so there is no check {check}: choose one from "
            f"{-len(checks)} to {len(checks) - 1} (-1: the last)."
        ) from None


def _area(x: np.ndarray, v: np.ndarray) -> float:
    ok = np.isfinite(v)
    if ok.sum() < 2:
        return float(v[ok][0]) if ok.any() else math.nan
    return float(np.trapezoid(v[ok], x[ok]) if hasattr(np, "trapezoid") else np.trapz(v[ok], x[ok]))


def _orbit_accuracy(run: Run, record: dict) -> Optional[float]:
    labels = run.labels()
    if labels is None or not record.get("arrays"):
        return None
    top1 = run.arrays(record).get("top1")
    if top1 is None or top1.shape[0] != labels.shape[0]:
        return None
    ok = top1 >= 0
    return float((top1 == labels[:, None])[ok].mean()) if ok.any() else math.nan


def summary(runs: Sequence[Run], symmetry: str, by: str = "epoch") -> list[dict]:
    """One row per run (:data:`SUMMARY_COLUMNS`), at each run's last check of ``symmetry``.

    ``final_error`` / ``best_error`` are the last and lowest ``error_mean`` (``best_at`` where, in ``by`` units);
    ``error_auc`` the area under the ``error_mean`` curve over ``by`` (trapezoids; equal spans make it comparable);
    ``orbit_accuracy`` the fraction of (sample, element) pairs classified correctly at the last check (records with
    top-1 classes and labels only, else ``None``); ``flip_rate``, ``exact_error`` and ``interp_error`` as logged at
    the last check; ``exact_elements`` / ``interp_elements`` how many elements of each kind the check used.
    """
    rows = []
    for run in runs:
        x, v = curve(run, symmetry, "error_mean", by)
        last = check_at(run, symmetry)
        finite = np.isfinite(v)
        best = int(np.nanargmin(v)) if finite.any() else None
        exact = run.arrays(last).get("exact") if last.get("arrays") else None
        n_exact = None if exact is None else int(np.asarray(exact, dtype=bool).sum())
        rows.append(
            {
                "run": run.name,
                "checks": len(x),
                "final_error": float(v[-1]),
                "best_error": math.nan if best is None else float(v[best]),
                "best_at": None if best is None else float(x[best]),
                "error_auc": _area(x, v),
                "orbit_accuracy": _orbit_accuracy(run, last),
                "flip_rate": last["metrics"].get("flip_rate"),
                "exact_error": last["metrics"].get("exact_error"),
                "interp_error": last["metrics"].get("interp_error"),
                "exact_elements": n_exact,
                "interp_elements": None if exact is None else int(len(exact) - n_exact),
                "probe": run.fingerprint,
            }
        )
    return rows


def aggregate_curve(run: Run, symmetry: str, check: int = -1, which: str = "errors") -> dict[str, np.ndarray]:
    """The aggregate NERO curve of one check: ``elements [K, p]``, ``mean``, ``q25``, ``q75`` over samples ``[K]``
    of ``which`` (``"errors"``, ``"confidence"``, ``"flips"``), NaN pairs left out."""
    arrays = run.arrays(check_at(run, symmetry, check))
    if which not in arrays:
        raise CompareError(f"The records of {run.name} hold no {which!r} (older records, or not class scores).")
    v = np.asarray(arrays[which], dtype=np.float64)
    with np.errstate(all="ignore"), _quiet():
        return {
            "elements": np.asarray(arrays["elements"], dtype=np.float64).reshape(v.shape[1], -1),
            "mean": np.nanmean(v, 0),
            "q25": np.nanquantile(v, 0.25, 0),
            "q75": np.nanquantile(v, 0.75, 0),
        }


def per_class(run: Run, symmetry: str, check: int = -1) -> dict[int, float]:
    """Class → mean error over its samples and the elements at one check (needs the probe's labels)."""
    labels = run.labels()
    if labels is None:
        raise CompareError(f"The records of {run.name} hold no probe labels (older records, or an unlabelled probe).")
    errors = np.asarray(run.arrays(check_at(run, symmetry, check))["errors"], dtype=np.float64)
    with _quiet():
        return {int(c): float(np.nanmean(errors[labels == c])) for c in np.unique(labels)}


def same_probe(runs: Sequence[Run], symmetry: str) -> Optional[str]:
    """Why ``runs`` cannot be paired sample by sample on ``symmetry`` (``None`` when they can): the probes'
    fingerprints and the elements must match."""
    fingerprints = {run.name: run.fingerprint for run in runs}
    unknown = [name for name, f in fingerprints.items() if f is None]
    if unknown:
        return f"{', '.join(unknown)} were recorded without a probe fingerprint (older records)"
    if len(set(fingerprints.values())) > 1:
        listing = ", ".join(f"{name}: {f}" for name, f in fingerprints.items())
        return f"the runs probed different samples (probe fingerprints {listing})"
    elements = {run.symmetry_spec(symmetry).get("elements_fingerprint") for run in runs}
    if len(elements) > 1:
        return f"the runs checked {symmetry!r} at different group elements"
    return None


def paired(
    runs: Sequence[Run],
    symmetry: str,
    check: int = -1,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    reference: Optional[Union[str, int]] = None,
) -> list[dict]:
    """Each run against the reference, sample by sample, on the same probe: per sample the mean error over elements.

    For each other run ``b`` against the reference ``a`` (:func:`~eqmonitor.compare.runs.pick_reference`:
    ``runs[0]`` unless ``reference`` names another): ``reference_better`` / ``run_better`` /
    ``ties`` (samples where ``a``'s error is lower / higher / equal), ``mean_diff`` = mean over samples of ``e_b − e_a``
    (negative: ``b`` is more equivariant) and its percentile bootstrap interval ``ci_low``, ``ci_high`` at
    ``level`` (``n_boot`` resamples of the samples, ``numpy.random.default_rng(seed)``).

    Raises:
        CompareError: the probes or elements differ (see :func:`same_probe`), or there is one run.
        UsageError: ``reference`` is none of the runs, or ``check`` is past a run's end.
    """
    if len(runs) < 2:
        raise CompareError("Paired statistics need at least two runs.")
    why = same_probe(runs, symmetry)
    if why is not None:
        raise CompareError(f"No paired statistics: {why}.")
    ref = pick_reference(runs, reference)
    ordered = [ref] + [run for run in runs if run is not ref]
    with _quiet():
        per_sample = [np.nanmean(run.arrays(check_at(run, symmetry, check))["errors"].astype(np.float64), 1)
                      for run in ordered]  # fmt: skip
    a = per_sample[0]
    rng = np.random.default_rng(seed)
    rows = []
    for run, b in zip(ordered[1:], per_sample[1:]):
        ok = np.isfinite(a) & np.isfinite(b)
        d = (b - a)[ok]
        n = int(ok.sum())
        if n == 0:
            lo = hi = mean = math.nan
        else:
            boots = d[rng.integers(0, n, size=(n_boot, n))].mean(1)
            lo, hi = (float(q) for q in np.quantile(boots, [(1 - level) / 2, (1 + level) / 2]))
            mean = float(d.mean())
        rows.append(
            {
                "reference": ref.name,
                "run": run.name,
                "samples": n,
                "reference_better": int((d > 0).sum()),
                "run_better": int((d < 0).sum()),
                "ties": int((d == 0).sum()),
                "mean_diff": mean,
                "ci_low": lo,
                "ci_high": hi,
                "level": level,
            }
        )
    return rows


class _quiet:
    """Silence numpy's warnings about all-NaN slices (their result is NaN, which is what is wanted)."""

    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: Any) -> None:
        self._ctx.__exit__(*exc)
