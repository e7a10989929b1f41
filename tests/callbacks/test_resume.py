"""Fit, checkpoint, resume: the monitor's history, baselines and alert throttles come back; records have no
duplicates; a checkpoint written without the monitor still loads."""

from __future__ import annotations

import json

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from monitor_specs import C4_SPEC

from eqmonitor.callbacks import EquivarianceGuard, EquivarianceMonitor
from eqmonitor.records import read_records


def _monitor(records_dir):
    return EquivarianceMonitor(
        C4_SPEC,
        n_samples=16,
        plots=False,
        records_dir=str(records_dir),
        drift_factor=1.01,
        drift_min=0.0,
        alert_wait=1e9,
    )


def _raw_steps(records_dir):
    lines = (records_dir / "records.jsonl").read_text().splitlines()
    return [json.loads(line)["global_step"] for line in lines if line.strip()]


def test_resume_restores_state_and_appends_records_without_duplicates(fit, tmp_path):
    records_dir = tmp_path / "eqm"
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True, save_top_k=-1, every_n_epochs=1)
    first = _monitor(records_dir)
    guard = EquivarianceGuard("equivariance/c4/error_mean", threshold=1e-3, on_breach="warn")
    fit([first, guard, ckpt], max_epochs=3, enable_checkpointing=True)
    assert _raw_steps(records_dir) == [0, 4, 8, 12]
    # resume from the end of epoch 2 (step 8): the run "crashed" after writing the check at step 12
    epoch1 = [p for p in (tmp_path / "ckpt").iterdir() if p.name.startswith("epoch=1")][0]
    state = torch.load(epoch1, weights_only=False)["callbacks"]
    saved = state[first.state_key]
    assert [e["global_step"] for e in saved["history"]["c4"]] == [0, 4, 8]  # the checkpoint holds its own check
    second = _monitor(records_dir)
    guard2 = EquivarianceGuard("equivariance/c4/error_mean", threshold=1e-3, on_breach="warn")
    fit([second, guard2], max_epochs=4, ckpt_path=str(epoch1))
    assert [e["global_step"] for e in second.history["c4"]] == [0, 4, 8, 12, 16]
    assert second.drift.init == first.drift.init  # the baseline at initialisation survived the resume
    assert second.drift.last_alert.items() >= saved["drift"]["last_alert"].items()  # throttles restored
    # consecutive breach count continued (steps 4, 8 before the checkpoint, 12, 16 after; the check at start does
    # not count toward patience)
    assert guard2.breaches["equivariance/c4/error_mean"] == 4
    steps = _raw_steps(records_dir)
    assert steps == sorted(set(steps)) == [0, 4, 8, 12, 16]
    assert [r["global_step"] for r in read_records(records_dir)] == [0, 4, 8, 12, 16]


def test_checkpoint_without_monitor_state_loads(fit, tmp_path):
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True)
    fit([ckpt], max_epochs=1, enable_checkpointing=True)
    mon = _monitor(tmp_path / "eqm")
    trainer, _, _ = fit([mon], max_epochs=2, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert [e["global_step"] for e in mon.history["c4"]] == [8]  # no check "at start" mid-run
    assert trainer.current_epoch == 2
