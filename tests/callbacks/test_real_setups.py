"""The monitor on ordinary training set-ups, at the defaults a user gets: the schedule is kept, every precision that
trains on a CPU trains with the monitor, random validation augmentations leave training bit-identical, records live
per run in a folder that cannot shadow the package, and one drift event gives one warning."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
import torch
from logreaders import read_tensorboard
from monitor_specs import C4_SPEC, nan_on_rotated
from torch.utils.data import DataLoader, Dataset

import eqmonitor as eqm
import eqmonitor.alerts
from eqmonitor.callbacks import EquivarianceMonitor
from eqmonitor.callbacks.monitor import EquivarianceDriftWarning
from eqmonitor.demos import DigitsClassifier, DigitsDataModule
from eqmonitor.records import read_records

README_SPECS = [C4_SPEC, {"name": "rotation", "group": "so2", "input": "image", "output": "invariant"}]


def test_every_scheduled_check_runs_at_the_defaults_with_its_figures(fit, tmp_path):
    """The README's fit: a check every epoch, figures on, no budget argument. Every epoch is checked and every
    check's figures are logged by the end of ``fit`` (the old 3% default budget logged one check of 20)."""
    from lightning.pytorch.loggers import TensorBoardLogger

    logger = TensorBoardLogger(str(tmp_path), name="tb")
    mon = EquivarianceMonitor(README_SPECS, n_samples=16)
    fit([mon], logger=logger, max_epochs=6)
    assert [e["global_step"] for e in mon.history["c4"]] == [0, 4, 8, 12, 16, 20, 24]
    assert mon.deferred == 0
    tb = read_tensorboard(logger.log_dir)
    for name in ("c4", "rotation"):
        assert [s for s, _ in tb["scalars"][f"equivariance/{name}/error_mean"]] == [0, 4, 8, 12, 16, 20, 24]
        for kind in ("nero_aggregate", "nero_individual", "nero_dr"):
            assert [s for s, _, _ in tb["images"][f"equivariance/{name}/{kind}"]] == [0, 4, 8, 12, 16, 20, 24]
    assert set(mon.figure_seconds) >= {"nero_aggregate", "nero_individual", "nero_dr"}
    assert len(mon.check_seconds) == 7


def test_opt_in_budget_defers_with_one_visible_warning(fit):
    tight = EquivarianceMonitor(C4_SPEC, n_samples=16, every_n_train_steps=1, max_overhead=0.01)
    with pytest.warns(UserWarning, match="deferring the check") as caught:
        fit([tight])
    assert sum("deferring the check" in str(w.message) for w in caught) == 1
    assert tight.deferred > 0 and len(tight.history["c4"]) + tight.deferred == 1 + 8
    with pytest.raises(ValueError, match="max_overhead"):
        EquivarianceMonitor(C4_SPEC, max_overhead=1.5)


