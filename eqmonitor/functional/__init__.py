"""Pure, batched measuring functions (no logging, no global RNG, no change to the model)."""

from eqmonitor.functional.distances import DISTANCES, resolve_distance
from eqmonitor.functional.gradients import gradient_errors
from eqmonitor.functional.layerwise import feature_action, layer_errors
from eqmonitor.functional.orbit import noise_floor, orbit_errors

__all__ = [
    "DISTANCES",
    "feature_action",
    "gradient_errors",
    "layer_errors",
    "noise_floor",
    "orbit_errors",
    "resolve_distance",
]
