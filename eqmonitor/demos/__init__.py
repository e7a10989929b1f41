"""Demo code: reference models, the bundled digits and a reference Lightning set-up on them, for the examples, the
tests and the benchmarks (as Lightning keeps ``lightning.pytorch.demos``). Not part of the measuring library.

- :mod:`eqmonitor.demos.models`: small networks with known symmetry (``SmallCNN``, ``GroupAveraged``, ...).
- :mod:`eqmonitor.demos.data`: ``load_digits``, scikit-learn's bundled digits as image tensors.
- :mod:`eqmonitor.demos.lightning_digits`: ``DigitsClassifier`` and ``DigitsDataModule`` (loaded on first use, as
  they import Lightning).
- :mod:`eqmonitor.demos.study`: the augmentation study of ``make demo`` (``run_study``, ``summary_lines``), four
  ways to get rotation symmetry trained, compared and explored.
"""

from __future__ import annotations

from typing import Any

from eqmonitor.demos.data import load_digits
from eqmonitor.demos.models import (
    C4EquivariantCNN,
    C4SymmetricConv2d,
    DeepSets,
    GroupAveraged,
    RadialProfile,
    SmallCNN,
)

_LIGHTNING = ("DigitsClassifier", "DigitsDataModule")


def __getattr__(name: str) -> Any:
    if name in _LIGHTNING:
        from eqmonitor.demos import lightning_digits

        return getattr(lightning_digits, name)
    raise AttributeError(f"module 'eqmonitor.demos' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "C4EquivariantCNN",
    "C4SymmetricConv2d",
    "DeepSets",
    "DigitsClassifier",
    "DigitsDataModule",
    "GroupAveraged",
    "RadialProfile",
    "SmallCNN",
    "load_digits",
]
