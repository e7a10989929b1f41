"""Deprecated: moved to :mod:`eqmonitor.demos.lightning_digits` (import from ``eqmonitor.demos``); this path goes
away in the next release."""

import warnings

from eqmonitor.demos.lightning_digits import DigitsClassifier, DigitsDataModule

warnings.warn(
    "`eqmonitor.lightning_digits` moved to `eqmonitor.demos.lightning_digits`; import from `eqmonitor.demos` instead "
    "(the old path goes away in the next release).",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["DigitsClassifier", "DigitsDataModule"]
