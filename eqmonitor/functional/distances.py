"""Distances between an actual output ``h(g·x)`` and the expected one ``g·h(x)``, one value per sample: ``relative``
(default), ``max_abs``, ``rms``, ``symmetric_relative``, ``kl``, ``flip``, ``confidence``; see
:mod:`eqmonitor._distances` for the formulas and how they stay finite on huge outputs.

This is the public path. The definitions live one layer down, in ``eqmonitor._distances``, because
:class:`~eqmonitor.symmetry.Symmetry` resolves its ``error`` with them and ``eqmonitor.functional`` is built on
``Symmetry``.
"""

from eqmonitor._distances import (
    BOUNDED_DISTANCES,
    CLASSIFICATION_DISTANCES,
    DISTANCES,
    EPS,
    Distance,
    confidence,
    flip,
    kl,
    max_abs,
    relative,
    resolve_distance,
    rms,
    symmetric_relative,
)

__all__ = [
    "BOUNDED_DISTANCES",
    "CLASSIFICATION_DISTANCES",
    "DISTANCES",
    "EPS",
    "Distance",
    "confidence",
    "flip",
    "kl",
    "max_abs",
    "relative",
    "resolve_distance",
    "rms",
    "symmetric_relative",
]
