"""The callbacks follow Lightning's idioms: exact state keys, pickling, configuration errors, the breach reason."""

from __future__ import annotations

import pickle
import warnings

import pytest
from lightning.fabric.utilities.exceptions import MisconfigurationException

from eqmonitor import EquivarianceGuard, EquivarianceMonitor
from eqmonitor.callbacks.breach import BreachReason, EquivarianceBreachError
from eqmonitor.callbacks.monitor import EquivarianceDriftWarning
from tests.callbacks.monitor_specs import C4_SPEC, nan_on_rotated


def test_state_keys_are_exact():
    """A checkpoint's callback state is found by this key: changing it silently drops resumed state."""
    mon = EquivarianceMonitor([C4_SPEC, {**C4_SPEC, "name": "c4b"}], every_n_epochs=2, seed=3)
    assert mon.state_key == (
        "EquivarianceMonitor{'symmetries': ['c4', 'c4b'], 'every_n_epochs': 2, 'every_n_train_steps': 0, 'seed': 3}"
    )
    guard = EquivarianceGuard({"equivariance/c4/error_mean": 0.1, "val_loss": 2.0}, on_breach="stop")
    assert guard.state_key == (
        "EquivarianceGuard{'monitor': ['equivariance/c4/error_mean', 'val_loss'], 'on_breach': 'stop'}"
    )


def test_callbacks_pickle_before_and_after_a_fit(fit, tmp_path):
    """Lightning pickles callbacks (spawned processes, deep copies, some loggers' hparams): both round-trip, fresh
    and after a fit with figures and records at their defaults, keeping their history and state."""
    mon = pickle.loads(pickle.dumps(EquivarianceMonitor(C4_SPEC, n_samples=8)))  # a fresh copy fits
    guard = pickle.loads(pickle.dumps(EquivarianceGuard("equivariance/c4/error_mean", threshold=10.0)))
    fit([mon, guard], max_epochs=1)
    mon2, guard2 = pickle.loads(pickle.dumps(mon)), pickle.loads(pickle.dumps(guard))
    assert mon2.history == mon.history and len(mon2.history["c4"]) == 2
    assert mon2.state_dict() == mon.state_dict()
    assert guard2.state_dict() == guard.state_dict()


@pytest.mark.parametrize(
    "make",
    [
        lambda: EquivarianceMonitor(C4_SPEC, n_samples=0),
        lambda: EquivarianceMonitor(C4_SPEC, max_overhead=2.0),
        lambda: EquivarianceMonitor(C4_SPEC, every_n_epochs=None, check_at_start=False),
        lambda: EquivarianceGuard("equivariance/c4/error_mean", threshold=float("nan")),
        lambda: EquivarianceGuard("equivariance/c4/error_mean", threshold=0.1, on_breach="explode"),
    ],
)
def test_bad_configuration_is_a_misconfiguration(make):
    """As Lightning's own callbacks: a ``MisconfigurationException`` (and, as before, a ``ValueError``)."""
    with pytest.raises(MisconfigurationException) as err:
        make()
    assert isinstance(err.value, ValueError)


def test_alert_keys_empty_turns_drift_alerts_off(fit, tmp_path):
    """``alert_keys=[]`` means no drift alerts, on a run that raises them with the default keys."""
    runs = {}
    for keys in (None, []):
        mon = EquivarianceMonitor(C4_SPEC, n_samples=16, drift_factor=1.01, drift_min=0.0, alert_wait=0.0,
                                  drift_warmup=0, alert_keys=keys)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit([mon], max_epochs=3)
        runs[keys is None] = [w for w in caught if issubclass(w.category, EquivarianceDriftWarning)]
    assert runs[True], "the default keys must raise drift alerts on this run, or the test proves nothing"
    assert runs[False] == []


def test_breach_reason_says_why_the_guard_acted(fit):
    """A threshold breach and a NaN breach carry their :class:`BreachReason`, kept in the guard's state."""
    guard = EquivarianceGuard("equivariance/c4/error_mean", threshold=1e-9, on_breach="warn")
    assert guard.breach_reason is BreachReason.NOT_BREACHED
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit([EquivarianceMonitor(C4_SPEC, n_samples=8), guard], max_epochs=1)
    assert guard.breach_reason is BreachReason.THRESHOLD
    restored = EquivarianceGuard("equivariance/c4/error_mean", threshold=1e-9)
    restored.load_state_dict(guard.state_dict())
    assert restored.breach_reason is BreachReason.THRESHOLD

    nan_guard = EquivarianceGuard("equivariance/c4/error_mean", threshold=1e9, on_breach="raise")
    with pytest.raises(EquivarianceBreachError):
        fit([EquivarianceMonitor(C4_SPEC, n_samples=32), nan_guard], model=nan_on_rotated(), max_epochs=1)
    assert nan_guard.breach_reason is BreachReason.NON_FINITE and "NaN" in nan_guard.stopped_reason
