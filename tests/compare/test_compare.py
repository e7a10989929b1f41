"""eqmonitor.compare on real records: a plain and a C4-augmented digits run that differ only in augmentation."""

from __future__ import annotations

import math
import shutil

import lightning as L
import numpy as np
import pytest
from compare_specs import OLD_RECORDS

import eqmonitor.compare as cmp

_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy 2 renamed it


def test_summary_reads_the_records_and_ranks_the_augmented_run(two_runs):
    root, monitors = two_runs
    runs = cmp.load_runs([root / "none", root / "c4"])
    assert [r.name for r in runs] == ["none", "c4"] and cmp.common_symmetry(runs, "c4") == "c4"
    rows = {row["run"]: row for row in cmp.summary(runs, "c4")}
    for name in ("none", "c4"):
        history = [e["metrics"]["error_mean"] for e in monitors[name].history["c4"]]
        row = rows[name]
        assert row["checks"] == len(history) == 4  # before training, then after each of 3 epochs
        assert row["final_error"] == pytest.approx(history[-1]) and row["best_error"] == pytest.approx(min(history))
        assert row["error_auc"] == pytest.approx(_trapezoid(history, [0, 1, 2, 3]))
        assert row["flip_rate"] == pytest.approx(monitors[name].history["c4"][-1]["metrics"]["flip_rate"])
        assert (row["exact_elements"], row["interp_elements"]) == (4, 0)  # quarter turns are exact on the grid
        orbit = monitors[name].latest["c4"].orbit
        labels = monitors[name].probe.labels
        assert row["orbit_accuracy"] == pytest.approx(float((orbit.top1 == labels[:, None]).double().mean()))
    assert rows["c4"]["final_error"] < 0.8 * rows["none"]["final_error"]  # augmentation buys C4 invariance
    rot = {row["run"]: row for row in cmp.summary(runs, "rotation")}
    assert rot["c4"]["interp_elements"] == 8 and rot["c4"]["interp_error"] is not None


def test_paired_statistics_on_the_same_probe(two_runs):
    root, _ = two_runs
    runs = cmp.load_runs([root / "none", root / "c4"])
    assert cmp.same_probe(runs, "c4") is None
    (row,) = cmp.paired(runs, "c4", n_boot=4000)
    a, b = (r.arrays(r.checks("c4")[-1])["errors"].mean(1) for r in runs)
    assert row["samples"] == 32 and row["reference_better"] + row["run_better"] + row["ties"] == 32
    assert row["run_better"] == int((b < a).sum()) and row["mean_diff"] == pytest.approx(float((b - a).mean()))
    assert row["ci_low"] < row["mean_diff"] < row["ci_high"] < 0  # the augmented run is more invariant, per sample
    assert cmp.paired(runs, "c4", n_boot=4000) == [row]  # seeded bootstrap


def test_different_probes_are_never_paired(two_runs, other_probe_run):
    root, _ = two_runs
    runs = cmp.load_runs([root / "none", other_probe_run])
    assert "probed different samples" in cmp.same_probe(runs, "c4")
    with pytest.raises(cmp.CompareError, match="probed different samples"):
        cmp.paired(runs, "c4")
    old = cmp.load_runs([root / "none", OLD_RECORDS])
    with pytest.raises(cmp.CompareError, match="without a probe fingerprint"):
        cmp.paired(old, "c4")


def test_old_records_compare_on_what_they_hold(two_runs):
    root, _ = two_runs
    runs = cmp.load_runs([root / "none", OLD_RECORDS])
    rows = cmp.summary(runs, "c4")
    assert rows[1]["orbit_accuracy"] is None and rows[1]["probe"] is None and rows[1]["checks"] == 3
    assert math.isfinite(rows[1]["final_error"])
    fig = cmp.aggregate_figure(runs, "c4")
    assert len(fig.axes[0].lines) == 2
    with pytest.raises(cmp.CompareError, match="no probe labels"):
        cmp.per_class(runs[1], "c4")


