"""eqmonitor: measure and watch a model's symmetry (equivariance, invariance, covariance) while it trains."""

from eqmonitor import actions, functional, groups, models
from eqmonitor.audit import assert_equivariant, audit
from eqmonitor.report import AuditReport, verdict
from eqmonitor.results import GradientErrors, LayerErrors, OrbitErrors
from eqmonitor.symmetry import Symmetry

__version__ = "0.1.0"

_LAZY = {  # shells that import lightning / torchmetrics: loaded on first use so `import eqmonitor` stays light
    "EquivarianceMonitor": "eqmonitor.callbacks",
    "EquivarianceGuard": "eqmonitor.callbacks",
    "EquivarianceBreachError": "eqmonitor.callbacks",
    "EquivarianceError": "eqmonitor.metric",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'eqmonitor' has no attribute {name!r}")


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
    "functional",
    "groups",
    "models",
    "verdict",
]
