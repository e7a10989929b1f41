"""eqmonitor: measure and watch a model's symmetry (equivariance, invariance, covariance) while it trains."""

from __future__ import annotations

import warnings
from typing import Any

from eqmonitor import actions, functional, groups
from eqmonitor._version import __version__ as __version__
from eqmonitor.audit import assert_equivariant, audit
from eqmonitor.report import AuditReport, verdict
from eqmonitor.results import GradientErrors, LayerErrors, OrbitErrors
from eqmonitor.symmetry import Symmetry

# Loaded on first use, so that `import eqmonitor` stays light: the shells import Lightning / torchmetrics, and the
# demos are not part of the measuring library. `eqm.models` is the deprecated path of `eqm.demos`' models.
_CALLBACKS = ("EquivarianceMonitor", "EquivarianceGuard", "EquivarianceBreachError")
_LAZY = (*_CALLBACKS, "EquivarianceError", "demos")


def __getattr__(name: str) -> Any:
    if name in _CALLBACKS:
        from eqmonitor import callbacks

        return getattr(callbacks, name)
    if name == "EquivarianceError":
        from eqmonitor.metric import EquivarianceError

        return EquivarianceError
    if name == "demos":  # not `from eqmonitor import demos`: its fromlist check would call this hook again
        import eqmonitor.demos as demos

        return demos
    if name == "models":
        warnings.warn(
            "`eqmonitor.models` moved to `eqmonitor.demos`; use `eqmonitor.demos.SmallCNN` etc. "
            "(the old path goes away in the next release).",
            DeprecationWarning,
            stacklevel=2,
        )
        from eqmonitor.demos import models

        return models
    raise AttributeError(f"module 'eqmonitor' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names with the lazy ones, so that IDEs and ``dir()`` list them before first use."""
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AuditReport",
    "EquivarianceBreachError",
    "EquivarianceError",
    "EquivarianceGuard",
    "EquivarianceMonitor",
    "GradientErrors",
    "LayerErrors",
    "OrbitErrors",
    "Symmetry",
    "actions",
    "assert_equivariant",
    "audit",
    "demos",
    "functional",
    "groups",
    "verdict",
]
