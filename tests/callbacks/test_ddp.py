"""Two CPU processes (``strategy="ddp"``, gloo), at the monitor's defaults (records and figures on) with a
TensorBoardLogger, under a timeout: the monitor probes a shard per rank and logs the same gathered values on both; a
breach on one rank only makes both ranks stop (or raise) together; rank-local validation sets of different sizes get
equal probe shares; nothing hangs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as dist

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import lightning as L
    import torch
    import eqmonitor as eqm
    from eqmonitor.demos import DigitsClassifier, DigitsDataModule

    out_dir, on_breach = sys.argv[1], sys.argv[2]
    local_val = len(sys.argv) > 3  # rank-local validation sets: rank 1 holds 3 samples

    class LocalVal(DigitsDataModule):
        def val_dataloader(self):
            x, y = self.val_set.tensors
            n = 3 if torch.distributed.get_rank() == 1 else 40
            return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[:n], y[:n]), batch_size=16)

    class RankLogs(DigitsClassifier):
        def validation_step(self, batch, batch_idx):
            super().validation_step(batch, batch_idx)
            breach = self.global_rank == 1 and self.current_epoch >= 1  # rank 1 only, from the 2nd epoch
            self.log("equivariance/local/error_mean", 5.0 if breach else 0.0, sync_dist=False)

    L.seed_everything(0, verbose=False)
    mon = eqm.EquivarianceMonitor({"name": "c4", "group": "c4", "input": "image", "output": "invariant"},
                                  n_samples=8 if local_val else 16)
    guard = eqm.EquivarianceGuard({"equivariance/local/error_mean": 1.0, "equivariance/c4/error_mean": 100.0},
                                  on_breach=on_breach)
    logger = L.pytorch.loggers.TensorBoardLogger(out_dir, name="tb")
    trainer = L.Trainer(max_epochs=4, accelerator="cpu", devices=2, strategy="ddp", logger=logger,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=out_dir, callbacks=[mon, guard], limit_val_batches=2,
                        use_distributed_sampler=not local_val)
    model = RankLogs()
    try:
        trainer.fit(model, datamodule=(LocalVal if local_val else DigitsDataModule)(n_train=256))
        raised = None
    except eqm.EquivarianceBreachError as err:
        raised = str(err)
    rank = trainer.global_rank
    result = {"rank": rank, "global_step": trainer.global_step, "epoch": trainer.current_epoch,
              "reason": guard.stopped_reason, "raised": raised, "history": mon.history["c4"],
              "probe_indices": mon.probe.indices, "log_dir": logger.log_dir if rank == 0 else None}
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)
    if rank == 0:
        torch.save({"state": model.state_dict(), "x": mon.probe.x}, os.path.join(out_dir, "model.pt"))
    if raised:
        sys.exit(3)
    """
)


def _run(tmp_path, on_breach, *extra):
    script = tmp_path / "ddp_fit.py"
    script.write_text(SCRIPT)
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path), on_breach, *extra],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=tmp_path,
    )
    ranks = [
        json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1) if (tmp_path / f"rank{r}.json").exists()
    ]
    return proc, ranks


def test_one_rank_breaches_both_stop_together(tmp_path):
    proc, ranks = _run(tmp_path, "stop")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(ranks) == 2
    r0, r1 = ranks
    # 2 steps per epoch per rank (256 samples, batch 64, 2 ranks): rank 1 breaches in epoch 1, both stop after it
    assert r0["global_step"] == r1["global_step"] == 4 and r0["epoch"] == r1["epoch"] == 2
    assert "equivariance/local/error_mean = 5" in r1["reason"]
    assert "another process" in r0["reason"]
    # each rank probed its own shard; the logged values are the gathered ones, equal on both ranks
    assert set(r0["probe_indices"]).isdisjoint(r1["probe_indices"])
    assert [(h["global_step"], h["metrics"]) for h in r0["history"]] == [
        (h["global_step"], h["metrics"]) for h in r1["history"]
    ]
    # … and equal to one process measuring the union of the shards with the final weights
    import eqmonitor as eqm
    from eqmonitor.demos import DigitsClassifier
    from eqmonitor.symmetry import Symmetry

    saved = torch.load(tmp_path / "model.pt")
    model = DigitsClassifier()
    model.load_state_dict(saved["state"])
    model.eval()
    from eqmonitor.demos import DigitsDataModule

    dm = DigitsDataModule(n_train=256)
    dm.setup()
    x_val = dm.val_set.tensors[0]
    union = x_val[torch.tensor(r0["probe_indices"] + r1["probe_indices"])]
    c4 = Symmetry.from_spec(name="c4", group="c4", input="image", output="invariant")
    res = eqm.functional.orbit_errors(model, union, c4, c4.group.all_elements())
    last = r0["history"][-1]["metrics"]
    assert last["error_mean"] == pytest.approx(float(res.mean()), rel=1e-5)
    assert last["error_max"] == pytest.approx(float(res.max()), rel=1e-5)
    # rank 0 wrote the run's records and figures next to its TensorBoard logs; the breaching check is in them
    from logreaders import read_tensorboard

    from eqmonitor.records import read_records

    records = read_records(f"{r0['log_dir']}/eqmonitor_records")
    assert [r["global_step"] for r in records] == [h["global_step"] for h in r0["history"]] == [0, 2, 4]
    assert records[-1]["breaches"] and records[-1]["breaches"][0]["on_breach"] == "stop"
    images = read_tensorboard(r0["log_dir"])["images"]["equivariance/c4/nero_aggregate"]
    assert [s for s, _, _ in images] == [0, 2, 4]


def test_one_rank_breaches_both_raise_and_exit_non_zero(tmp_path):
    proc, ranks = _run(tmp_path, "raise")
    assert proc.returncode != 0
    assert len(ranks) == 2 and all(r["raised"] for r in ranks)
    assert ranks[0]["global_step"] == ranks[1]["global_step"] == 4


def test_rank_local_validation_sets_of_different_sizes_get_equal_shares(tmp_path):
    """``use_distributed_sampler=False`` and rank 1's validation set holds 3 samples, ``n_samples=8``: every rank
    probes the smallest share (2 of rank 1's, and 2 of rank 0's), with a warning, instead of a gloo abort."""
    proc, ranks = _run(tmp_path, "warn", "local")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(ranks) == 2 and all(len(r["probe_indices"]) == 2 for r in ranks)
    assert len(ranks[0]["history"]) == len(ranks[1]["history"]) == 5
    assert "smallest share" in proc.stderr
