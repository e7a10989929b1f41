"""Verdict bands and tolerances: how small a relative error must be to count as exact, excellent or approximate
for a model of a given dtype, and the default tolerance derived from them.

The bands are in :data:`VERDICT_BANDS` (a table of them heads :mod:`eqmonitor.report`).

A low-level module: the probes (layer-wise and gradient errors) take their default tolerance from here, and
:mod:`eqmonitor.report` re-exports all of it; both sit above.
"""

from __future__ import annotations

import math

import torch

__all__ = ["VERDICTS", "VERDICT_BANDS", "default_tolerance", "verdict", "verdict_bands"]


VERDICT_BANDS: dict[torch.dtype, tuple[float, float, float]] = {
    torch.float64: (1e-12, 1e-9, 1e-2),
    torch.float32: (1e-6, 1e-4, 1e-2),
    torch.float16: (1e-3, 1e-2, 5e-2),
    torch.bfloat16: (1e-2, 3e-2, 1e-1),
}
VERDICTS = ("exact", "excellent", "approximate", "broken")


def verdict_bands(dtype: torch.dtype) -> tuple[float, float, float]:
    """The ``(exact, excellent, approximate)`` upper bounds for ``dtype`` (float32's for a dtype not listed)."""
    return VERDICT_BANDS.get(dtype, VERDICT_BANDS[torch.float32])


def verdict(relative_error: float, dtype: torch.dtype = torch.float32) -> str:
    """The band of a relative error for a model of ``dtype``: ``exact`` | ``excellent`` | ``approximate`` |
    ``broken`` (``non-finite`` for NaN).

    Example:
        >>> verdict(3e-7), verdict(3e-7, torch.float64), verdict(0.2)
        ('exact', 'approximate', 'broken')
    """
    if not math.isfinite(relative_error):
        return "non-finite"
    for name, bound in zip(VERDICTS, verdict_bands(dtype)):
        if relative_error < bound:
            return name
    return "broken"


def default_tolerance(dtype: torch.dtype) -> float:
    """The largest relative error that still counts as ``excellent`` for ``dtype`` (1e-4 for float32)."""
    return verdict_bands(dtype)[1]
