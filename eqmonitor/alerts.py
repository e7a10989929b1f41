"""Regression alerts: equivariance drifting away from its best value so far, or from its first value after warm-up.

Pure bookkeeping (no logging, no I/O): :class:`DriftTracker` turns each check's scalars into :class:`Alert` s; the
monitor sends them (``wandb.alert`` on rank 0, a Python warning and a log line everywhere) and writes them to the
records. Its state (baselines, streaks, throttles) round-trips through ``state_dict`` so a resumed run keeps them.

A rule fires when ``value > factor * reference`` (and above ``min_value``, so noise at float precision never
alerts) for ``patience`` consecutive checks; it then stays quiet for ``wait_duration`` seconds (the same throttle
``wandb.alert`` applies server-side, mirrored here so warnings and records are throttled alike).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

__all__ = ["Alert", "DriftTracker"]

REFERENCES = ("best", "init")


@dataclass
class Alert:
    """One alert: a stable ``title`` per (symmetry, key), so W&B groups and throttles it; ``reference`` names the
    references it drifted from (``"best"``, ``"init"`` or ``"best+init"``)."""

    title: str
    text: str
    level: str
    symmetry: str
    key: str
    reference: str
    value: float
    reference_value: float
    global_step: int
    epoch: int
    wait_duration: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DriftTracker:
    """Baselines and alert rules for the scalars of one or more symmetries.

    Args:
        keys: the scalar names to watch (e.g. ``"error_mean"``).
        factor: alert when a value exceeds ``factor ×`` its reference.
        patience: consecutive drifting checks before an alert.
        min_value: values at or below this never alert (float-precision noise of exact models).
        references: which references to compare against: ``"best"`` (lowest so far) and/or ``"init"`` (the first
            check after warm-up).
        wait_duration: seconds during which a fired rule stays quiet.
        clock: the time source (tests pass a fake one).

    Example:
        >>> t = DriftTracker(keys=["error_mean"], factor=2.0, wait_duration=0.0)
        >>> t.update("rot", {"error_mean": 0.1}, global_step=0, epoch=0)
        []
        >>> [a.reference for a in t.update("rot", {"error_mean": 0.5}, global_step=10, epoch=1)]
        ['best+init']
    """

    keys: list = field(default_factory=lambda: ["error_mean"])
    factor: float = 2.0
    patience: int = 1
    min_value: float = 1e-6
    references: tuple = REFERENCES
    wait_duration: float = 300.0
    clock: Callable[[], float] = time.time
    init: dict = field(default_factory=dict)
    best: dict = field(default_factory=dict)
    streaks: dict = field(default_factory=dict)
    last_alert: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.factor <= 1.0:
            raise ValueError(f"`factor` must be > 1 (a value `factor` times its reference alerts), got {self.factor}.")
        if self.patience < 1:
            raise ValueError(f"`patience` must be a positive number of checks, got {self.patience}.")
        unknown = set(self.references) - set(REFERENCES)
        if unknown:
            raise ValueError(f"Unknown drift references {sorted(unknown)}; choose from {list(REFERENCES)}.")

    def update(self, symmetry: str, metrics: dict, global_step: int, epoch: int, warm: bool = True) -> list[Alert]:
        """Record one check's ``metrics`` (name → float) of ``symmetry``; return the alerts it raises: at most one
        per watched key, naming every reference it drifted from (one event, one alert).

        ``warm=False`` (the monitor's warm-up: checks before the first epoch is done) records nothing: at
        initialisation a plain network's outputs hardly depend on its input, so its error is tiny and any training
        would look like drift from it; the references are taken from the first warm check on.
        """
        if not warm:
            return []
        alerts = []
        for key in self.keys:
            value = metrics.get(key)
            if value is None or not math.isfinite(value):
                continue
            slot = f"{symmetry}/{key}"
            refs = {"init": self.init.get(slot), "best": self.best.get(slot)}
            fired = []
            for ref_name in self.references:
                ref = refs[ref_name]
                rule = f"{slot}/{ref_name}"
                drifting = ref is not None and value > max(self.factor * ref, self.min_value)
                self.streaks[rule] = self.streaks.get(rule, 0) + 1 if drifting else 0
                if self.streaks[rule] < self.patience:
                    continue
                now = self.clock()
                last = self.last_alert.get(rule)
                if last is not None and now - last < self.wait_duration:
                    continue
                self.last_alert[rule] = now
                fired.append((ref_name, ref))
            if fired:
                alerts.append(self._alert(symmetry, key, fired, value, global_step, epoch))
            self.init.setdefault(slot, value)
            self.best[slot] = min(self.best.get(slot, value), value)
        return alerts

    def _alert(self, symmetry: str, key: str, fired: list, value: float, step: int, epoch: int) -> Alert:
        what = {"best": "its best value so far", "init": "its first value after warm-up"}
        parts = [f"{value / ref:.3g}× {what[name]} ({ref:.4g})" for name, ref in fired]
        text = (
            f"equivariance/{symmetry}/{key} = {value:.4g} at step {step} (epoch {epoch}) is {' and '.join(parts)}; "
            f"alert threshold {self.factor:g}× for {self.patience} check(s)."
        )
        ref_name, ref = fired[0]
        return Alert(
            title=f"eqmonitor: {symmetry} {key} drifted",
            text=text,
            level="WARN",
            symmetry=symmetry,
            key=key,
            reference="+".join(name for name, _ in fired),
            value=value,
            reference_value=ref,
            global_step=step,
            epoch=epoch,
            wait_duration=self.wait_duration,
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "init": dict(self.init),
            "best": dict(self.best),
            "streaks": dict(self.streaks),
            "last_alert": dict(self.last_alert),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("init", "best", "streaks", "last_alert"):
            getattr(self, name).clear()
            getattr(self, name).update(state.get(name, {}))

    def reference(self, symmetry: str, key: str, which: str) -> Optional[float]:
        """The ``"best"`` or ``"init"`` value recorded for ``symmetry``'s ``key``, or ``None``."""
        return (self.best if which == "best" else self.init).get(f"{symmetry}/{key}")
