"""Deprecated: moved to :mod:`eqmonitor.demos.data` (import from ``eqmonitor.demos``); this path goes away in the next
release."""

import warnings

from eqmonitor.demos.data import load_digits

warnings.warn(
    "`eqmonitor.data` moved to `eqmonitor.demos.data`; import from `eqmonitor.demos` instead "
    "(the old path goes away in the next release).",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["load_digits"]
