"""The audit's verdict against the noise floor on escnn's C8 steerable CNN, built as escnn's example builds it
(``C8SteerableCNN``: a mask, six R2Conv → InnerBatchNorm → ReLU blocks, anti-aliased pooling, group pooling, a dense
head; widths scaled down so that the test stays fast): the correct model's 45° errors lie within the interpolation
noise floor, so it is not broken; the same model with one plain convolution is."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

escnn = pytest.importorskip("escnn")
from escnn import gspaces  # noqa: E402
from escnn import nn as enn  # noqa: E402

import eqmonitor as eqm  # noqa: E402
from eqmonitor.demos import load_digits  # noqa: E402

WIDTHS = (6, 12, 12, 16, 16, 12)  # escnn's example: 24, 48, 48, 96, 96, 64 regular fields


pytestmark = pytest.mark.usefixtures("escnn_exact_svd")  # see conftest.py


class PlainConv(enn.EquivariantModule):
    """A plain torch convolution that claims to map ``in_type`` to ``out_type``: the injected bug."""

    def __init__(self, in_type, out_type, kernel_size: int, padding: int) -> None:
        super().__init__()
        self.in_type, self.out_type = in_type, out_type
        self.conv = nn.Conv2d(in_type.size, out_type.size, kernel_size, padding=padding, bias=False)

    def forward(self, x):
        return enn.GeometricTensor(self.conv(x.tensor), self.out_type)

    def evaluate_output_shape(self, input_shape):
        return input_shape


class C8SteerableCNN(nn.Module):
    """escnn's example model (``examples/model.ipynb``), with ``WIDTHS`` regular fields per block."""

    def __init__(self, n_classes: int = 10, broken: bool = False) -> None:
        super().__init__()
        self.r2_act = gspaces.rot2dOnR2(N=8)
        in_type = self.input_type = enn.FieldType(self.r2_act, [self.r2_act.trivial_repr])
        layers, kernels = [enn.MaskModule(in_type, 29, margin=1)], ((7, 1), (5, 2), (5, 2), (5, 2), (5, 2), (5, 1))
        for i, (width, (k, p)) in enumerate(zip(WIDTHS, kernels)):
            out_type = enn.FieldType(self.r2_act, width * [self.r2_act.regular_repr])
            conv = PlainConv if broken and i == 2 else enn.R2Conv
            layers += [conv(in_type, out_type, kernel_size=k, padding=p), enn.InnerBatchNorm(out_type),
                       enn.ReLU(out_type, inplace=True)]  # fmt: skip
            if i in (1, 3):
                layers.append(enn.PointwiseAvgPoolAntialiased(out_type, sigma=0.66, stride=2))
            in_type = out_type
        layers.append(enn.PointwiseAvgPoolAntialiased(in_type, sigma=0.66, stride=1, padding=0))
        self.body = enn.SequentialModule(*layers)
        self.gpool = enn.GroupPooling(in_type)
        c = self.gpool.out_type.size
        self.fully_net = nn.Sequential(
            nn.Linear(c, 64), nn.BatchNorm1d(64), nn.ELU(inplace=True), nn.Linear(64, n_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gpool(self.body(enn.GeometricTensor(x, self.input_type))).tensor
        return self.fully_net(x.reshape(x.shape[0], -1))


def _c8_model(broken: bool = False) -> nn.Module:
    """A fresh model in eval mode, as escnn's example checks its equivariance."""
    torch.manual_seed(0)
    return C8SteerableCNN(broken=broken).eval()


def _digits(n: int = 8) -> torch.Tensor:
    return nn.functional.pad(load_digits()[0][:n], (0, 1, 0, 1))  # 29×29, as escnn's example pads MNIST-rot


C8 = eqm.Symmetry.from_spec(name="c8", group="c8", input="image", output="invariant")


def test_correct_c8_model_is_within_the_noise_floor():
    report = eqm.audit(_c8_model(), _digits(), C8, progress=False)
    exact = [r for r in report.elements if r["exact"]]
    interp = [r for r in report.elements if not r["exact"]]
    assert len(exact) == 4 and len(interp) == 4  # quarter turns exact, the 45° turns interpolated
    assert all(r["error_mean"] < 1e-5 for r in exact) and report.verdict_exact in ("exact", "excellent")
    for r in interp:  # the model is off at 45°, but no more than the transform itself loses
        assert 1e-3 < r["error_mean"] <= r["noise_floor"] and r["verdict"] == "within the noise floor"
    assert report.verdict == report.verdict_interpolated == "within the noise floor"
    assert "WITHIN THE NOISE FLOOR" in report.to_text() and "within the noise floor" in report.to_markdown()
    assert json.loads(report.to_json())["verdict"] == "within the noise floor"


def test_c8_model_with_a_plain_convolution_is_broken():
    report = eqm.audit(_c8_model(broken=True), _digits(), C8, progress=False)
    assert report.verdict_exact == "broken" and report.verdict == "broken"
    assert max(r["error_mean"] for r in report.elements if r["exact"]) > 1e-2
