r"""
Equivariance Guard
^^^^^^^^^^^^^^^^^^

Fail (or stop, or warn about) a run whose equivariance breaches a threshold.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any, Optional, Union

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

__all__ = ["EquivarianceBreachError", "EquivarianceGuard"]

log = logging.getLogger("eqmonitor")
ON_BREACH = ("warn", "stop", "raise")


class EquivarianceBreachError(RuntimeError):
    """Raised on every rank by :class:`EquivarianceGuard` with ``on_breach="raise"``; the message holds the report."""


class EquivarianceGuard(Callback):
    r"""Act when logged equivariance keys breach their thresholds.

    The guard reads ``trainer.callback_metrics`` (where :class:`~eqmonitor.callbacks.EquivarianceMonitor` and
    ``self.log`` put values) right after each monitor check and at the end of each training epoch. A key breaches when
    its value is above its threshold, or, with ``check_finite``, when the value is NaN/Inf or the monitor reports
    non-finite model outputs for that symmetry (``equivariance/<name>/nonfinite`` > 0: NaN is never averaged away).
    After
    ``patience`` consecutive breaching checks the guard acts:

    - ``"warn"``: a Python warning and a log line;
    - ``"stop"``: ``trainer.should_stop = True`` (Lightning ends the fit gracefully); the reason is in
      :attr:`stopped_reason`;
    - ``"raise"``: :class:`EquivarianceBreachError` on every rank, so a CI job or sweep trial exits non-zero.

    Decisions are reduced across ranks with ``trainer.strategy.reduce_boolean_decision(..., all=False)``: if any rank
    breaches, every rank acts together, and nothing hangs.

    Args:
        monitor: a key (``"equivariance/rotation/error_mean"``), a list of keys, or a dict key → threshold.
        threshold: the threshold for ``monitor`` given as a key or list.
        on_breach: ``"warn"``, ``"stop"`` or ``"raise"``.
        patience: consecutive breaching checks before acting.
        min_epochs: no action before this many epochs are done (warm-up).
        min_steps: no action before this many optimizer steps are done.
        check_finite: treat NaN/Inf values as breaches.
        strict: raise when a watched key is never logged (a typo would otherwise guard nothing).

    Attributes:
        breaches: consecutive breaching checks per key.
        stopped_reason: why the guard stopped or raised, ``None`` if it has not.
        stopped_step: the global step at which it did.
        last_breach: ``{"global_step", "on_breach", "reason"}`` of the latest action in any mode, else ``None``.

    Raises:
        ValueError: bad arguments.
        EquivarianceBreachError: on a breach with ``on_breach="raise"``.

    Example::

        guard = EquivarianceGuard(monitor="equivariance/rotation/error_mean", threshold=0.05, on_breach="raise")
    """

    def __init__(
        self,
        monitor: Union[str, list[str], dict[str, float]],
        threshold: Optional[float] = None,
        on_breach: str = "warn",
        patience: int = 1,
        min_epochs: int = 0,
        min_steps: int = 0,
        check_finite: bool = True,
        strict: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(monitor, dict):
            if threshold is not None:
                raise ValueError("Give thresholds either in the `monitor` dict or as `threshold`, not both.")
            thresholds = {str(k): float(v) for k, v in monitor.items()}
        else:
            if threshold is None:
                raise ValueError("`threshold` is required when `monitor` is a key or a list of keys.")
            keys = [monitor] if isinstance(monitor, str) else list(monitor)
            thresholds = {k: float(threshold) for k in keys}
        if not thresholds:
            raise ValueError("`monitor` names no key to guard.")
        if on_breach not in ON_BREACH:
            raise ValueError(f"`on_breach` must be one of {ON_BREACH}, got {on_breach!r}.")
        if patience < 1:
            raise ValueError(f"`patience` must be at least 1 check, got {patience}.")
        if min_epochs < 0 or min_steps < 0:
            raise ValueError("`min_epochs` and `min_steps` must be non-negative.")
        self.thresholds = thresholds
        self.on_breach = on_breach
        self.patience = patience
        self.min_epochs = min_epochs
        self.min_steps = min_steps
        self.check_finite = check_finite
        self.strict = strict
        self.breaches: dict[str, int] = {k: 0 for k in thresholds}
        self.stopped_reason: Optional[str] = None
        self.stopped_step: Optional[int] = None
        self._last_step: Optional[int] = None
        self.report_text: Optional[str] = None  # set by the monitor: the latest check's report
        self.last_breach: Optional[dict] = None  # the latest action: step, on_breach, reason (the monitor records it)

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=sorted(self.thresholds), on_breach=self.on_breach)

    # ------------------------------------------------------------------ hooks
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._has_monitor(trainer):  # with a monitor, it calls `evaluate` right after each check
            self.evaluate(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._has_monitor(trainer):
            self.evaluate(trainer)

    @staticmethod
    def _has_monitor(trainer: Trainer) -> bool:
        from eqmonitor.callbacks.monitor import EquivarianceMonitor

        return any(isinstance(cb, EquivarianceMonitor) for cb in trainer.callbacks)

    def evaluate(self, trainer: Trainer, report: Optional[str] = None, checked: Optional[list[str]] = None) -> None:
        """Judge the watched keys at the current step (once per step; every rank must call it, as hooks do).

        :class:`~eqmonitor.callbacks.EquivarianceMonitor` calls this after each check (so values are never judged
        twice or stale); without a monitor the guard judges ``self.log``-ged keys after validation and at the end of
        each training epoch, once per global step (like ``EarlyStopping``, a key logged in the module's own
        ``on_train_epoch_end`` is judged at the next check). ``checked``: the symmetries the monitor just measured;
        with ``strict``, a watched key in one of their namespaces that was not logged is an error (a typo)."""
        if trainer.sanity_checking or trainer.fast_dev_run:
            return
        step = trainer.global_step
        if self._last_step == step:
            return
        self._last_step = step
        if report is not None:
            self.report_text = report
        metrics = trainer.callback_metrics
        present = {k: metrics[k] for k in self.thresholds if k in metrics}
        namespaces = tuple(f"equivariance/{name}/" for name in checked or ())
        missing = sorted(k for k in self.thresholds if k not in present and k.startswith(namespaces))
        if self.strict and missing:
            raise ValueError(
                f"EquivarianceGuard watches {missing}, which nothing logged; logged keys are "
                f"{sorted(k for k in metrics if k.startswith('equivariance/'))}. Fix the key or pass `strict=False`."
            )
        reasons = []
        for key, limit in self.thresholds.items():
            if key not in present:
                continue
            value = float(torch.as_tensor(present[key]).float().cpu())
            bad = value > limit or (self.check_finite and not math.isfinite(value))
            why = f"{key} = {value:.4g} > {limit:.4g}"
            nonfinite = self._nonfinite_fraction(metrics, key)
            if self.check_finite and nonfinite:
                bad, why = True, f"{key}: {nonfinite:.1%} of the probe's outputs are NaN/Inf"
            self.breaches[key] = self.breaches[key] + 1 if bad else 0
            if bad and self.breaches[key] >= self.patience:
                reasons.append(f"{why} for {self.breaches[key]} check(s)")
        warmed_up = trainer.current_epoch >= self.min_epochs and step >= self.min_steps
        local = bool(reasons) and warmed_up
        decided = trainer.strategy.reduce_boolean_decision(local, all=False)
        if not decided:
            return
        reason = "; ".join(reasons) if reasons else "another process breached its equivariance threshold"
        message = f"Equivariance breach at step {step} (epoch {trainer.current_epoch}): {reason}."
        if self.report_text:
            message += "\n\n" + self.report_text
        self._act(trainer, message, step)

    @staticmethod
    def _nonfinite_fraction(metrics: dict, key: str) -> float:
        """The monitor's ``equivariance/<name>/nonfinite`` for a watched ``equivariance/<name>/...`` key (else 0)."""
        parts = key.split("/")
        if len(parts) < 3 or parts[0] != "equivariance":
            return 0.0
        value = metrics.get(f"equivariance/{parts[1]}/nonfinite")
        return 0.0 if value is None else float(torch.as_tensor(value).float().cpu())

    def _act(self, trainer: Trainer, message: str, step: int) -> None:
        self.last_breach = {"global_step": step, "on_breach": self.on_breach, "reason": message.split("\n\n")[0]}
        if self.on_breach == "warn":
            log.warning(message)
            warnings.warn(message, stacklevel=2)
            return
        self.stopped_reason, self.stopped_step = message, step
        if self.on_breach == "stop":
            log.warning("%s Stopping the fit.", message)
            trainer.should_stop = True
            return
        raise EquivarianceBreachError(message)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "breaches": dict(self.breaches),
            "stopped_reason": self.stopped_reason,
            "stopped_step": self.stopped_step,
            "last_step": self._last_step,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.breaches.update({k: v for k, v in state_dict.get("breaches", {}).items() if k in self.breaches})
        self.stopped_reason = state_dict.get("stopped_reason")
        self.stopped_step = state_dict.get("stopped_step")
        self._last_step = state_dict.get("last_step")
