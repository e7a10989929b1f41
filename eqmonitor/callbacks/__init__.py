"""Lightning callbacks: the stateful shell that runs the functional probes during training."""

from eqmonitor.callbacks.guard import EquivarianceBreachError, EquivarianceGuard
from eqmonitor.callbacks.monitor import EquivarianceMonitor

__all__ = ["EquivarianceBreachError", "EquivarianceGuard", "EquivarianceMonitor"]
