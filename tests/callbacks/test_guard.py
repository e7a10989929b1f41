"""EquivarianceGuard: warn / stop / raise, patience and warm-up, the check at start, stops Lightning defers, one
message and one W&B alert per event, the contract with the monitor, state; in real fits; `raise` exits non-zero."""

from __future__ import annotations

import ast
import logging
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch import Callback
from monitor_specs import C4_SPEC

import eqmonitor as eqm
from eqmonitor.callbacks import EquivarianceGuard, EquivarianceMonitor
from eqmonitor.callbacks.guard import EquivarianceBreachWarning, UnloggedKeyError

KEY = "equivariance/c4/error_mean"
TITLE = f"eqmonitor: equivariance breach ({KEY})"


def watch(**kw):
    return EquivarianceMonitor(C4_SPEC, n_samples=16, plots=False, records=False, **kw)


class Spy(Callback):
    """Listed after the monitor and the guard: keeps each new ``guard.last_breach`` (what the monitor records)."""

    def __init__(self, guard):
        self.guard, self.seen = guard, []

    def _grab(self):
        if self.guard.last_breach and (not self.seen or self.seen[-1] != self.guard.last_breach):
            self.seen.append(dict(self.guard.last_breach))

    def on_train_start(self, trainer, pl_module):
        self._grab()

    def on_validation_end(self, trainer, pl_module):
        self._grab()

    def on_train_epoch_end(self, trainer, pl_module):
        self._grab()


def breach_messages(caught):
    return [w for w in caught if "Equivariance breach" in str(w.message)]


def breach_lines(caplog):
    return [r for r in caplog.records if "Equivariance breach" in r.getMessage()]


def test_stop_ends_fit_early_with_the_reason(fit):
    guard = EquivarianceGuard(KEY, threshold=1e-3, on_breach="stop", judge_start=True)
    trainer, _, _ = fit([watch(), guard], max_epochs=5)
    assert trainer.global_step == 0  # the check at start breaches: no training step runs
    assert guard.stopped_step == 0 and KEY in guard.stopped_reason and "c4: error_mean=" in guard.stopped_reason


def test_breach_is_written_to_the_records(fit, tmp_path):
    from eqmonitor.records import read_records

    mon = EquivarianceMonitor(C4_SPEC, n_samples=16, plots=False, records_dir=str(tmp_path / "eqm"))
    guard = EquivarianceGuard(KEY, threshold=1e-3, on_breach="stop", judge_start=True)
    fit([mon, guard], max_epochs=5)
    (record,) = read_records(tmp_path / "eqm")
    assert record["global_step"] == 0 and record["breaches"][0]["on_breach"] == "stop"
    assert KEY in record["breaches"][0]["reason"] and "c4: error_mean" not in record["breaches"][0]["reason"]


def test_patience_and_warm_up_delay_the_stop(fit):
    guard = EquivarianceGuard(KEY, threshold=1e-3, on_breach="stop", patience=2, min_epochs=1, judge_start=True)
    trainer, _, _ = fit([watch(), guard], max_epochs=5)
    # checks at steps 0 (epoch 0), 4 (end of epoch 0, epoch index still 0) and 8 (end of epoch 1): the first check
    # whose epoch index is ≥ 1 with 2+ breaches in a row is the one at step 8
    assert guard.stopped_step == 8 and trainer.current_epoch == 2 and trainer.global_step == 8
    assert guard.breaches[KEY] == 3


def test_warn_only_warns(fit):
    guard = EquivarianceGuard(KEY, threshold=1e-3, on_breach="warn")
    with pytest.warns(UserWarning, match="Equivariance breach"):
        trainer, _, _ = fit([watch(), guard], max_epochs=2)
    assert trainer.current_epoch == 2 and guard.stopped_reason is None


def test_no_breach_below_threshold(fit):
    guard = EquivarianceGuard(KEY, threshold=100.0, on_breach="raise")
    trainer, _, _ = fit([watch(), guard], max_epochs=1)
    assert guard.breaches[KEY] == 0 and trainer.current_epoch == 1


def test_unknown_key_is_an_error_not_a_silent_pass(fit):
    guard = EquivarianceGuard("equivariance/c4/eror_mean", threshold=1.0, on_breach="raise")
    with pytest.raises(ValueError, match="eror_mean"):
        fit([watch(), guard], max_epochs=1)


