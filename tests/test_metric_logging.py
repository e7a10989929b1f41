"""EquivarianceError logs as torchmetrics metrics do: ``self.log("eq", metric)``, ``self.log_dict`` of a
``MetricCollection`` of reductions and of ``metric.summary().scalars()``, inside a real ``Trainer.fit``, read back from
the CSV logger; and the Metric, its functional twin and the monitor's check give the same numbers on one probe."""

from __future__ import annotations

import csv
import math

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torchmetrics import MetricCollection

import eqmonitor as eqm
from eqmonitor.check import run_check
from eqmonitor.functional import equivariance_error
from eqmonitor.metric import EquivarianceError
from eqmonitor.summary import LOGGED

ROT = {"name": "rotation", "group": "so2", "input": "image", "output": "invariant"}
N_VAL = 12


def _data(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 1, 12, 12, generator=torch.Generator().manual_seed(seed))


class Logged(L.LightningModule):
    """A tiny classifier that logs its rotation error at every validation epoch, in the three torchmetrics ways."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = eqm.demos.SmallCNN(size=12, width=4)
        self.eq = EquivarianceError(ROT, n_elements=6)
        self.eq_all = EquivarianceError(ROT, n_elements=6, keep_samples=True)
        self.reductions = MetricCollection(
            {r: EquivarianceError(ROT, n_elements=6, reduction=r) for r in ("mean", "max", "p95")}, prefix="eq_"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, _ = batch
        self.eq.update(self.net, x)
        self.log("eq", self.eq)  # compute() is a scalar: Lightning logs the metric object itself
        self.reductions.update(self.net, x)
        self.log_dict(self.reductions)  # a collection of scalars, as torchmetrics' own
        self.eq_all.update(self.net, x)

    def on_validation_epoch_end(self):
        self.log_dict({f"summary/{k}": v for k, v in self.eq_all.summary().scalars().items()})
        self.eq_all.reset()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)  # the weights stay: the logged numbers can be checked


def _loader(x: torch.Tensor, batch_size: int) -> torch.utils.data.DataLoader:
    y = torch.arange(x.shape[0]) % 10
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size)


def test_log_and_log_dict_inside_fit_read_back_from_csv(tmp_path):
    model, val = Logged(), _data(N_VAL, 1)
    trainer = L.Trainer(
        max_epochs=2, accelerator="cpu", logger=CSVLogger(tmp_path, name="run"), enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_train_batches=2,
    )  # fmt: skip
    trainer.fit(model, _loader(_data(8, 2), 4), _loader(val, 5))  # uneven batches: 5 + 5 + 2
    with open(f"{trainer.logger.log_dir}/metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("eq")]
    assert len(rows) == 2  # one per validation epoch
    reference = EquivarianceError(ROT, n_elements=6, keep_samples=True)
    reference.update(model.net.eval(), val)
    want = reference.summary().to_floats()
    assert want["error_mean"] > 1e-3  # a plain CNN is not rotation invariant: the test can fail
    for row in rows:
        assert float(row["eq"]) == pytest.approx(want["error_mean"], rel=1e-5)  # all pairs, not a mean of batches
        assert float(row["eq_mean"]) == pytest.approx(want["error_mean"], rel=1e-5)
        assert float(row["eq_max"]) == pytest.approx(want["error_max"], rel=1e-5)
        assert float(row["eq_p95"]) == pytest.approx(want["error_p95"], rel=1e-5)
        for key in ("error_mean", "error_max", "error_p95", "nonfinite", "exact_error", "interp_error", "flip_rate"):
            assert float(row[f"summary/{key}"]) == pytest.approx(want[key], rel=1e-5, abs=1e-12), key


def test_metric_functional_twin_and_monitor_check_agree():
    torch.manual_seed(0)
    model, x = eqm.demos.SmallCNN(size=12, width=4).eval(), _data(10, 3)
    metric = EquivarianceError(ROT, n_elements=8, keep_samples=True)
    metric.update(model, x)
    check = run_check(model, x, None, metric.symmetry, metric.elements)  # what the monitor logs
    assert list(check.scalars) == [k for k in LOGGED if k in check.scalars]
    assert set(check.scalars) == {"error_mean", "error_max", "error_p95", "nonfinite", "exact_error", "interp_error",
                                  "flip_rate"}  # fmt: skip
    assert metric.summary().to_floats() == check.scalars  # one summary function: identical floats
    for reduction in ("mean", "max", "p95"):
        twin = equivariance_error(model, x, ROT, metric.elements, reduction=reduction)
        assert float(twin) == check.scalars[f"error_{reduction}"], reduction
    assert float(metric.compute()) == check.scalars["error_mean"]
    assert float(EquivarianceError(ROT, n_elements=8, reduction="max")(model, x)) == check.scalars["error_max"]
    assert math.isfinite(check.scalars["error_mean"]) and check.scalars["error_mean"] > 1e-3


def test_reductions_and_their_errors():
    metric = EquivarianceError(ROT, n_elements=4)
    metric.update(lambda x: x[:, :, 3, 6], _data(3, 4))
    assert metric.compute().ndim == 0 and metric.per_element().shape == (4,)
    assert torch.equal(metric.per_element("max"), metric.summary().per_element_max)
    with pytest.raises(ValueError, match="p95"):
        metric.summary().reduce("p95")  # the per-pair values were not kept
    with pytest.raises(ValueError, match="reduction"):
        EquivarianceError(ROT, reduction="median")
    with pytest.raises(ValueError, match="reduction"):
        equivariance_error(lambda x: x[:, :, 3, 6], _data(2, 4), ROT, [0.0], reduction="sum")
    with pytest.raises(ValueError, match="stat"):
        metric.per_element("median")
    assert EquivarianceError(ROT, reduction="p95").keep_samples  # p95 keeps what it needs
    with pytest.warns(DeprecationWarning, match="reduction=None"):
        legacy = EquivarianceError(ROT, n_elements=4, reduction=None)
    legacy.update(lambda x: x[:, :, 3, 6], _data(3, 4))
    old = legacy.compute()
    assert float(old["mean"]) == float(metric.compute()) > 0 and int(old["nonfinite"]) == 0  # the old dict
    assert old["per_element_mean"].shape == (4,)


def test_deprecated_check_summarize_is_the_summary_as_floats():
    from eqmonitor import check
    from eqmonitor.functional import orbit_errors
    from eqmonitor.summary import summarize

    sym = eqm.Symmetry.from_spec(**ROT)
    res = orbit_errors(lambda x: x[:, :, 3, 6], _data(3, 5), sym, sym.group.grid(4))  # an off-centre pixel
    with pytest.warns(DeprecationWarning, match="eqmonitor.summary.summarize"):
        old = check.summarize(res)
    assert old == summarize(res).to_floats() and old["error_mean"] > 0
