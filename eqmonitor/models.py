"""Deprecated: moved to :mod:`eqmonitor.demos.models` (import from ``eqmonitor.demos``); this path goes away in the next
release."""

import warnings

from eqmonitor.demos.models import C4EquivariantCNN, C4SymmetricConv2d, DeepSets, GroupAveraged, RadialProfile, SmallCNN

warnings.warn(
    "`eqmonitor.models` moved to `eqmonitor.demos.models`; import from `eqmonitor.demos` instead "
    "(the old path goes away in the next release).",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["C4EquivariantCNN", "C4SymmetricConv2d", "DeepSets", "GroupAveraged", "RadialProfile", "SmallCNN"]
