"""The point-cloud example: its config parses, and both models fit through a real Trainer with the monitor at its
defaults; the e3nn model measures SO(3) invariance at float precision, the PointNet does not, and both are
permutation-invariant."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

import eqmonitor as eqm

CONFIGS = Path(__file__).resolve().parents[2] / "configs"  # the repository's configs/

pytest.importorskip("e3nn")
pointclouds = pytest.importorskip("pointclouds")

SPECS = [
    {"name": "so3", "group": "so3", "input": "points", "output": "invariant"},
    {"name": "permutation", "group": "s32", "input": "set", "output": "invariant"},
]


def test_shapes_are_centred_unit_clouds_of_each_class():
    x, y = pointclouds.make_shapes(8, n_points=32, seed=3)
    assert x.shape == (8, 32, 3) and x.dtype == torch.float32
    assert y.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert x.mean(1).abs().max() < 1e-6
    torch.testing.assert_close(x.pow(2).sum(-1).mean(1), torch.ones(8), atol=1e-5, rtol=0)
    radii = pointclouds.make_shapes(4, n_points=512, seed=3)[0].norm(dim=-1).std(1)
    assert radii[0] < 0.05 < 0.2 < radii[3]  # a sphere's points lie near one radius, a torus's do not
    assert torch.equal(pointclouds.make_shapes(8, 32, seed=3)[0], x)


@pytest.mark.parametrize("arch", ["pointnet", "e3nn"])
def test_config_parses_into_the_monitor_and_the_model(arch, tmp_path):
    cli = pointclouds.main(["--config", str(CONFIGS / "pointclouds.yaml"), f"--model.arch={arch}"], run=False)
    (monitor,) = [c for c in cli.trainer.callbacks if isinstance(c, eqm.EquivarianceMonitor)]
    assert [(s.name, repr(s.group)) for s in monitor.symmetries] == [
        ("so3", "SO3()"),
        ("permutation", "Permutation(64)"),
    ]
    assert monitor.symmetries[1].group.n == cli.datamodule.hparams.n_points
    assert type(cli.model.net).__name__ == {"pointnet": "PointNet", "e3nn": "E3nnShapeNet"}[arch]


def test_the_e3nn_model_is_so3_invariant_at_float_precision_and_pointnet_is_not(make_trainer):
    errors = {}
    for arch in ("pointnet", "e3nn"):
        L.seed_everything(0)
        monitor = eqm.EquivarianceMonitor(SPECS)
        trainer = make_trainer([monitor], max_epochs=1)
        trainer.fit(
            pointclouds.PointCloudClassifier(arch=arch),
            datamodule=pointclouds.ShapesDataModule(n_train=128, n_val=32, n_points=32),
        )
        assert [len(monitor.history[name]) for name in ("so3", "permutation")] == [2, 2]  # at start, after epoch 1
        errors[arch] = {k: float(v) for k, v in trainer.callback_metrics.items() if k.endswith("/error_mean")}
        if arch == "e3nn":  # the same measurement through the project's e3nn helpers
            probe = trainer.datamodule.val_set.tensors[0][:16]
            report = eqm.audit(trainer.lightning_module.net, probe, pointclouds.rotation_symmetry(), n_elements=8)
            assert report.verdict == "exact"
    assert errors["e3nn"]["equivariance/so3/error_mean"] < 1e-6
    assert errors["pointnet"]["equivariance/so3/error_mean"] > 1e-2
    for arch in errors:  # a max (PointNet) or a mean (e3nn) over the points
        assert errors[arch]["equivariance/permutation/error_mean"] < 1e-6
