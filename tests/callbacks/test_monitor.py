"""EquivarianceMonitor inside a real ``Trainer.fit`` on CPU: zero interference, schedule, probe set, errors."""

from __future__ import annotations

import math

import pytest
import torch
from monitor_specs import C4_SPEC, nan_on_rotated
from torch.utils.data import DataLoader, Dataset

import eqmonitor as eqm
from eqmonitor.callbacks import EquivarianceMonitor
from eqmonitor.demos import DigitsClassifier, DigitsDataModule

KEYS = ("error_mean", "error_max", "error_p95", "nonfinite", "exact_error", "flip_rate")


def monitor(**kw):
    symmetries = kw.pop("symmetries", C4_SPEC)
    options = dict(n_samples=16, plots=False, records=False)
    options.update(kw)
    return EquivarianceMonitor(symmetries, **options)


def test_weights_bit_identical_with_and_without_monitor(fit):
    """A real set-up: BatchNorm + Dropout + a shuffled loader; layer-wise and gradient tests on, checks mid-epoch."""
    _, plain, _ = fit([])
    trainer, watched, _ = fit(
        [monitor(layerwise=True, gradients=True, every_n_train_steps=3, plots=True, records=True)]
    )
    a, b = plain.state_dict(), watched.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert any("running_mean" in k for k in a) and any(isinstance(m, torch.nn.Dropout) for m in watched.modules())
    assert [m.training for m in watched.modules()] == [m.training for m in plain.modules()]


def test_logs_every_key_on_schedule(fit):
    mon = monitor(layerwise=True, gradients=True)
    trainer, model, _ = fit([mon])
    steps = [e["global_step"] for e in mon.history["c4"]]
    assert steps == [0, 4, 8]  # at start, then the end of each of the 2 epochs (4 steps each)
    metrics = trainer.callback_metrics
    for key in KEYS:
        assert f"equivariance/c4/{key}" in metrics
    assert "equivariance/c4/interp_error" not in metrics  # C4 acts exactly on the pixel grid
    layer_keys = [k for k in metrics if k.startswith("equivariance/c4/layer/")]
    assert "equivariance/c4/layer/net.features.0" in layer_keys
    assert "equivariance/c4/grad_input" in metrics
    assert "equivariance/c4/grad_param/net.head.weight" in metrics
    # the logged mean is the probe's mean: re-measure the final model on the same probe
    res = eqm.functional.orbit_errors(
        model, mon.probe.x, mon.symmetries[0], mon._elements["c4"], labels=mon.probe.labels
    )
    assert float(metrics["equivariance/c4/error_mean"]) == pytest.approx(float(res.mean()), rel=1e-5)
    assert 0.05 < float(res.mean()) < 2  # a plain CNN is not C4-invariant
    metric = eqm.EquivarianceError(mon.symmetries[0], elements=mon._elements["c4"])  # the same measurement as a Metric
    metric.update(model, mon.probe.x)
    value = metric.summary()
    assert float(value.error_mean) == pytest.approx(float(metrics["equivariance/c4/error_mean"]), rel=1e-5)
    assert float(value.error_max) == pytest.approx(float(metrics["equivariance/c4/error_max"]), rel=1e-5)


def test_probe_set_comes_from_validation_data_with_a_seed(fit):
    a, c = monitor(seed=3), monitor(seed=4)
    b = monitor(seed=3, symmetries=dict(C4_SPEC, name="c4_again"))  # state keys must differ within one Trainer
    _, _, dm = fit([a, b, c], max_epochs=1)
    assert a.probe.indices == b.probe.indices != c.probe.indices
    x_val, y_val = dm.val_set.tensors
    idx = torch.tensor(a.probe.indices)
    assert torch.equal(a.probe.x, x_val[idx]) and torch.equal(a.probe.labels, y_val[idx])


class _Counting(Dataset):
    def __init__(self, base):
        self.base, self.calls = base, 0

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        self.calls += 1
        return self.base[i]


class _CountingData(DigitsDataModule):
    def setup(self, stage=None):
        super().setup(stage)
        if not isinstance(self.train_set, _Counting):
            self.train_set = _Counting(self.train_set)


def test_train_loader_is_never_read_by_the_monitor(fit):
    dm_plain, dm_watched = _CountingData(n_train=256), _CountingData(n_train=256)
    fit([], datamodule=dm_plain)
    fit([monitor(every_n_train_steps=1)], datamodule=dm_watched)
    assert dm_watched.train_set.calls == dm_plain.train_set.calls > 0


def test_gradient_accumulation_does_not_double_checks(fit):
    mon = monitor(every_n_train_steps=1, every_n_epochs=None, check_at_start=False)
    trainer, _, _ = fit([mon], accumulate_grad_batches=2)
    steps = [e["global_step"] for e in mon.history["c4"]]
    assert steps == sorted(set(steps)) == list(range(1, trainer.global_step + 1))


def test_epoch_and_step_schedules_never_check_one_step_twice(fit):
    mon = monitor(every_n_train_steps=2, every_n_epochs=1)
    fit([mon])
    steps = [e["global_step"] for e in mon.history["c4"]]
    assert steps == [0, 2, 4, 6, 8]


def test_sanity_check_and_fast_dev_run_log_nothing(fit, tmp_path):
    mon = monitor(records=True)
    trainer, _, _ = fit([mon], fast_dev_run=True)
    assert mon.history["c4"] == [] and not (tmp_path / "eqmonitor_records").exists()
    assert not any(k.startswith("equivariance/") for k in trainer.callback_metrics)
    mon = monitor(check_at_start=False)
    fit([mon], num_sanity_val_steps=2, max_epochs=1)
    assert [e["global_step"] for e in mon.history["c4"]] == [4]


