r"""
Equivariance Guard
^^^^^^^^^^^^^^^^^^

Fail (or stop, or warn about) a run whose equivariance breaches a threshold.

The guard never imports the monitor: :class:`~eqmonitor.callbacks.EquivarianceMonitor` calls
:meth:`EquivarianceGuard.attach_monitor` in its ``setup`` and :meth:`EquivarianceGuard.evaluate` right after each
check, then reads :attr:`EquivarianceGuard.last_breach` for its records.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Iterable, Optional, Union

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from typing_extensions import override

from eqmonitor.callbacks.breach import (
    PREFIX,
    BreachReason,
    EquivarianceBreachError,
    EquivarianceBreachWarning,
    EquivarianceConfigError,
    UnloggedKeyError,
    lightning_defers_stop,
    missing_keys_message,
    misspelt_monitor_key,
)
from eqmonitor.callbacks.breach import symmetry_of as _symmetry_of
from eqmonitor.sinks import send_alert

__all__ = [
    "BreachReason",
    "EquivarianceBreachError",
    "EquivarianceBreachWarning",
    "EquivarianceGuard",
    "UnloggedKeyError",
]

log = logging.getLogger("eqmonitor")
ON_BREACH = ("warn", "stop", "raise")
ALERT_LEVEL = {"warn": "WARN", "stop": "ERROR", "raise": "ERROR"}


class EquivarianceGuard(Callback):
    r"""Act when logged equivariance keys breach their thresholds.

    A key breaches when its value is above its threshold, or, with ``check_finite``, when the value is NaN/Inf or the
    monitor reports non-finite model outputs for that symmetry (``equivariance/<name>/nonfinite`` > 0). After
    ``patience`` consecutive breaching judgements the guard acts, with one message per event:

    - ``"warn"``: an :class:`EquivarianceBreachWarning` (rank 0);
    - ``"stop"``: ``trainer.should_stop = True`` and one log line (rank 0). Lightning defers the stop while
      ``Trainer(min_epochs=..., min_steps=...)`` are unmet; :attr:`stopped_reason` is set only once the fit has
      really ended early because of it (judged in ``on_train_end``);
    - ``"raise"``: :class:`EquivarianceBreachError` on every rank (the exception text is the message).

    Every action is also sent to ``wandb.alert`` through the W&B loggers (rank 0, before raising), titled
    ``"eqmonitor: equivariance breach (<watched keys>)"``.

    **When.** With a monitor attached (:meth:`attach_monitor`), values are judged only when it calls :meth:`evaluate`
    after a check (its keys, and ``self.log``-ged ones with them); without one, after each validation and at the end
    of each training epoch. A key is judged at most once per step, and a value not logged again since (the same object
    in ``trainer.callback_metrics``) is not judged again, so ``patience`` counts fresh values. The monitor's check
    before training counts only with ``judge_start``. Decisions are reduced across ranks
    (``reduce_boolean_decision(..., all=False)``): if any rank breaches, every rank acts together.

    **Keys nothing logs** (``strict``) raise :class:`UnloggedKeyError` on every rank alike, with the logged keys and
    the closest match; a key counts as logged if any rank has it. ``equivariance/<name>/...`` of a symmetry the
    attached monitor measures: after the monitor's first check of ``<name>``. Any other key (``self.log``-ged, or of a
    symmetry no attached monitor measures): once a training epoch has ended and a validation has run (or validation
    is off), at the next ``on_train_epoch_start`` or ``on_train_end``, so keys logged in ``validation_step``,
    ``on_validation_epoch_end``, ``training_step`` (``on_epoch=True`` appear at epoch end) and the module's
    ``on_train_epoch_end`` all count.

    Args:
        monitor: a key (``"equivariance/rotation/error_mean"``), a list of keys, or a dict key → threshold.
        threshold: the threshold for ``monitor`` given as a key or list (not NaN).
        on_breach: ``"warn"``, ``"stop"`` or ``"raise"``.
        patience: consecutive breaching judgements before acting.
        min_epochs: no action before this many epochs are done (warm-up).
        min_steps: no action before this many optimizer steps are done.
        check_finite: treat NaN/Inf values as breaches.
        strict: raise when a watched key is not logged where it should be (see above); ``False`` allows it.
        judge_start: count the monitor's check before training (``at_start``) toward ``patience`` and actions.
        alert_wait: seconds W&B waits before repeating an alert of the same title.

    Attributes:
        breaches: consecutive breaching judgements per key.
        stopped_reason: why the guard stopped the fit or raised, ``None`` if it has not.
        stopped_step: the global step at which the fit stopped (or the guard raised).
        breach_reason: a :class:`BreachReason`, why the guard last acted.
        last_breach: ``{"global_step", "on_breach", "reason"}`` of the latest action (plus ``"note"`` when Lightning
            deferred a stop), else ``None``; the monitor writes it to the check's records.

    Raises:
        EquivarianceConfigError: bad arguments (a ``MisconfigurationException`` and a ``ValueError``).
        UnloggedKeyError: a watched key nothing logged (``strict``).
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
        judge_start: bool = False,
        alert_wait: float = 300.0,
    ) -> None:
        super().__init__()
        if isinstance(monitor, dict):
            if threshold is not None:
                raise EquivarianceConfigError("Give thresholds in the `monitor` dict or as `threshold`, not both.")
            thresholds = {str(k): float(v) for k, v in monitor.items()}
        else:
            if threshold is None:
                raise EquivarianceConfigError("`threshold` is required when `monitor` is a key or a list of keys.")
            keys = [monitor] if isinstance(monitor, str) else list(monitor)
            thresholds = {k: float(threshold) for k in keys}
        if not thresholds:
            raise EquivarianceConfigError("`monitor` names no key to guard.")
        nan = sorted(k for k, v in thresholds.items() if math.isnan(v))
        if nan:
            raise EquivarianceConfigError(f"The threshold of {nan} is NaN: no value is above NaN, it guards nothing.")
        if on_breach not in ON_BREACH:
            raise EquivarianceConfigError(f"`on_breach` must be one of {ON_BREACH}, got {on_breach!r}.")
        if patience < 1:
            raise EquivarianceConfigError(f"`patience` must be at least 1 check, got {patience}.")
        if min_epochs < 0 or min_steps < 0 or alert_wait < 0:
            raise EquivarianceConfigError("`min_epochs`, `min_steps` and `alert_wait` must be non-negative.")
        self.thresholds, self.on_breach, self.patience = thresholds, on_breach, patience
        self.min_epochs, self.min_steps, self.check_finite = min_epochs, min_steps, check_finite
        self.strict, self.judge_start, self.alert_wait = strict, judge_start, alert_wait
        self.breaches: dict[str, int] = {k: 0 for k in thresholds}
        self.stopped_reason: Optional[str] = None
        self.breach_reason = BreachReason.NOT_BREACHED
        self.stopped_step: Optional[int] = None
        self.report_text: Optional[str] = None  # the latest check's report, from the monitor
        self.last_breach: Optional[dict] = None
        self._judged: dict[str, int] = {}  # key -> global step it was last judged at
        self._last_judged: dict[str, tuple[Any, str]] = {}  # key -> (logged object, repr(value)) last judged
        self._keys_checked: set[str] = set()  # keys whose presence was decided (the same on every rank)
        self._monitor_names: Optional[set[str]] = None  # symmetries of the attached monitor(s); None: none attached
        self._reset_fit()

    def _reset_fit(self) -> None:
        self._checked_names: set[str] = set()  # symmetries `evaluate` was told were checked in this fit
        self._val_ran = self._epoch_ended = self._epoch_keys_done = False
        self._stop_request: Optional[dict] = None

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(monitor=sorted(self.thresholds), on_breach=self.on_breach)

    # ------------------------------------------------------------------ contract with the monitor
    def attach_monitor(self, symmetry_names: Iterable[str]) -> None:
        """Called by the monitor in its ``setup`` (every rank): from then on, values are judged only when it calls
        :meth:`evaluate`, and keys of these symmetries must be there after its first check of each."""
        self._monitor_names = (self._monitor_names or set()) | {str(n) for n in symmetry_names}

    def _known_names(self) -> set[str]:
        return (self._monitor_names or set()) | self._checked_names

    def _is_monitor_key(self, key: str) -> bool:
        return _symmetry_of(key) in self._known_names()

    # ------------------------------------------------------------------ hooks
    @staticmethod
    def _should_skip_check(trainer: Trainer) -> bool:
        return bool(trainer.sanity_checking or trainer.fast_dev_run)

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._reset_fit()

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._val_ran = True
        if self._monitor_names is None:
            self.evaluate(trainer)

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._epoch_ended = True
        if self._monitor_names is None:
            self.evaluate(trainer)

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._check_epoch_keys(trainer)

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._confirm_stop(trainer)
        self._check_epoch_keys(trainer)

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._monitor_names = None  # a monitor attaches again at its next `setup`

    # ------------------------------------------------------------------ judging
    def evaluate(
        self, trainer: Trainer, report: Optional[str] = None, checked: Optional[list] = None, at_start: bool = False
    ) -> None:
        """Judge the watched keys now; every rank must call it at the same point (it reduces across ranks).

        The monitor calls it right after each check with the check's ``report`` text, the symmetry names it just
        ``checked`` and ``at_start=True`` for its check before training. A call with ``checked`` judges those
        symmetries' keys and the keys outside any monitor's namespace; a call without (the guard's own hooks, or a
        test) judges only the latter. Keys already judged at this global step are skipped."""
        if self._should_skip_check(trainer):
            return
        step = trainer.global_step
        names = {str(n) for n in checked} if checked is not None else set()
        if checked is not None:
            self._checked_names |= names
            todo = [k for k in self.thresholds if _symmetry_of(k) in names  # and misspelt symmetries, now:
                    or misspelt_monitor_key(k, self._known_names())]  # fmt: skip
            self._require_logged(trainer, todo, f"by the monitor's check of {sorted(names)} at step {step}")
        if at_start and not self.judge_start:
            return
        if report is not None:
            self.report_text = report
        metrics = trainer.callback_metrics
        reasons, nonfinite_seen = [], False
        for key, limit in self.thresholds.items():
            if key not in metrics or self._judged.get(key) == step:
                continue
            if self._is_monitor_key(key) and _symmetry_of(key) not in names:
                continue  # a monitor's value: judged right after that monitor's next check, never stale
            value = float(torch.as_tensor(metrics[key]).float().cpu())
            last = self._last_judged.get(key)
            if last is not None and last[0] is metrics[key] and last[1] == repr(value):  # repr: NaN equals NaN
                continue  # the very value judged before (e.g. a validation key at a later epoch without validation)
            self._judged[key], self._last_judged[key] = step, (metrics[key], repr(value))
            finite_breach = self.check_finite and not math.isfinite(value)
            bad = value > limit or finite_breach
            why = f"{key} = {value:.4g} > {limit:.4g}"
            nonfinite = self._nonfinite_fraction(metrics, key)
            if self.check_finite and nonfinite:
                bad, finite_breach, why = True, True, f"{key}: {nonfinite:.1%} of the probe's outputs are NaN/Inf"
            self.breaches[key] = self.breaches[key] + 1 if bad else 0
            if bad and self.breaches[key] >= self.patience:
                reasons.append(f"{why} for {self.breaches[key]} check(s)")
                nonfinite_seen |= finite_breach
        warmed_up = trainer.current_epoch >= self.min_epochs and step >= self.min_steps
        if not trainer.strategy.reduce_boolean_decision(bool(reasons) and warmed_up, all=False):
            return
        nonfinite = trainer.strategy.reduce_boolean_decision(nonfinite_seen, all=False)  # every rank got here
        self.breach_reason = BreachReason.NON_FINITE if nonfinite else BreachReason.THRESHOLD
        reason = self._all_reasons(trainer, reasons)
        headline = f"Equivariance breach at step {step} (epoch {trainer.current_epoch}): {reason}."
        self._act(trainer, headline, step)

    @staticmethod
    def _nonfinite_fraction(metrics: dict, key: str) -> float:
        """The monitor's ``equivariance/<name>/nonfinite`` for a watched ``equivariance/<name>/...`` key (else 0)."""
        name = _symmetry_of(key)
        value = None if name is None else metrics.get(f"{PREFIX}{name}/nonfinite")
        return 0.0 if value is None else float(torch.as_tensor(value).float().cpu())

    @staticmethod
    def _all_reasons(trainer: Trainer, local: list[str]) -> str:
        """This rank's reasons, then the other ranks' (gathered), so rank 0's message, alert and record say why."""
        if trainer.world_size <= 1:
            return "; ".join(local)
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()):
            return "; ".join(local) or "another process breached its equivariance threshold"
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, list(local))
        parts = list(local)
        for rank, theirs in enumerate(gathered):
            parts += [f"another process (rank {rank}): {r}" for r in theirs or () if r not in local]
        return "; ".join(dict.fromkeys(parts))

    # ------------------------------------------------------------------ acting
    def _act(self, trainer: Trainer, headline: str, step: int) -> None:
        """One message per event (rank 0), the W&B alert, and the record the monitor writes."""
        message = headline + (f"\n\n{self.report_text}" if self.report_text else "")
        self.last_breach = record = {"global_step": step, "on_breach": self.on_breach, "reason": headline}
        zero = trainer.is_global_zero
        if self.on_breach == "raise":
            self.stopped_reason, self.stopped_step = message, step
            if zero:
                self._alert(trainer, message)
            raise EquivarianceBreachError(message)
        if self.on_breach == "warn":
            if zero:
                self._alert(trainer, message)
                rank_zero_warn(message, category=EquivarianceBreachWarning, stacklevel=4)
            return
        trainer.should_stop = True
        if self._stop_request is not None:  # requested before and deferred by Lightning: recorded, not repeated
            record["note"] = f"stop requested at step {self._stop_request['global_step']}, deferred by Lightning"
            return
        deferral = lightning_defers_stop(trainer)
        if deferral:
            record["note"] = f"Lightning deferred the stop: {deferral}"
        self._stop_request = {"global_step": step, "message": message, "deferral": deferral}
        if zero:
            action = f"Stop requested; Lightning defers it: {deferral}." if deferral else "Stopping the fit."
            text = f"{headline} {action}{message[len(headline) :]}"
            self._alert(trainer, text)
            log.warning("%s", text)

    def _alert(self, trainer: Trainer, text: str) -> None:
        title = f"eqmonitor: equivariance breach ({', '.join(self.thresholds)})"
        send_alert(trainer.loggers, title, text, ALERT_LEVEL[self.on_breach], self.alert_wait)

    def _confirm_stop(self, trainer: Trainer) -> None:
        """At ``on_train_end``: the fit stopped because of the guard's request if Lightning could honour it and the
        fit did not simply run to ``max_steps`` / ``max_epochs`` (all batches of its last epoch)."""
        request, self._stop_request = self._stop_request, None
        loop, step = trainer.fit_loop, trainer.global_step
        epochs, max_steps, max_epochs = loop.epoch_progress.current.processed, trainer.max_steps, trainer.max_epochs
        if request is None or not trainer.should_stop or lightning_defers_stop(trainer):
            return
        if 0 <= (max_steps or -1) <= step or (0 <= (max_epochs or -1) <= epochs and trainer.is_last_batch):
            return  # the fit ran to its end anyway
        self.stopped_reason, self.stopped_step = request["message"], step
        if request["deferral"]:
            self.stopped_reason += (
                f"\n\n(Requested at step {request['global_step']}; Lightning deferred the stop until "
                f"Trainer(min_epochs=..., min_steps=...) were met, at step {step}.)"
            )

    # ------------------------------------------------------------------ keys nothing logs
    def _check_epoch_keys(self, trainer: Trainer) -> None:
        """Keys outside the monitors' namespaces, once a training epoch and a validation (if any) have run."""
        if self._should_skip_check(trainer) or self._epoch_keys_done or not self._epoch_ended:
            return
        try:
            can_validate = bool(trainer.enable_validation)
        except Exception:  # a trainer built by hand in a test
            can_validate = True
        if not self._val_ran and can_validate:
            return
        self._epoch_keys_done = True
        todo = [k for k in self.thresholds if not self._is_monitor_key(k)]
        ran = "a training epoch and a validation" if self._val_ran else "a training epoch (validation is off)"
        self._require_logged(trainer, todo, f"by step {trainer.global_step}, after {ran}")

    def _require_logged(self, trainer: Trainer, keys: list[str], when: str) -> None:
        """Raise :class:`UnloggedKeyError` for the ``keys`` no rank has logged. ``keys`` and what decides whether to
        look must be the same on every rank (one collective, then every rank raises or none does)."""
        keys = [k for k in keys if k not in self._keys_checked]
        if not keys:
            return
        self._keys_checked.update(keys)
        if not self.strict:
            return
        metrics = trainer.callback_metrics
        local = [float(k in metrics or k in self._judged) for k in keys]
        counts = trainer.strategy.reduce(torch.tensor(local, device=trainer.strategy.root_device), reduce_op="sum")
        missing = [k for k, n in zip(keys, torch.as_tensor(counts).tolist()) if n == 0]
        if missing:
            names = sorted(self._known_names())
            raise UnloggedKeyError(missing_keys_message(sorted(metrics), missing, when, names, self._is_monitor_key))

    # ------------------------------------------------------------------ state
    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "breaches": dict(self.breaches),
            "stopped_reason": self.stopped_reason,
            "stopped_step": self.stopped_step,
            "breach_reason": self.breach_reason.value,
            "last_step": max(self._judged.values(), default=None),
            "judged": dict(self._judged),
            "keys_checked": sorted(self._keys_checked),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.breaches.update({k: v for k, v in state_dict.get("breaches", {}).items() if k in self.breaches})
        self.stopped_reason = state_dict.get("stopped_reason")
        self.stopped_step = state_dict.get("stopped_step")
        self.breach_reason = BreachReason(state_dict.get("breach_reason", BreachReason.NOT_BREACHED.value))
        last = state_dict.get("last_step")
        judged = state_dict.get("judged", {k: last for k in self.thresholds} if last is not None else {})
        self._judged = {k: v for k, v in judged.items() if k in self.thresholds}
        self._keys_checked = {k for k in state_dict.get("keys_checked", ()) if k in self.thresholds}
