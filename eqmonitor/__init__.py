"""eqmonitor: measure and watch a model's symmetry (equivariance, invariance, covariance) while it trains."""

from eqmonitor import actions, functional, groups, models
from eqmonitor.audit import assert_equivariant, audit
from eqmonitor.report import AuditReport, verdict
from eqmonitor.results import GradientErrors, LayerErrors, OrbitErrors
from eqmonitor.symmetry import Symmetry

__version__ = "0.1.0"

__all__ = [
    "AuditReport",
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