def test_figure_cadence_of_its_own(fit, tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger

    logger = TensorBoardLogger(str(tmp_path), name="tb")
    mon = EquivarianceMonitor(C4_SPEC, n_samples=16, plots_every_n_checks=2)
    fit([mon], logger=logger, max_epochs=3)
    tb = read_tensorboard(logger.log_dir)
    assert [s for s, _ in tb["scalars"]["equivariance/c4/error_mean"]] == [0, 4, 8, 12]
    assert [s for s, _, _ in tb["images"]["equivariance/c4/nero_aggregate"]] == [0, 8]


@pytest.mark.parametrize("precision", ["64-true", "32-true", "bf16-true", "16-true", "bf16-mixed", "16-mixed"])
def test_every_cpu_precision_trains_with_the_monitor(fit, precision):
    """float32 data and ``Trainer(precision=...)``: the probe is cast as Lightning casts batches."""
    plain, *_ = fit([], precision=precision, max_epochs=1)
    mon = EquivarianceMonitor(C4_SPEC, n_samples=16)
    trainer, model, _ = fit([mon], precision=precision, max_epochs=1)
    assert trainer.global_step == plain.global_step == 4
    assert [e["global_step"] for e in mon.history["c4"]] == [0, 4]
    assert mon.probe.x.dtype == next(model.parameters()).dtype
    start, last = (e["metrics"] for e in mon.history["c4"])
    assert np.isfinite(start["error_mean"]) and start["nonfinite"] == 0
    # "16-true" with Adam diverges to NaN weights within an epoch: reported as such, never averaged away
    model.eval()
    diverged = not all(torch.isfinite(p).all() for p in model.parameters())
    assert (last["nonfinite"] == 1.0 and np.isnan(last["error_mean"])) if diverged else np.isfinite(last["error_mean"])


class _RandomlyAugmented(Dataset):
    """A validation set whose ``__getitem__`` draws from every global random stream (torch, Python, NumPy)."""

    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        shift = torch.randn(()) * 0.1 + random.random() * 0.1 + float(np.random.rand()) * 0.1
        return x + shift, y


class _AugmentedVal(DigitsDataModule):
    def val_dataloader(self):
        return DataLoader(_RandomlyAugmented(self.val_set), batch_size=self.batch_size)


def test_random_validation_augmentation_leaves_training_bit_identical(fit):
    _, plain, _ = fit([], datamodule=_AugmentedVal(n_train=256))
    _, watched, _ = fit([EquivarianceMonitor(C4_SPEC, n_samples=16)], datamodule=_AugmentedVal(n_train=256))
    a, b = plain.state_dict(), watched.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_records_without_a_logger_live_per_run_under_default_root_dir(fit, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first, second = EquivarianceMonitor(C4_SPEC, n_samples=16), EquivarianceMonitor(C4_SPEC, n_samples=16)
    fit([first], max_epochs=1)
    fit([second], max_epochs=1)
    assert not (tmp_path / "eqmonitor").exists()  # would shadow the package next to a user's script
    base = tmp_path / "eqmonitor_records"
    assert sorted(p.name for p in base.iterdir()) == ["version_0", "version_1"]
    for version, mon in (("version_0", first), ("version_1", second)):
        records = read_records(base / version)
        assert [r["global_step"] for r in records] == [0, 4]
        assert [r["metrics"]["error_mean"] for r in records] == pytest.approx(
            [e["metrics"]["error_mean"] for e in mon.history["c4"]]
        )


def test_two_wandb_runs_never_share_records(fit, tmp_path, monkeypatch):
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        (tmp_path / var.lower()).mkdir()
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    for var, value in (("WANDB_MODE", "offline"), ("WANDB_SILENT", "true"), ("WANDB_CONSOLE", "off")):
        monkeypatch.setenv(var, value)
    folders = []
    for seed in (0, 1):
        logger = WandbLogger(project="eqmonitor-tests", save_dir=str(tmp_path / "wb"), offline=True)
        mon = EquivarianceMonitor(C4_SPEC, n_samples=16)
        fit([mon], logger=logger, max_epochs=1, seed=seed)
        run_id = logger.experiment.id
        wandb.finish()
        folder = tmp_path / "wb" / "eqmonitor_records" / run_id
        records = read_records(folder)
        assert [r["global_step"] for r in records] == [0, 4]
        assert [r["metrics"]["error_mean"] for r in records] == pytest.approx(
            [e["metrics"]["error_mean"] for e in mon.history["c4"]]
        )
        folders.append(folder)
    assert folders[0] != folders[1]


def test_fresh_run_refuses_a_records_dir_of_another_run(fit, tmp_path):
    fit([EquivarianceMonitor(C4_SPEC, n_samples=16, records_dir=str(tmp_path / "r"))], max_epochs=1)
    with pytest.raises(Exception, match="records_dir"):
        fit([EquivarianceMonitor(C4_SPEC, n_samples=16, records_dir=str(tmp_path / "r"))], max_epochs=1)
    assert [r["global_step"] for r in read_records(tmp_path / "r")] == [0, 4]


def test_resume_into_a_new_logger_version_has_the_whole_history_once(fit, tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_top_k=-1, every_n_epochs=1)
    first_logger = TensorBoardLogger(str(tmp_path), name="tb")
    fit(
        [EquivarianceMonitor(C4_SPEC, n_samples=16), ckpt], logger=first_logger, max_epochs=3, enable_checkpointing=True
    )
    old = read_records(f"{first_logger.log_dir}/eqmonitor_records")
    assert [r["global_step"] for r in old] == [0, 4, 8, 12]
    epoch1 = next(p for p in (tmp_path / "ckpt").iterdir() if p.name.startswith("epoch=1"))  # step 8
    logger = TensorBoardLogger(str(tmp_path), name="tb")  # the default: a new version folder
    mon = EquivarianceMonitor(C4_SPEC, n_samples=16)
    fit([mon], logger=logger, max_epochs=4, ckpt_path=str(epoch1))
    assert logger.log_dir != first_logger.log_dir
    records = read_records(f"{logger.log_dir}/eqmonitor_records")
    assert [r["global_step"] for r in records] == [0, 4, 8, 12, 16]
    assert records[3]["metrics"]["error_mean"] == pytest.approx(mon.history["c4"][3]["metrics"]["error_mean"])
    assert records[2]["metrics"] == old[2]["metrics"]  # carried over, and the dead run's step 12 is not among them
    assert records[3]["metrics"] != old[3]["metrics"]


class _QuietAtInit(DigitsClassifier):
    """A plain CNN whose initial outputs hardly depend on the input (a small head on a bias), as at initialisation."""

    def __init__(self):
        super().__init__()
        with torch.no_grad():
            self.net.head.weight.mul_(1e-3)
            self.net.head.bias.fill_(1.0)


def test_no_drift_alert_from_the_initial_check_and_one_warning_per_event(fit, tmp_path):
    """At initialisation the error is tiny and training raises it far above 2x: that is learning, not drift. The
    references are taken after the warm-up epoch, so the defaults do not alert at epoch 0; without the warm-up
    (``drift_warmup=0``) they would."""
    runs = {}
    for warmup in (1, 0):
        mon = EquivarianceMonitor(
            C4_SPEC, n_samples=16, alert_wait=0.0, drift_warmup=warmup, records_dir=str(tmp_path / f"r{warmup}")
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit([mon], model=_QuietAtInit(), max_epochs=2)
        drift = [w for w in caught if issubclass(w.category, EquivarianceDriftWarning)]
        runs[warmup] = (mon, read_records(tmp_path / f"r{warmup}"), drift)
    mon, records, drift = runs[1]  # the default
    values = [e["metrics"]["error_mean"] for e in mon.history["c4"]]
    assert values[1] > 2 * values[0]
    assert mon.drift.init == {"c4/error_mean": values[1]}
    assert records[0]["alerts"] == [] and records[1]["alerts"] == []
    assert len(drift) == sum(len(r["alerts"]) for r in records)
    _, records0, drift0 = runs[0]
    assert records0[1]["alerts"] and len(drift0) == sum(len(r["alerts"]) for r in records0)


def test_one_drift_event_gives_one_warning_and_one_alert(fit, tmp_path):
    """drift_factor 1.01 and no throttle: every rising check is an event, from both references at once; each gives
    exactly one warning and one alert record, naming both references."""
    mon = EquivarianceMonitor(
        C4_SPEC, n_samples=16, drift_factor=1.01, drift_min=0.0, alert_wait=0.0, records_dir=str(tmp_path / "r")
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit([mon], max_epochs=4)
    records = read_records(tmp_path / "r")
    drift = [w for w in caught if issubclass(w.category, EquivarianceDriftWarning)]
    assert all(len(r["alerts"]) <= 1 for r in records)
    assert len(drift) == sum(len(r["alerts"]) for r in records)
    both = [a for r in records for a in r["alerts"] if a["reference"] == "best+init"]
    for alert in both:
        assert "best value" in alert["text"] and "after warm-up" in alert["text"]
    tracker = eqm.alerts.DriftTracker(keys=["error_mean"], wait_duration=0.0)
    tracker.update("c4", {"error_mean": 0.1}, 0, 0)
    (alert,) = tracker.update("c4", {"error_mean": 1.0}, 1, 1)
    assert alert.reference == "best+init" and alert.title == "eqmonitor: c4 error_mean drifted"


@pytest.mark.parametrize("partly_nan", [False, True])
def test_monitor_and_metric_agree_on_every_logged_statistic(fit, partly_nan):
    mon = EquivarianceMonitor(C4_SPEC, n_samples=16)
    trainer, model, _ = fit([mon], model=nan_on_rotated(1.2) if partly_nan else DigitsClassifier(), max_epochs=1)
    logged = mon.history["c4"][-1]["metrics"]
    metric = eqm.EquivarianceError(mon.symmetries[0], elements=mon._elements["c4"])
    metric.update(model, mon.probe.x, mon.probe.labels)
    value = metric.summary()
    pairs = mon.probe.x.shape[0] * mon._elements["c4"].shape[0]
    assert logged["nonfinite"] == pytest.approx(float(value.nonfinite_count) / pairs)
    assert (0 < logged["nonfinite"] < 1) if partly_nan else logged["nonfinite"] == 0
    for key in ("error_mean", "error_max", "nonfinite", "flip_rate", "exact_error"):
        assert logged[key] == pytest.approx(float(getattr(value, key)), rel=1e-12), key
    assert logged["exact_error"] == logged["error_mean"]  # C4: every element exact


class _TupleOutput(DigitsClassifier):
    """Returns ``(logits, features)``, as many research models do; its own steps take the logits."""

    def forward(self, x):
        return super().forward(x), x.flatten(1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self(x)[0], y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.cross_entropy(self(x)[0], y))


def test_output_selector_for_tuple_outputs(fit):
    with pytest.raises(TypeError, match="output_key"):
        fit([EquivarianceMonitor(C4_SPEC, n_samples=16)], model=_TupleOutput(), max_epochs=1)
    by_arg = EquivarianceMonitor(C4_SPEC, n_samples=16, output_key=0)
    _, model, _ = fit([by_arg], model=_TupleOutput(), max_epochs=1)
    by_spec = EquivarianceMonitor(dict(C4_SPEC, output_key=0), n_samples=16)  # as YAML gives it
    fit([by_spec], model=_TupleOutput(), max_epochs=1)
    assert by_spec.symmetries[0].output_key == 0 and len(by_spec.history["c4"]) == len(by_arg.history["c4"]) == 2
    plain = eqm.Symmetry.from_spec(**C4_SPEC)
    res = eqm.functional.orbit_errors(lambda x: model(x)[0], by_arg.probe.x, plain, by_arg._elements["c4"])
    assert by_arg.history["c4"][-1]["metrics"]["error_mean"] == pytest.approx(float(res.mean()), rel=1e-12)
