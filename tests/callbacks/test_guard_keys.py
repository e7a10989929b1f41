"""EquivarianceGuard(strict=True): a watched key nothing logs is an error, raised on every rank alike, once the fit has
passed the point where it would have been logged (and never before: keys logged at epoch end, in the module's own
hooks, or by a validation that runs every other epoch are not errors); in real fits."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch.distributed as dist
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Callback
from monitor_specs import C4_SPEC

from eqmonitor.callbacks import EquivarianceGuard, EquivarianceMonitor
from eqmonitor.callbacks.guard import UnloggedKeyError
from eqmonitor.demos import DigitsClassifier

LOGGED = ("tr_step", "tr_epoch", "tr_ep_end", "va", "va_ep_end")


def watch():
    return EquivarianceMonitor(C4_SPEC, n_samples=16, plots=False, records=False)


class LogsEverywhere(DigitsClassifier):
    """Logs 1.0 from every place a user might: ``training_step`` (per step, and per epoch only), the module's
    ``on_train_epoch_end``, ``validation_step`` and ``on_validation_epoch_end``."""

    def training_step(self, batch, batch_idx):
        self.log("tr_step", 1.0)
        self.log("tr_epoch", 1.0, on_step=False, on_epoch=True)
        return super().training_step(batch, batch_idx)

    def on_train_epoch_end(self):
        self.log("tr_ep_end", 1.0)

    def validation_step(self, batch, batch_idx):
        super().validation_step(batch, batch_idx)
        self.log("va", 1.0)

    def on_validation_epoch_end(self):
        self.log("va_ep_end", 1.0)


class StepAtError(Callback):
    def on_exception(self, trainer, pl_module, exception):
        self.step = trainer.global_step


@pytest.mark.parametrize(
    "key, with_monitor, says, step",
    [
        ("val_los", False, "did you mean 'val_loss'", 4),  # a self.log-ged key: after epoch 0 and its validation
        ("equivarience/c4/error_mean", True, "did you mean 'equivariance/c4/error_mean'", 4),
        ("equivariance/c5/error_mean", True, "no EquivarianceMonitor measures 'c5'; the attached one measures", 4),
        # a monitor's field under a near miss of a monitored symmetry (a typo): named at the first check
        ("equivariance/C4/error_mean", True, "did you mean 'equivariance/c4/error_mean'", 0),
        ("equivariance/c4/error_mean", False, "none is attached to this guard", 4),
        ("equivariance/c4/eror_mean", True, "did you mean 'equivariance/c4/error_mean'", 0),  # at the first check
    ],
)
def test_typos_are_errors_with_the_closest_logged_key(fit, key, with_monitor, says, step):
    guard, spy = EquivarianceGuard(key, threshold=1.0, on_breach="raise"), StepAtError()
    with pytest.raises(MisconfigurationException) as err:
        fit(([watch()] if with_monitor else []) + [guard, spy], max_epochs=3)
    assert isinstance(err.value, UnloggedKeyError) and isinstance(err.value, ValueError)
    assert key in str(err.value) and says in str(err.value) and "Logged keys: [" in str(err.value)
    assert spy.step == step


@pytest.mark.parametrize(
    "trainer_kw, val_runs",
    [
        ({}, 3),
        ({"check_val_every_n_epoch": 2}, 1),  # the first validation is at the end of epoch 1
        ({"val_check_interval": 0.5}, 6),  # twice per epoch
    ],
)
def test_keys_logged_anywhere_are_judged_not_errors(fit, trainer_kw, val_runs):
    guard = EquivarianceGuard({k: 0.5 for k in LOGGED}, on_breach="warn")  # 1.0 > 0.5: every judgement breaches
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer, _, _ = fit([guard], model=LogsEverywhere(), max_epochs=3, **trainer_kw)
    assert trainer.current_epoch == 3 and set(guard.state_dict()["keys_checked"]) == set(LOGGED)
    assert all(guard.breaches[k] >= 1 for k in LOGGED), guard.breaches
    assert guard.breaches["va"] == val_runs


def test_a_typo_waits_for_the_first_validation(fit):
    guard, spy = EquivarianceGuard("val_los", threshold=1.0), StepAtError()
    with pytest.raises(UnloggedKeyError, match="val_loss"):
        fit([guard, spy], max_epochs=4, check_val_every_n_epoch=2)
    assert spy.step == 8  # epoch 0 had no validation; the error comes after epoch 1's


def test_without_validation_keys_are_judged_after_the_first_epoch(fit):
    guard = EquivarianceGuard({"tr_epoch": 5.0, "tr_ep_end": 5.0}, on_breach="raise")
    trainer, _, _ = fit([guard], model=LogsEverywhere(), max_epochs=2, limit_val_batches=0)
    assert trainer.current_epoch == 2 and set(guard.state_dict()["keys_checked"]) == {"tr_epoch", "tr_ep_end"}
    guard = EquivarianceGuard("va", threshold=5.0)  # only validation logs it, and it never runs
    with pytest.raises(UnloggedKeyError, match="validation is off"):
        fit([guard], model=LogsEverywhere(), max_epochs=2, limit_val_batches=0)


def test_a_fit_that_ends_before_any_validation_raises_nothing(fit):
    guard = EquivarianceGuard("val_los", threshold=1.0)
    trainer, _, _ = fit([guard], max_epochs=1, check_val_every_n_epoch=2)  # nothing could have logged it yet
    assert trainer.current_epoch == 1


def test_strict_false_keeps_the_lenient_behaviour(fit):
    guard = EquivarianceGuard({"val_los": 1.0, "equivariance/c4/eror_mean": 1.0}, strict=False)
    trainer, _, _ = fit([watch(), guard], max_epochs=2)
    assert trainer.current_epoch == 2 and guard.breaches == {"val_los": 0, "equivariance/c4/eror_mean": 0}


SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import lightning as L
    import eqmonitor as eqm
    from eqmonitor.callbacks.guard import UnloggedKeyError
    from eqmonitor.demos import DigitsClassifier, DigitsDataModule

    class RankZeroLogs(DigitsClassifier):
        def validation_step(self, batch, batch_idx):
            super().validation_step(batch, batch_idx)
            if self.global_rank == 0:  # in rank 0's callback_metrics only
                self.log("rank0_only", 0.0, rank_zero_only=True)

    guard = eqm.EquivarianceGuard({"rank0_only": 1.0, "val_los": 1.0}, on_breach="raise")
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", devices=2, strategy="ddp", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=sys.argv[1], callbacks=[guard], limit_val_batches=1)
    try:
        trainer.fit(RankZeroLogs(), datamodule=DigitsDataModule(n_train=128))
        error = None
    except UnloggedKeyError as err:
        error = str(err)
    with open(os.path.join(sys.argv[1], f"rank{trainer.global_rank}.json"), "w") as f:
        json.dump({"error": error, "global_step": trainer.global_step}, f)
    sys.exit(3 if error else 0)
    """
)


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
def test_every_rank_raises_together_and_a_key_one_rank_logs_counts(tmp_path):
    (tmp_path / "fit.py").write_text(SCRIPT)
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(tmp_path / "fit.py"), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert proc.returncode != 0
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank in ranks:  # both ranks raised at the same point (nothing hung); only the typo is reported
        missing = rank["error"].split("Logged keys")[0]
        assert rank["global_step"] == 1 and "'val_los'" in missing and "'rank0_only'" not in missing
