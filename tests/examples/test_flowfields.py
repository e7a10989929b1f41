"""The PIV example: the generated pairs move particles by the flow in the vector-field frame the monitor uses, the
config parses, and both models fit through a real Trainer with the monitor at its defaults; the D4-averaged model
is covariant at float precision, the plain CNN is not."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F

import eqmonitor as eqm

CONFIGS = Path(__file__).resolve().parents[2] / "configs"  # the repository's configs/

flowfields = pytest.importorskip("flowfields")


def _warp_error(frames: torch.Tensor, flow: torch.Tensor) -> float:
    """``|frame2(p) − frame1(p − v(p))|``: frame 1 warped by the flow ``(v_x, v_y)`` (x along columns, y down)."""
    size = frames.shape[-1]
    axis = torch.arange(size, dtype=frames.dtype)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1) - flow.permute(0, 2, 3, 1)
    warped = F.grid_sample(frames[:, :1], grid / (size - 1) * 2 - 1, align_corners=True)
    inner = (slice(None), 0, slice(4, -4), slice(4, -4))  # away from particles entering at the border
    return float((warped - frames[:, 1:]).abs()[inner].mean())


def test_frame_two_is_frame_one_moved_by_the_flow_in_the_vector_field_frame():
    frames, flow = flowfields.make_piv_pairs(16, size=24, max_speed=3.0, seed=2)
    assert frames.shape == flow.shape == (16, 2, 24, 24)
    true = _warp_error(frames, flow)
    assert true < 0.5 * _warp_error(frames, torch.zeros_like(flow))
    assert true < 0.5 * _warp_error(frames, flow.flip(1))  # (v_y, v_x) would be the wrong channel order
    assert true < 0.5 * _warp_error(frames, -flow)


def test_config_parses_into_the_monitor_and_the_model():
    cli = flowfields.main(["--config", str(CONFIGS / "flowfields.yaml"), "--model.arch=d4_averaged"], run=False)
    (monitor,) = [c for c in cli.trainer.callbacks if isinstance(c, eqm.EquivarianceMonitor)]
    (sym,) = monitor.symmetries
    assert (sym.name, repr(sym.group), sym.kind) == ("d4", "Dihedral(4)", "covariant")
    assert isinstance(sym.output_action, eqm.actions.VectorField)
    assert isinstance(cli.model.net, flowfields.GroupCovariant)


def test_the_d4_averaged_model_is_covariant_at_float_precision_and_the_cnn_is_not(make_trainer):
    errors = {}
    for arch in ("cnn", "d4_averaged"):
        L.seed_everything(0)
        monitor = eqm.EquivarianceMonitor({"name": "d4", "group": "d4", "input": "image", "output": "vector_field"})
        trainer = make_trainer([monitor], max_epochs=1)
        trainer.fit(flowfields.FlowEstimator(arch=arch, width=16), datamodule=flowfields.PIVDataModule(128, 32, 16))
        assert len(monitor.history["d4"]) == 2  # at the start and after the epoch, without labels
        errors[arch] = float(trainer.callback_metrics["equivariance/d4/error_mean"])
        assert trainer.callback_metrics["equivariance/d4/exact_error"] == errors[arch]  # D4 maps the grid to itself
    assert errors["d4_averaged"] < 1e-6
    assert errors["cnn"] > 1e-2


def test_the_errors_against_the_consensus_tell_the_covariant_model_from_the_cnn(make_trainer):
    """The monitor at its defaults plus ``reference="consensus"`` on a covariant output (a vector field), without
    labels: the consensus errors are logged beside the default ones and equal the functional core's."""
    errors = {}
    for arch in ("cnn", "d4_averaged"):
        L.seed_everything(0)
        spec = {"name": "d4", "group": "d4", "input": "image", "output": "vector_field"}
        monitor = eqm.EquivarianceMonitor(spec, reference="consensus")
        trainer = make_trainer([monitor], max_epochs=1)
        model = flowfields.FlowEstimator(arch=arch, width=16)
        trainer.fit(model, datamodule=flowfields.PIVDataModule(128, 32, 16))
        errors[arch] = float(trainer.callback_metrics["equivariance/d4/consensus_error_mean"])
        assert "equivariance/d4/error_mean" in trainer.callback_metrics
        sym = monitor.symmetries[0]
        expected = eqm.functional.consensus_errors(model, monitor.probe.x, sym, monitor._elements["d4"])
        torch.testing.assert_close(monitor.latest["d4"].consensus.errors, expected, rtol=1e-5, atol=1e-7)
    assert errors["d4_averaged"] < 1e-6
    assert errors["cnn"] > 1e-2
