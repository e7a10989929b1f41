"""The trackers' own ways of comparing runs: W&B gets each check's aggregate NERO curve as a ``wandb.Table`` and a
``wandb.plot.line_series`` chart (read back from an offline run); TensorBoard shows runs side by side when they share
one logdir under names that say the strategy, ``TensorBoardLogger(root, name="study", version=tag)``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import pytest
from logreaders import read_tensorboard, read_wandb_offline

import eqmonitor.compare as cmp
from eqmonitor.callbacks import EquivarianceMonitor
from eqmonitor.demos import DigitsClassifier, DigitsDataModule

SPEC = {"name": "c4", "group": "c4", "input": "image", "output": "invariant"}


def _fit(monitor, logger, augment="none"):
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=logger, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=1,
                        callbacks=[monitor])  # fmt: skip
    trainer.fit(DigitsClassifier(augment=augment), datamodule=DigitsDataModule(n_train=128))
    return trainer


def test_wandb_gets_the_aggregate_curve_of_every_check_as_a_table_and_a_line_series(wandb_env):
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(project="eqmonitor-tests", save_dir=str(wandb_env), offline=True)
    monitor = EquivarianceMonitor(SPEC, reference="consensus")  # defaults, and the consensus column
    _fit(monitor, logger)
    run_dir = Path(logger.experiment.dir.rsplit("/files", 1)[0])
    wandb.finish()
    for _ in range(20):  # once (of five runs on a loaded machine) the table rows were missing: see the message
        run = read_wandb_offline(run_dir)
        rows = [r for r in run["history"] if "equivariance/c4/nero_aggregate_table" in r]
        if rows:
            break
        time.sleep(0.5)
    assert rows, (run_dir, run["record_types"], [sorted(r) for r in run["history"]])  # what W&B wrote instead
    assert [r["trainer/global_step"] for r in rows] == [e["global_step"] for e in monitor.history["c4"]] == [0, 2]
    last = rows[-1]
    table = json.loads((run_dir / "files" / last["equivariance/c4/nero_aggregate_table"]["path"]).read_text())
    assert table["columns"] == ["element", "x", "error_mean", "error_max", "error_std", "exact",
                                "consensus_error_mean"]  # fmt: skip
    result = monitor.latest["c4"]
    by_column = {c: [row[i] for row in table["data"]] for i, c in enumerate(table["columns"])}
    assert by_column["x"] == [0.0, 90.0, 180.0, 270.0] and by_column["exact"] == [True] * 4
    assert by_column["error_mean"] == pytest.approx(result.summary.per_element_mean.tolist(), rel=1e-9)
    assert by_column["consensus_error_mean"] == pytest.approx(result.consensus.per_element().tolist(), rel=1e-9)
    # the line-series chart: its own table of (series, x, y), one series per curve
    chart = last["equivariance/c4/nero_aggregate_curve_table"]
    assert chart["_type"] == "table-file" and chart["nrows"] == 2 * 4
    series = json.loads((run_dir / "files" / chart["path"]).read_text())
    assert series["columns"] == ["step", "lineKey", "lineVal"]  # W&B's names: x, series, y
    assert {key for _, key, _ in series["data"]} == {"error_mean", "consensus_error_mean"}
    curve = sorted((x, y) for x, key, y in series["data"] if key == "error_mean")
    assert [x for x, _ in curve] == by_column["x"]
    assert [y for _, y in curve] == pytest.approx(by_column["error_mean"], rel=1e-9)


def test_tensorboard_runs_side_by_side_named_by_their_strategy(tmp_path):
    """The documented way: one logdir, ``name`` for the study, ``version`` for the strategy (the monitor's tag)."""
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

    root = tmp_path / "tb"
    for tag in ("plain", "c4-augmented"):
        logger = TensorBoardLogger(str(root), name="study", version=tag)
        _fit(EquivarianceMonitor(SPEC, tag=tag, plots=False), logger, augment="none" if tag == "plain" else "c4")
        assert Path(logger.log_dir) == root / "study" / tag
    mux = EventMultiplexer().AddRunsFromDirectory(str(root / "study"))
    mux.Reload()
    assert set(mux.Runs()) == {"plain", "c4-augmented"}  # what TensorBoard's run selector lists
    for tag in ("plain", "c4-augmented"):
        scalars = read_tensorboard(root / "study" / tag)["scalars"]
        assert [step for step, _ in scalars["equivariance/c4/error_mean"]] == [0, 2]
    runs = cmp.load_runs([root / "study"])  # the same folder compares with eqmonitor compare, named by the tags
    assert [r.name for r in runs] == ["plain", "c4-augmented"]
    assert runs[0].path == root / "study" / "plain" / "eqmonitor_records"