def test_nan_outputs_are_reported_as_nonfinite_and_breach_the_guard(fit):
    mon = monitor(check_at_start=True)
    guard = eqm.EquivarianceGuard("equivariance/c4/error_mean", threshold=1e9, on_breach="stop", check_finite=True)
    trainer, _, _ = fit([mon, guard], model=nan_on_rotated(), max_epochs=3)
    first = mon.history["c4"][0]["metrics"]
    assert 0 < first["nonfinite"] < 1
    assert math.isfinite(first["error_mean"])  # NaN pairs are counted, never averaged in
    # the check at start does not count toward the guard's patience: it stops after the first epoch's check
    assert trainer.global_step == 4 and guard.stopped_reason and "NaN/Inf" in guard.stopped_reason


def test_nan_without_check_finite_does_not_breach(fit):
    guard = eqm.EquivarianceGuard("equivariance/c4/error_mean", threshold=1e9, on_breach="stop", check_finite=False)
    trainer, _, _ = fit([monitor(), guard], model=nan_on_rotated(), max_epochs=1)
    assert guard.stopped_reason is None and trainer.current_epoch == 1


class _DictData(DigitsDataModule):
    def val_dataloader(self):
        rows = [{"pixels": x, "digit": y} for x, y in zip(*self.val_set.tensors)]
        return DataLoader(rows, batch_size=16)


class _DictModel(DigitsClassifier):
    def validation_step(self, batch, batch_idx):
        return super().validation_step((batch["pixels"], batch["digit"]), batch_idx)


def test_unreadable_batches_fail_at_fit_start_with_what_to_change(fit):
    with pytest.raises(TypeError, match="input_key"):
        fit([monitor()], datamodule=_DictData(n_train=256))
    mon = monitor(input_key="pixels", label_key="digit")
    fit([mon], model=_DictModel(), datamodule=_DictData(n_train=256), max_epochs=1)
    assert mon.probe.labels is not None and len(mon.history["c4"]) == 2


def test_symmetry_that_does_not_fit_fails_at_fit_start(fit):
    wrong = {"name": "bad", "group": "c4", "input": "image", "output": "image"}  # classifier logits are no image
    model = DigitsClassifier()
    with pytest.raises((ValueError, TypeError, RuntimeError), match="'bad' does not fit.*Invariant"):
        fit([monitor(symmetries=wrong)], model=model)
    assert model.trainer.global_step == 0


def test_no_validation_data_asks_for_probe_data(fit, tmp_path):
    import lightning as L

    from eqmonitor.demos import load_digits

    x, y = load_digits()
    train = DataLoader(torch.utils.data.TensorDataset(x[:128], y[:128]), batch_size=32)
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=str(tmp_path),
        callbacks=[monitor()],
    )
    with pytest.raises(ValueError, match="probe_data"):
        trainer.fit(DigitsClassifier(), train)
    mon = monitor(probe_data=(x[1500:], y[1500:]))
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=str(tmp_path),
        callbacks=[mon],
    )
    trainer.fit(DigitsClassifier(), train)
    assert len(mon.history["c4"]) == 2


def test_constructor_validates_arguments():
    with pytest.raises(ValueError, match="unique"):
        EquivarianceMonitor([C4_SPEC, C4_SPEC])
    with pytest.raises(ValueError, match="loss_fn"):
        EquivarianceMonitor(C4_SPEC, loss_fn="hinge")
    with pytest.raises(ValueError, match="Nothing would ever be checked"):
        EquivarianceMonitor(C4_SPEC, every_n_epochs=None, check_at_start=False)
    with pytest.raises(TypeError, match="Symmetry"):
        EquivarianceMonitor(["c4"])


def test_lightning_cli_config_parses():
    from pathlib import Path

    from lightning.pytorch.cli import LightningCLI

    from eqmonitor.demos import DigitsClassifier as Model
    from eqmonitor.demos import DigitsDataModule as Data

    config = Path(__file__).parents[2] / "configs" / "digits_monitor.yaml"
    cli = LightningCLI(Model, Data, run=False, args=["--config", str(config), "--trainer.logger", "false"])
    monitors = [cb for cb in cli.trainer.callbacks if isinstance(cb, EquivarianceMonitor)]
    guards = [cb for cb in cli.trainer.callbacks if isinstance(cb, eqm.EquivarianceGuard)]
    assert len(monitors) == 1 and [s.name for s in monitors[0].symmetries] == ["c4", "rotation"]
    assert isinstance(monitors[0].symmetries[1].group, eqm.groups.SO2)
    assert monitors[0].layerwise and monitors[0].gradients
    assert guards[0].thresholds == {"equivariance/c4/error_mean": 0.9} and guards[0].on_breach == "stop"


def test_gradient_tests_run_with_the_default_trainer_and_skip_under_inference_mode(fit):
    """Lightning 2.6 calls ``on_validation_end`` outside the loop's inference mode, so the default ``Trainer`` gets
    gradient tests; a check that does run under inference mode skips them with one warning naming the fix."""
    mon = monitor(gradients=True)
    trainer, model, _ = fit([mon], inference_mode=True)
    assert "equivariance/c4/grad_input" in trainer.callback_metrics
    trainer.callback_metrics.clear()
    with pytest.warns(UserWarning, match=r"inference_mode=False") as caught, torch.inference_mode():
        mon._last_step = None
        mon._check(trainer, model)
        mon._check(trainer, model)
    assert sum("Gradient tests skipped" in str(w.message) for w in caught) == 1
    assert "equivariance/c4/error_mean" in trainer.callback_metrics
    assert not any("grad_" in k for k in trainer.callback_metrics)
