"""Pure, batched measuring functions (no logging, no global RNG, no change to the model)."""

from eqmonitor.functional._coupling import BatchCouplingWarning
from eqmonitor.functional.consensus import REFERENCES, consensus, consensus_errors, orbit_errors_with_consensus
from eqmonitor.functional.distances import DISTANCES, resolve_distance
from eqmonitor.functional.equivariance import equivariance_error
from eqmonitor.functional.gradients import gradient_errors
from eqmonitor.functional.layerwise import (
    FeatureAdapter,
    TokenGridAction,
    feature_action,
    layer_errors,
    register_feature_adapter,
)
from eqmonitor.functional.lie import LieDerivative, image_tangent, lie_derivative
from eqmonitor.functional.orbit import noise_floor, orbit_errors

__all__ = [
    "BatchCouplingWarning",
    "DISTANCES",
    "REFERENCES",
    "FeatureAdapter",
    "LieDerivative",
    "TokenGridAction",
    "consensus",
    "consensus_errors",
    "equivariance_error",
    "feature_action",
    "gradient_errors",
    "image_tangent",
    "layer_errors",
    "lie_derivative",
    "noise_floor",
    "orbit_errors",
    "orbit_errors_with_consensus",
    "register_feature_adapter",
    "resolve_distance",
]
