"""Per-element sufficient statistics of orbit errors: what a Metric accumulates and processes reduce.

Every statistic is additive over samples (``sum``, ``sum_sq``, counts) or reduces by ``max``, so statistics of
several batches (or ranks) combine exactly into the statistics of all the data; ``_orbit_stats_compute`` divides
only at the end. Non-finite values are counted apart and never enter a sum.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

_F64 = torch.float64

#: state name -> how it reduces across batches and processes (torchmetrics ``dist_reduce_fx``)
_STATS = {
    "sum": "sum",
    "sum_sq": "sum",
    "count": "sum",
    "max": "max",
    "nonfinite": "sum",
    "flips": "sum",
    "flip_count": "sum",
    "flip_pairs": "sum",
}


def _orbit_stats_default(k: int, device: Optional[torch.device | str] = None) -> dict[str, Tensor]:
    """The statistics of no data for ``k`` elements: zeros, and ``-inf`` for the running max."""
    out = {name: torch.zeros(k, dtype=torch.long, device=device) for name in _STATS}
    for name in ("sum", "sum_sq"):
        out[name] = torch.zeros(k, dtype=_F64, device=device)
    out["max"] = torch.full((k,), -float("inf"), dtype=_F64, device=device)
    return out


def _orbit_stats_update(values: Tensor, nonfinite: Tensor, flips: Optional[Tensor] = None) -> dict[str, Tensor]:
    """Statistics ``[K]`` of one table ``values [N, K]`` (one sample per row, one element per column).

    A pair counts as non-finite when ``nonfinite [N, K]`` marks it (NaN/Inf model output) or its value is not
    finite; such pairs are left out of ``sum``, ``sum_sq``, ``count`` and ``max``. Flips are counted over the pairs
    whose outputs were finite (not ``nonfinite``) and whose flip is defined (not NaN), as
    :meth:`OrbitErrors.flip_rate <eqmonitor.results.OrbitErrors.flip_rate>` does.

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
        >>> s = _orbit_stats_update(v, torch.zeros(2, 2, dtype=torch.bool))
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
    ok = ~bad
    clean = v.masked_fill(bad, 0.0)
    out = {
        "sum": clean.sum(0),
        "sum_sq": clean.square().sum(0),
        "count": ok.sum(0),
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


def _orbit_stats_compute(
    sum: Tensor,
    sum_sq: Tensor,
    count: Tensor,
    max: Tensor,
    nonfinite: Tensor,
    flips: Tensor,
    flip_count: Tensor,
    flip_pairs: Optional[Tensor] = None,
    with_flips: Optional[bool] = None,
) -> dict[str, Tensor]:
    """Summaries of accumulated statistics ``[K]``; NaN where there is no finite value.

    ``mean`` and ``std`` (population, ``ddof=0``) are over all finite (sample, element) pairs, so each pair weighs
    the same (not a mean of per-element means).

    Returns:
        ``mean``, ``max``, ``std`` (scalars), ``per_element_mean``, ``per_element_max``, ``per_element_std`` ``[K]``,
        ``nonfinite`` (int64 scalar count) and, if ``with_flips`` (default: whether ``flip_pairs`` counts any pair),
        ``flip_rate`` (fraction of the pairs with finite outputs whose top-1 class changed; NaN if none).

    Example:
        >>> s = _orbit_stats_update(torch.tensor([[0.0, 1.0], [2.0, 5.0]]), torch.zeros(2, 2, dtype=torch.bool))
        >>> out = _orbit_stats_compute(**s)
        >>> out["mean"].item(), out["max"].item(), out["per_element_mean"].tolist()
        (2.0, 5.0, [1.0, 3.0])
    """
    total = count.sum().to(_F64)
    mean = sum.sum() / total
    n = count.to(_F64)
    per_mean = sum / n
    has = count > 0
    nan = torch.tensor(float("nan"), dtype=_F64, device=sum.device)
    out = {
        "mean": mean,
        "max": torch.where(total > 0, max.amax(), nan) if max.numel() else nan,
        "std": (sum_sq.sum() / total - mean.square()).clamp_min(0.0).sqrt(),
        "per_element_mean": per_mean,
        "per_element_max": torch.where(has, max, nan),
        "per_element_std": (sum_sq / n - per_mean.square()).clamp_min(0.0).sqrt(),
        "nonfinite": nonfinite.sum(),
    }
    if with_flips is None:
        with_flips = flip_pairs is not None and bool(flip_pairs.sum() > 0)
    if with_flips:
        out["flip_rate"] = flips.sum().to(_F64) / flip_count.sum().to(_F64)
    return out