def test_runs_are_found_in_tensorboard_wandb_and_parent_folders(two_runs, tmp_path):
    root, _ = two_runs
    assert [r.name for r in cmp.load_runs([root])] == ["none", "c4"]  # a folder above several runs: start order
    L.seed_everything(0, verbose=False)
    logger = L.pytorch.loggers.TensorBoardLogger(str(tmp_path), name="tb")
    from eqmonitor.callbacks import EquivarianceMonitor
    from eqmonitor.demos.lightning_digits import DigitsClassifier, DigitsDataModule

    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=1,
        callbacks=[EquivarianceMonitor({"name": "c4", "group": "c4"}, n_samples=8, plots=False)],
    )
    trainer.fit(DigitsClassifier(), datamodule=DigitsDataModule(n_train=128))
    (tb,) = cmp.load_runs([tmp_path / "tb" / "version_0"])
    assert tb.name == "version_0" and tb.path == tmp_path / "tb" / "version_0" / "eqmonitor_records"
    # W&B: <save_dir>/wandb/run-<date>-<id> holds the W&B files; the monitor wrote <save_dir>/eqmonitor_records/<id>
    (tmp_path / "save" / "wandb" / "run-20260101_120000-ab12cd34").mkdir(parents=True)
    shutil.copytree(root / "c4", tmp_path / "save" / "eqmonitor_records" / "ab12cd34")
    (wb,) = cmp.load_runs([tmp_path / "save" / "wandb" / "run-20260101_120000-ab12cd34"])
    assert wb.name == "c4" and wb.fingerprint == cmp.load_run(root / "c4").fingerprint
    with pytest.raises(cmp.NoRecordsError, match="No records in"):
        cmp.load_runs([tmp_path / "save" / "wandb"])


def test_figures_follow_the_group(two_runs):
    root, _ = two_runs
    runs = cmp.load_runs([root / "none", root / "c4"])
    polar = cmp.aggregate_figure(runs, "rotation")
    assert polar.axes[0].name == "polar" and [ln.get_label() for ln in polar.axes[0].lines] == ["none", "c4"]
    assert len(polar.axes[0].lines[0].get_ydata()) == 13  # 12 angles, closed around the circle
    curves = cmp.curves_figure(runs, "c4")
    assert [len(ln.get_xdata()) for ln in curves.axes[0].lines] == [4, 4]
    bars = cmp.per_class_figure(runs, "c4")
    assert len(bars.axes[0].patches) == 2 * len(np.unique(runs[0].labels()))
    assert cmp.per_class(runs[0], "c4").keys() == set(runs[0].labels().tolist())


def test_epochs_agree_between_records_curves_and_the_explorer(two_runs):
    """Records keep Lightning's 0-based ``epoch`` and the completed ``epochs_done``; the curves, the summary's
    ``best_at`` and the explorer all count epochs trained: 0 before training, then 1, 2, 3."""
    from eqmonitor.explorer.data import run_view

    root, monitors = two_runs
    run = cmp.load_run(root / "c4")
    checks = run.checks("c4")
    assert [r["epoch"] for r in checks] == [0, 0, 1, 2] and [r["epochs_done"] for r in checks] == [0, 1, 2, 3]
    assert [e["epochs_done"] for e in monitors["c4"].history["c4"]] == [0, 1, 2, 3]
    assert cmp.curve(run, "c4")[0].tolist() == [0, 1, 2, 3] == run_view(run, "c4").epochs
    best = int(np.argmin([r["metrics"]["error_mean"] for r in checks]))
    assert cmp.summary([run], "c4")[0]["best_at"] == best
    old = cmp.load_run(OLD_RECORDS)  # written before epochs_done: epoch + 1 once training started
    assert [cmp.epochs_done(r) for r in old.checks("c4")] == [r["epoch"] + (r["global_step"] > 0)
                                                            for r in old.checks("c4")]  # fmt: skip


def test_paired_statistics_against_a_chosen_reference(two_runs):
    root, _ = two_runs
    runs = cmp.load_runs([root / "none", root / "c4"])
    (default,) = cmp.paired(runs, "c4")
    (chosen,) = cmp.paired(runs, "c4", reference="c4")
    assert (default["reference"], chosen["reference"], chosen["run"]) == ("none", "c4", "none")
    assert chosen["mean_diff"] == pytest.approx(-default["mean_diff"])
    assert cmp.pick_reference(runs, 1) is runs[1] and cmp.pick_reference(runs, str(runs[1].path)) is runs[1]
    with pytest.raises(cmp.UsageError, match="'rot' is none of the runs"):
        cmp.paired(runs, "c4", reference="rot")
    with pytest.raises(cmp.UsageError, match="no check 4: choose one from -4 to 3"):
        cmp.check_at(runs[0], "c4", 4)
    with pytest.raises(cmp.UsageError, match="Got 3 names for 2 runs"):
        cmp.load_runs([root / "none", root / "c4"], names=["a", "b", "c"])
