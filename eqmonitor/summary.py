"""The summary of a check: every number eqmonitor logs about an orbit-error table, computed in one place.

The monitor (``equivariance/<symmetry>/<name>``), :class:`~eqmonitor.metric.EquivarianceError`,
:func:`~eqmonitor.functional.equivariance_error`, the audit report and the records all read an
:class:`OrbitSummary`, whose fields carry the logged names:

=================  ====================================================================================
``error_mean``     mean error over the finite (sample, element) pairs (each pair weighs the same)
``error_max``      largest finite error
``error_p95``      95th percentile of the finite errors (linear interpolation, as ``torch.quantile``)
``nonfinite``      *fraction* of pairs left out because the output (or the expected output) was NaN/Inf
``exact_error``    mean over the pairs at exact elements (index maps, no interpolation)
``interp_error``   mean over the pairs at interpolated elements
``flip_rate``      fraction of pairs with finite outputs whose top-1 class changed (class scores only)
=================  ====================================================================================

plus ``error_std`` (population), ``nonfinite_count`` (the count behind ``nonfinite``) and the per-element curves
``per_element_mean`` / ``per_element_max`` / ``per_element_std`` ``[K]``. Every statistic is NaN when there is no
finite pair; ``exact_error`` / ``interp_error`` are ``None`` when the elements hold none of that kind, ``flip_rate``
when the outputs are not class scores, ``error_p95`` when the per-pair values were not kept (a Metric without
``keep_samples``).

The statistics are built from additive per-element sums (:func:`_summary_update`), so that batches and processes
combine exactly (:func:`_summary_compute` divides only at the end). Non-finite values are counted apart and never
enter a sum. This module imports only torch: every layer of the package can use it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional, Protocol

import torch
from torch import Tensor

__all__ = ["LOGGED", "REDUCTIONS", "OrbitSummary", "OrbitTables", "summarize"]


class OrbitTables(Protocol):
    """What :func:`summarize` reads of an orbit result (:class:`~eqmonitor.results.OrbitErrors` is one): this module
    sits below the results, so it names the tables it needs instead of importing their class."""

    exact: Tensor
    flips: Optional[Tensor]
    nonfinite: Tensor

    def values(self, which: str = "errors") -> Tensor: ...

_F64 = torch.float64

#: the logged scalars of a summary, in logging order (``equivariance/<symmetry>/<name>``)
LOGGED = ("error_mean", "error_max", "error_p95", "nonfinite", "exact_error", "interp_error", "flip_rate")
#: the scalars a Metric's ``compute()`` can return: ``reduction`` -> summary field
REDUCTIONS = {"mean": "error_mean", "max": "error_max", "p95": "error_p95"}

#: additive state name -> how it reduces across batches and processes (torchmetrics ``dist_reduce_fx``)
_STATE_REDUCE = {
    "sum": "sum",
    "sum_sq": "sum",
    "count": "sum",
    "max": "max",
    "nonfinite": "sum",
    "flips": "sum",
    "flip_count": "sum",
    "flip_pairs": "sum",
}


@dataclass(frozen=True)
class OrbitSummary:
    """The summary of ``N`` samples × ``K`` elements of orbit errors (0-d float64 tensors unless noted, on the
    errors' device). See the module docstring for what each field means.

    Attributes:
        error_mean, error_max, error_std: over all finite pairs.
        error_p95: the 95th percentile, or ``None`` when the per-pair values were not kept.
        nonfinite: fraction of pairs left out (NaN/Inf); ``nonfinite_count``: their number (int64).
        exact_error, interp_error: means over exact / interpolated elements (``None`` if there is no such element).
        flip_rate: top-1 change rate (``None`` if the outputs are not class scores).
        per_element_mean, per_element_max, per_element_std: ``[K]`` over the finite pairs of each element.
        exact: ``bool [K]`` which elements are exact.
    """

    error_mean: Tensor
    error_max: Tensor
    error_std: Tensor
    error_p95: Optional[Tensor]
    nonfinite: Tensor
    nonfinite_count: Tensor
    exact_error: Optional[Tensor]
    interp_error: Optional[Tensor]
    flip_rate: Optional[Tensor]
    per_element_mean: Tensor
    per_element_max: Tensor
    per_element_std: Tensor
    exact: Tensor

    def scalars(self) -> dict[str, Tensor]:
        """The logged scalars present (not ``None``), in :data:`LOGGED` order, as 0-d tensors: ready for
        ``LightningModule.log_dict``."""
        return {name: getattr(self, name) for name in LOGGED if getattr(self, name) is not None}

    def to_floats(self) -> dict[str, float]:
        """:meth:`scalars` as Python floats, with one device-to-host transfer for all of them."""
        stats = self.scalars()
        values = torch.stack([v.to(_F64).reshape(()) for v in stats.values()]).cpu().tolist()
        return dict(zip(stats, values))

    def reduce(self, reduction: str = "mean") -> Tensor:
        """The one scalar a Metric's ``compute()`` returns: ``"mean"`` | ``"max"`` | ``"p95"``."""
        if reduction not in REDUCTIONS:
            raise ValueError(f"Expected `reduction` to be one of {tuple(REDUCTIONS)}, but got {reduction!r}.")
        value = getattr(self, REDUCTIONS[reduction])
        if value is None:
            raise ValueError(
                "`reduction='p95'` needs the per-pair values: construct the metric with `reduction='p95'` or "
                "`keep_samples=True`."
            )
        return value

    def to(self, device: torch.device | str) -> "OrbitSummary":
        """A copy with every tensor on ``device``."""
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return OrbitSummary(**{k: v if v is None else v.to(device) for k, v in moved.items()})


def _summary_default(k: int, device: Optional[torch.device | str] = None) -> dict[str, Tensor]:
    """The additive statistics of no data for ``k`` elements: zeros, and ``-inf`` for the running max."""
    out = {name: torch.zeros(k, dtype=torch.long, device=device) for name in _STATE_REDUCE}
    for name in ("sum", "sum_sq"):
        out[name] = torch.zeros(k, dtype=_F64, device=device)
    out["max"] = torch.full((k,), -float("inf"), dtype=_F64, device=device)
    return out


def _summary_update(values: Tensor, nonfinite: Tensor, flips: Optional[Tensor] = None) -> dict[str, Tensor]:
    """Additive statistics ``[K]`` of one table ``values [N, K]`` (one sample per row, one element per column).

    A pair is left out (counted in ``nonfinite``) when ``nonfinite [N, K]`` marks it (NaN/Inf model output) or its
    value is not finite. Flips are counted over the pairs with finite outputs whose flip is defined (not NaN).

    Args:
        values: ``[N, K]`` errors.
        nonfinite: ``bool [N, K]`` pairs whose output was not finite.
        flips: ``[N, K]`` top-1 changes (bool, or float64 with NaN where undefined), or ``None`` (then ``flips``,
            ``flip_count`` and ``flip_pairs`` are zero).

    Returns:
        ``{"sum", "sum_sq", "max": float64 [K], "count", "nonfinite", "flips", "flip_count", "flip_pairs": int64
        [K]}`` on the device of ``values`` (``flip_pairs``: all pairs with a flip table, finite or not, so that a
        classifier whose every output was NaN still reports a (NaN) flip rate).

    Example:
        >>> v = torch.tensor([[0.0, 1.0], [2.0, float("nan")]])
        >>> s = _summary_update(v, torch.zeros(2, 2, dtype=torch.bool))
        >>> s["sum"].tolist(), s["count"].tolist(), s["max"].tolist(), s["nonfinite"].tolist()
        ([2.0, 1.0], [2, 1], [2.0, 1.0], [0, 1])
    """
    if values.ndim != 2 or nonfinite.shape != values.shape:
        raise RuntimeError(
            f"Expected `values` [N, K] and `nonfinite` of the same shape, but got {tuple(values.shape)} and "
            f"{tuple(nonfinite.shape)}."
        )
    v = values.detach().to(_F64)
    bad = nonfinite.to(torch.bool) | ~torch.isfinite(v)
    clean = v.masked_fill(bad, 0.0)
    out = {
        "sum": clean.sum(0),
        "sum_sq": clean.square().sum(0),
        "count": (~bad).sum(0),
        "max": v.masked_fill(bad, -float("inf")).amax(0),
        "nonfinite": bad.sum(0),
    }
    if flips is None:
        out["flips"] = out["flip_count"] = out["flip_pairs"] = torch.zeros_like(out["count"])
    else:
        f = flips.detach()
        defined = ~nonfinite.to(torch.bool) & (~f.isnan() if f.is_floating_point() else True)
        out["flips"] = ((f != 0) & defined).sum(0)
        out["flip_count"] = defined.sum(0)
        out["flip_pairs"] = torch.full_like(out["count"], values.shape[0])
    return out


def _mean_where(total: Tensor, count: Tensor, columns: Tensor) -> Optional[Tensor]:
    """``sum / count`` over the selected element columns; ``None`` when no column is selected."""
    if not bool(columns.any()):
        return None
    return total.masked_fill(~columns, 0.0).sum() / count.masked_fill(~columns, 0).sum().to(_F64)


def _summary_compute(
    stats: dict[str, Tensor],
    exact: Tensor,
    values: Optional[Tensor] = None,
    with_flips: Optional[bool] = None,
) -> OrbitSummary:
    """The :class:`OrbitSummary` of accumulated statistics ``[K]`` (from :func:`_summary_update`).

    Args:
        stats: the additive statistics.
        exact: ``bool [K]`` exact elements.
        values: ``[N, K]`` every kept per-pair value (NaN where left out), for ``error_p95``; ``None``: no p95.
        with_flips: whether the outputs are class scores (default: whether ``flip_pairs`` counts any pair).

    Example:
        >>> s = _summary_update(torch.tensor([[0.0, 1.0], [2.0, 5.0]]), torch.zeros(2, 2, dtype=torch.bool))
        >>> out = _summary_compute(s, torch.tensor([True, False]))
        >>> out.error_mean.item(), out.error_max.item(), out.exact_error.item(), out.per_element_mean.tolist()
        (2.0, 5.0, 1.0, [1.0, 3.0])
    """
    total_sum, count, mx = stats["sum"], stats["count"], stats["max"]
    exact = exact.to(device=total_sum.device, dtype=torch.bool)
    total = count.sum().to(_F64)
    mean = total_sum.sum() / total
    n = count.to(_F64)
    per_mean = total_sum / n
    nan = torch.tensor(float("nan"), dtype=_F64, device=total_sum.device)
    n_bad = stats["nonfinite"].sum()
    if with_flips is None:
        with_flips = bool(stats["flip_pairs"].sum() > 0)
    p95 = None
    if values is not None:
        p95 = torch.nanquantile(values.to(_F64).flatten(), 0.95) if values.numel() else nan
    return OrbitSummary(
        error_mean=mean,
        error_max=torch.where(total > 0, mx.amax(), nan) if mx.numel() else nan,
        error_std=(stats["sum_sq"].sum() / total - mean.square()).clamp_min(0.0).sqrt(),
        error_p95=p95,
        nonfinite=n_bad.to(_F64) / (total + n_bad.to(_F64)),
        nonfinite_count=n_bad,
        exact_error=_mean_where(total_sum, count, exact),
        interp_error=_mean_where(total_sum, count, ~exact),
        flip_rate=stats["flips"].sum().to(_F64) / stats["flip_count"].sum().to(_F64) if with_flips else None,
        per_element_mean=per_mean,
        per_element_max=torch.where(count > 0, mx, nan),
        per_element_std=(stats["sum_sq"] / n - per_mean.square()).clamp_min(0.0).sqrt(),
        exact=exact,
    )


def summarize(orbit: OrbitTables, which: str = "errors") -> OrbitSummary:
    """The :class:`OrbitSummary` of one :class:`~eqmonitor.results.OrbitErrors` table (``which``: ``"errors"``,
    the symmetry's distance, ``"rel_errors"`` or ``"abs_errors"``), with ``error_p95``.

    What the monitor logs (each field under ``equivariance/<symmetry>/<field>``), what the audit report prints and
    what :class:`~eqmonitor.metric.EquivarianceError` computes from the same pairs.

    Example:
        >>> import torch, eqmonitor as eqm
        >>> sym = eqm.Symmetry.from_spec(group="c4", error="max_abs")
        >>> res = eqm.functional.orbit_errors(lambda x: x[:, :, 0, 0], torch.eye(2)[None, None], sym, [0, 1])
        >>> {k: round(v, 4) for k, v in summarize(res).to_floats().items()}
        {'error_mean': 0.5, 'error_max': 1.0, 'error_p95': 0.95, 'nonfinite': 0.0, 'exact_error': 0.5}
    """
    values = orbit.values(which)
    stats = _summary_update(values, orbit.nonfinite, orbit.flips)
    return _summary_compute(stats, orbit.exact, values, with_flips=orbit.flips is not None)
