"""The monitor's records are written on a background thread, at the defaults: a slow disk never stalls the check,
yet every record is on disk when a checkpoint is saved and when ``fit`` returns, and a failed write fails the fit
with a message naming the folder."""

from __future__ import annotations

import time

import pytest
import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint
from monitor_specs import C4_SPEC

from eqmonitor.callbacks import EquivarianceMonitor
from eqmonitor.records import RecordWriter, read_records


def test_a_slow_write_does_not_hold_the_check_and_is_on_disk_by_the_end_of_fit(fit, monkeypatch):
    """Each write waits until the check that queued it has returned (``check_seconds`` grows when it does): written
    inline, every write would wait out its 10 s timeout, the check still running."""
    seen: list[bool] = []
    original = RecordWriter.append
    mon = EquivarianceMonitor(C4_SPEC, n_samples=16)

    def gated(self, record, arrays=None):
        deadline = time.monotonic() + 10.0
        while len(mon.check_seconds) <= len(seen) and time.monotonic() < deadline:
            time.sleep(0.005)
        seen.append(len(mon.check_seconds) > len(seen))
        return original(self, record, arrays)

    monkeypatch.setattr(RecordWriter, "append", gated)
    fit([mon])
    assert seen == [True, True, True]  # the start check and two epochs, each written after its check returned
    assert [r["global_step"] for r in read_records(mon._folder)] == [0, 4, 8]


def test_every_record_is_on_disk_when_a_checkpoint_is_saved(fit, tmp_path, monkeypatch):
    original = RecordWriter.append

    def slow(self, record, arrays=None):
        time.sleep(0.3)
        return original(self, record, arrays)

    seen = []

    class ReadAtSave(Callback):
        def on_save_checkpoint(self, trainer, pl_module, checkpoint):
            state = next(v for k, v in checkpoint["callbacks"].items() if k.startswith("EquivarianceMonitor"))
            steps = [r["global_step"] for r in read_records(state["records_dir"])]
            seen.append((state["last_step"], steps))

    monkeypatch.setattr(RecordWriter, "append", slow)
    mon = EquivarianceMonitor(C4_SPEC, n_samples=16)
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), every_n_epochs=1, save_top_k=-1)
    fit([mon, ReadAtSave(), ckpt], enable_checkpointing=True)
    assert seen == [(4, [0, 4]), (8, [0, 4, 8])]


def test_a_failed_write_fails_the_fit_with_the_folder_in_the_message(fit, monkeypatch):
    def broken(self, record, arrays=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(RecordWriter, "append", broken)
    mon = EquivarianceMonitor(C4_SPEC, n_samples=16)
    with pytest.raises(RuntimeError, match="writing a check's record to .* failed: .*No space left") as err:
        fit([mon])
    assert isinstance(err.value.__cause__, OSError)


def test_the_monitor_pickles_after_a_fit_with_records(fit):
    import pickle

    mon = EquivarianceMonitor(C4_SPEC, n_samples=16)
    fit([mon])
    copy = pickle.loads(pickle.dumps(mon))
    assert copy.history["c4"] == mon.history["c4"] and torch.is_tensor(copy.probe.x)
