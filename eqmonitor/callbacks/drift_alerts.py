"""The monitor's drift alerts: a :class:`~eqmonitor.alerts.DriftTracker` fed by every check, its alerts sent on
rank 0 as one Python warning and one ``wandb.alert`` each."""

from __future__ import annotations

import warnings
from typing import Any, Optional

from eqmonitor.alerts import Alert, DriftTracker
from eqmonitor.sinks import send_alert

__all__ = ["EquivarianceDriftWarning", "drift_tracker", "emit_drift_alerts"]


class EquivarianceDriftWarning(UserWarning):
    """A monitored scalar drifted above its references (one warning per drift event)."""


def drift_tracker(
    keys: Optional[list[str]], factor: float, patience: int, min_value: float, wait_duration: float
) -> DriftTracker:
    """The monitor's tracker: ``keys=None`` watches ``error_mean``; ``[]`` watches nothing (alerts off)."""
    keys = ["error_mean"] if keys is None else list(keys)
    return DriftTracker(keys=keys, factor=factor, patience=patience, min_value=min_value, wait_duration=wait_duration)


def emit_drift_alerts(trainer: Any, alerts: list[Alert]) -> None:
    """Rank 0: one :class:`EquivarianceDriftWarning` and one ``wandb.alert`` per drift event."""
    if not trainer.is_global_zero:
        return
    for alert in alerts:
        warnings.warn(f"{alert.title}: {alert.text}", EquivarianceDriftWarning, stacklevel=4)
        send_alert(trainer.loggers, alert.title, alert.text, alert.level, alert.wait_duration)
