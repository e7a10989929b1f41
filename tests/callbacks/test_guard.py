"""EquivarianceGuard: warn / stop / raise, patience and warm-up, in a real fit; `raise` exits a process non-zero."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from monitor_specs import C4_SPEC

import eqmonitor as eqm
from eqmonitor.callbacks import EquivarianceGuard, EquivarianceMonitor

KEY = "equivariance/c4/error_mean"


def watch(**kw):
    return EquivarianceMonitor(C4_SPEC, n_samples=16, plots=False, records=False, max_overhead=None, **kw)


def test_stop_ends_fit_early_with_the_reason(fit):
    guard = EquivarianceGuard(KEY, threshold=1e-3, on_breach="stop")
    trainer, _, _ = fit([watch(), guard], max_epochs=5)
    assert trainer.global_step == 0  # the check at start breaches: no training step runs
    assert guard.stopped_step == 0 and KEY in guard.stopped_reason and "c4: error_mean=" in guard.stopped_reason


def test_breach_is_written_to_the_records(fit, tmp_path):
    from eqmonitor.records import read_records

    mon = EquivarianceMonitor(C4_SPEC, n_samples=16, plots=False, records_dir=str(tmp_path / "eqm"), max_overhead=None)
    guard = EquivarianceGuard(KEY, threshold=1e-3, on_breach="stop")
    fit([mon, guard], max_epochs=5)
    (record,) = read_records(tmp_path / "eqm")
    assert record["global_step"] == 0 and record["breaches"][0]["on_breach"] == "stop"
    assert KEY in record["breaches"][0]["reason"] and "c4: error_mean" not in record["breaches"][0]["reason"]


def test_patience_and_warm_up_delay_the_stop(fit):
    guard = EquivarianceGuard(KEY, threshold=1e-3, on_breach="stop", patience=2, min_epochs=1)
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
    from eqmonitor.lightning_digits import DigitsClassifier

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
        from eqmonitor.lightning_digits import DigitsClassifier, DigitsDataModule
        mon = eqm.EquivarianceMonitor({C4_SPEC!r}, n_samples=8, plots=False, max_overhead=None,
                                      records_dir={str(tmp_path / "eqm")!r})
        guard = eqm.EquivarianceGuard("{KEY}", threshold=1e-3, on_breach="raise")
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