def test_guard_without_monitor_watches_self_logged_keys(fit):
    from eqmonitor.demos import DigitsClassifier

    class Logs(DigitsClassifier):
        def validation_step(self, batch, batch_idx):
            super().validation_step(batch, batch_idx)
            self.log("equivariance/custom/error_mean", 5.0 if self.current_epoch >= 1 else 0.0)

    guard = EquivarianceGuard("equivariance/custom/error_mean", threshold=1.0, on_breach="stop")
    trainer, _, _ = fit([guard], model=Logs(), max_epochs=4)
    assert trainer.current_epoch == 2 and guard.stopped_step == 8 and "5" in guard.stopped_reason


def test_raise_makes_the_process_exit_non_zero(tmp_path):
    script = textwrap.dedent(
        f"""
        import lightning as L
        import eqmonitor as eqm
        from eqmonitor.demos import DigitsClassifier, DigitsDataModule
        mon = eqm.EquivarianceMonitor({C4_SPEC!r}, n_samples=8, plots=False,
                                      records_dir={str(tmp_path / "eqm")!r})
        guard = eqm.EquivarianceGuard("{KEY}", threshold=1e-3, on_breach="raise", judge_start=True)
        trainer = L.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            default_root_dir={str(tmp_path)!r}, callbacks=[mon, guard], limit_val_batches=1)
        trainer.fit(DigitsClassifier(), datamodule=DigitsDataModule(n_train=128))
        print("FIT RETURNED")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "EquivarianceBreachError" in proc.stderr and KEY in proc.stderr
    assert "FIT RETURNED" not in proc.stdout
    from eqmonitor.records import read_records

    (record,) = read_records(tmp_path / "eqm")  # the check that raised was recorded first
    assert record["breaches"][0]["on_breach"] == "raise"


def test_constructor_validates_arguments():
    with pytest.raises(ValueError, match="threshold"):
        EquivarianceGuard(KEY)
    with pytest.raises(ValueError, match="on_breach"):
        EquivarianceGuard(KEY, threshold=1.0, on_breach="explode")
    with pytest.raises(ValueError, match="patience"):
        EquivarianceGuard(KEY, threshold=1.0, patience=0)
    guard = EquivarianceGuard({KEY: 0.1, "equivariance/c4/error_max": 0.5})
    assert guard.thresholds == {KEY: 0.1, "equivariance/c4/error_max": 0.5}
    assert isinstance(eqm.EquivarianceBreachError("x"), RuntimeError)


def test_nan_threshold_is_refused():
    with pytest.raises(ValueError, match="NaN"):
        EquivarianceGuard(KEY, threshold=float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        EquivarianceGuard({KEY: 0.1, "val_loss": float("nan")})
    EquivarianceGuard(KEY, threshold=float("inf"))  # only non-finite values breach: allowed


def test_check_at_start_does_not_count_unless_asked(fit):
    guard = EquivarianceGuard(KEY, threshold=1e-3, on_breach="stop", patience=2)
    trainer, _, _ = fit([watch(), guard], max_epochs=5)
    # the check at start (step 0) breaches but counts for nothing: the 2 breaching checks are at steps 4 and 8
    assert guard.stopped_step == 8 == trainer.global_step and guard.breaches[KEY] == 2


def test_stop_deferred_by_min_epochs_is_recorded_and_stops_once_met(fit, caplog):
    guard = EquivarianceGuard(KEY, threshold=1e-3, on_breach="stop", judge_start=True)
    spy = Spy(guard)
    with caplog.at_level(logging.INFO, logger="eqmonitor"):
        trainer, _, _ = fit([watch(), guard, spy], max_epochs=5, min_epochs=2)
    first = spy.seen[0]  # the request at step 0, as the monitor records it
    assert first["global_step"] == 0 and first["on_breach"] == "stop" and "min_epochs=2" in first["note"]
    assert [b["global_step"] for b in spy.seen] == [0, 4, 8]  # every breaching check is recorded ...
    assert len(breach_lines(caplog)) == 1 and "Lightning defers" in breach_lines(caplog)[0].getMessage()  # ... once
    assert trainer.global_step == 8 and trainer.current_epoch == 2  # Lightning stopped once min_epochs was met
    assert guard.stopped_step == 8 and "Requested at step 0" in guard.stopped_reason and KEY in guard.stopped_reason


def test_stop_deferred_by_min_steps_stops_mid_epoch(fit):
    guard = EquivarianceGuard(KEY, threshold=1e-3, on_breach="stop", judge_start=True)
    trainer, _, _ = fit([watch(), guard], max_epochs=5, min_steps=6)
    assert guard.stopped_step == 6 == trainer.global_step


def test_stop_that_never_takes_effect_is_not_recorded_as_stopped(fit):
    guard = EquivarianceGuard(KEY, threshold=1e-3, on_breach="stop", judge_start=True)
    spy = Spy(guard)
    trainer, _, _ = fit([watch(), guard, spy], max_epochs=2, min_epochs=2)
    assert trainer.current_epoch == 2 and trainer.global_step == 8  # the fit ran to max_epochs anyway
    assert guard.stopped_reason is None and guard.stopped_step is None
    assert spy.seen[0]["on_breach"] == "stop" and "deferred" in spy.seen[0]["note"]


def test_warn_gives_one_warning_per_breach_and_no_log_line(fit, caplog):
    guard = EquivarianceGuard(KEY, threshold=1e-3, on_breach="warn")
    with caplog.at_level(logging.INFO, logger="eqmonitor"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit([watch(), guard], max_epochs=2)
    breaches = breach_messages(caught)
    assert len(breaches) == 2 and all(w.category is EquivarianceBreachWarning for w in breaches)  # steps 4 and 8
    assert "c4: error_mean=" in str(breaches[0].message)  # the check's report, in the one message
    assert not breach_lines(caplog)


def test_stop_gives_one_log_line_and_raise_only_the_exception(fit, caplog):
    guard = EquivarianceGuard(KEY, threshold=1e-3, on_breach="stop", judge_start=True)
    with caplog.at_level(logging.INFO, logger="eqmonitor"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit([watch(), guard], max_epochs=2)
    (line,) = breach_lines(caplog)
    assert "Stopping the fit" in line.getMessage() and not breach_messages(caught)
    caplog.clear()
    guard = EquivarianceGuard(KEY, threshold=1e-3, on_breach="raise", judge_start=True)
    with caplog.at_level(logging.INFO, logger="eqmonitor"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(eqm.EquivarianceBreachError, match="Equivariance breach") as err:
            fit([watch(), guard], max_epochs=2)
    assert str(err.value).count("Equivariance breach") == 1
    assert not breach_lines(caplog) and not breach_messages(caught)


@pytest.mark.parametrize("on_breach, level, n", [("warn", "WARN", 2), ("stop", "ERROR", 1), ("raise", "ERROR", 1)])
def test_breaches_reach_wandb_alert(fit, wandb_env, on_breach, level, n):
    pytest.importorskip("wandb")
    import wandb
    from lightning.pytorch.loggers import WandbLogger
    from logreaders import read_wandb_offline

    logger = WandbLogger(project="eqmonitor-tests", save_dir=str(wandb_env), offline=True)
    guard = EquivarianceGuard(KEY, threshold=1e-3, on_breach=on_breach, alert_wait=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fit([watch(), guard], max_epochs=2, logger=logger)
        except eqm.EquivarianceBreachError:
            assert on_breach == "raise"  # the alert was sent before raising
    run_dir = logger.experiment.dir.rsplit("/files", 1)[0]
    wandb.finish()
    run, deadline = read_wandb_offline(run_dir), time.monotonic() + 60
    while "exit" not in run["record_types"] and time.monotonic() < deadline:  # wandb-core may still be writing
        time.sleep(0.5)
        run = read_wandb_offline(run_dir)
    alerts = [a for a in run["alerts"] if a["title"] == TITLE]
    assert len(alerts) == n
    assert all(a["level"] == level and "Equivariance breach" in a["text"] and KEY in a["text"] for a in alerts)


class Driver(Callback):
    """Stands in for the monitor, by the contract: attaches in ``setup``, logs ``equivariance/fake/error_mean`` and
    calls ``evaluate`` at start (``at_start=True``) and after the validation of the epochs in ``at_epochs`` only."""

    def __init__(self, at_epochs, value=5.0):
        self.at_epochs, self.value = at_epochs, value

    def setup(self, trainer, pl_module, stage):
        for cb in trainer.callbacks:
            if isinstance(cb, EquivarianceGuard):
                cb.attach_monitor(["fake"])

    def _check(self, trainer, at_start=False):
        trainer.callback_metrics["equivariance/fake/error_mean"] = torch.tensor(self.value)
        for cb in trainer.callbacks:
            if isinstance(cb, EquivarianceGuard):
                cb.evaluate(trainer, report="fake: error_mean=5", checked=["fake"], at_start=at_start)

    def on_train_start(self, trainer, pl_module):
        self._check(trainer, at_start=True)

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking and trainer.current_epoch in self.at_epochs:
            self._check(trainer)


def test_with_a_monitor_attached_values_are_judged_only_when_it_calls_evaluate(fit):
    guard = EquivarianceGuard({"equivariance/fake/error_mean": 1.0, "val_loss": -1.0}, on_breach="warn")
    with pytest.warns(EquivarianceBreachWarning) as caught:
        fit([Driver(at_epochs={1}), guard], max_epochs=3)
    # validation ran 3 times, but the (always breaching) val_loss was judged only with the driver's one call
    assert guard.breaches == {"equivariance/fake/error_mean": 1, "val_loss": 1}
    (message,) = breach_messages(caught)
    assert "fake: error_mean=5" in str(message.message)


def test_without_a_monitor_the_guard_judges_after_each_validation(fit):
    guard = EquivarianceGuard("val_loss", threshold=-1.0, on_breach="warn")
    with pytest.warns(EquivarianceBreachWarning):
        fit([guard], max_epochs=3)
    assert guard.breaches == {"val_loss": 3}


def test_evaluate_called_directly():
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.callback_metrics["equivariance/x/error_mean"] = torch.tensor(5.0)
    guard = EquivarianceGuard("equivariance/x/error_mean", threshold=1.0, on_breach="raise")
    guard.evaluate(trainer, checked=["x"], at_start=True)  # not judged: no judge_start
    with pytest.raises(eqm.EquivarianceBreachError, match="5 > 1"):
        guard.evaluate(trainer, checked=["x"])
    assert guard.last_breach == {"global_step": 0, "on_breach": "raise", "reason": guard.stopped_reason}
    hooks = EquivarianceGuard("equivariance/x/error_mean", threshold=1.0, on_breach="warn")
    with pytest.warns(EquivarianceBreachWarning):
        hooks.evaluate(trainer)  # no monitor has checked "x": judged like a self.log-ged key
    typo = EquivarianceGuard("equivariance/x/eror_mean", threshold=1.0)
    with pytest.raises(UnloggedKeyError, match="did you mean 'equivariance/x/error_mean'"):
        typo.evaluate(trainer, checked=["x"], at_start=True)


def test_the_guard_does_not_import_the_monitor():
    import eqmonitor.callbacks.guard as module

    tree = ast.parse(Path(module.__file__).read_text())
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert "eqmonitor.sinks" in imported  # alerts, the one eqmonitor module it needs
    assert not [m for m in imported if m.endswith(".monitor") or m in ("eqmonitor", "eqmonitor.callbacks")]


def test_state_dict_round_trip_and_old_checkpoints(fit):
    guard = EquivarianceGuard({KEY: 1e-3, "val_loss": 1e9}, on_breach="warn")
    with pytest.warns(EquivarianceBreachWarning):
        fit([watch(), guard], max_epochs=2)
    state = guard.state_dict()
    assert state["breaches"] == {KEY: 2, "val_loss": 0} and state["last_step"] == 8
    assert state["keys_checked"] == sorted([KEY, "val_loss"])
    fresh = EquivarianceGuard({KEY: 1e-3, "val_loss": 1e9}, on_breach="warn")
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state
    old = {"breaches": {KEY: 2}, "stopped_reason": None, "stopped_step": None, "last_step": 4}  # before the new fields
    older = EquivarianceGuard(KEY, threshold=1e-3)
    older.load_state_dict(old)
    assert older.breaches[KEY] == 2 and older.state_dict()["last_step"] == 4
    assert older.state_dict()["keys_checked"] == []
