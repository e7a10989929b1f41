"""lie_derivative against an analytic ground truth: smooth scenes rendered exactly at each angle, shift or scale, and
central differences of the model's output in that parameter (float64, Richardson-checked). The default tangent is
within 15% of it on a plain CNN and on a nearly SO(2)-invariant escnn model; exactly equivariant cases read ~0."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import eqmonitor as eqm
from eqmonitor.functional.lie import GENERATORS, TANGENTS, lie_derivative

_F64 = torch.float64
SIZE = 32
TOL = 0.15  # the target: per-sample ‖L − L_true‖ / ‖L_true‖


def scene_images(generator: str, t: float, n: int = 2, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    """``[n, 1, size, size]``: sums of 3 Gaussian bumps (σ 3–4 px) near the centre, on a faint tilted background,
    rendered exactly at ``x_t(p) = S(M_t⁻¹(p − t_t))``."""
    g = torch.Generator().manual_seed(seed)
    r = torch.arange(size, dtype=_F64) - (size - 1) / 2
    py, px = torch.meshgrid(r, r, indexing="ij")
    if generator == "rotation":
        px, py = math.cos(t) * px + math.sin(t) * py, -math.sin(t) * px + math.cos(t) * py
    elif generator == "translation_x":
        px = px - t
    elif generator == "translation_y":
        py = py - t
    else:
        px, py = px * math.exp(-t), py * math.exp(-t)
    out = torch.zeros(n, 1, size, size, dtype=_F64)
    for i in range(n):
        c = (torch.rand(3, 2, generator=g, dtype=_F64) * 2 - 1) * 0.2 * size
        s = 3 + torch.rand(3, generator=g, dtype=_F64)
        a = 0.5 + torch.rand(3, generator=g, dtype=_F64)
        for (cx, cy), sk, ak in zip(c.tolist(), s.tolist(), a.tolist()):
            out[i, 0] += ak * torch.exp(-((px - cx) ** 2 + (py - cy) ** 2) / (2 * sk**2))
        out[i, 0] += 0.05 + 0.2 * px / size
    return out


def symmetry_for(generator: str) -> eqm.Symmetry:
    group = {"rotation": "so2", "scale": "scale"}.get(generator, "translation")
    return eqm.Symmetry.from_spec(name=generator, group=group)


def ground_truth(model: nn.Module, symmetry: eqm.Symmetry, generator: str, step: float = 1e-4) -> torch.Tensor:
    """``d/dt h(x_t)`` at 0, Richardson-extrapolated from steps ``step`` and ``step / 2``, which must agree."""
    group, phi = symmetry.group, symmetry.input_action

    def d(delta: float) -> torch.Tensor:
        with torch.no_grad():
            ahead = model(phi.prepare(group, scene_images(generator, delta)))
            behind = model(phi.prepare(group, scene_images(generator, -delta)))
        return (ahead - behind).to(_F64) / (2 * delta)

    coarse, fine = d(step), d(step / 2)
    truth = (4 * fine - coarse) / 3
    assert float(((fine - truth).flatten(1).norm(dim=1) / truth.flatten(1).norm(dim=1)).max()) < 1e-2
    return truth


def vector_error(res, truth: torch.Tensor) -> float:
    return float(((res.derivative - truth).flatten(1).norm(dim=1) / truth.flatten(1).norm(dim=1)).max())


def plain_cnn() -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return eqm.demos.SmallCNN(size=SIZE, width=8).double().eval()


def escnn_so2() -> nn.Module:
    """A nearly SO(2)-invariant steerable CNN, as escnn's SO(2) examples build one: R2Conv → IIDBatchNorm2d →
    FourierELU blocks on band-limited regular fields, a 1×1 R2Conv to invariant scalars, a spatial mean, a head."""
    pytest.importorskip("escnn")
    from escnn import gspaces
    from escnn import nn as enn

    from eqmonitor.integrations.escnn import EscnnTensorModel

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            gs = gspaces.rot2dOnR2(N=-1)
            irreps = gs.fibergroup.bl_irreps(2)
            act1 = enn.FourierELU(gs, 4, irreps=irreps, N=12, inplace=True)
            act2 = enn.FourierELU(gs, 4, irreps=irreps, N=12, inplace=True)
            invariant = enn.FieldType(gs, 4 * [gs.trivial_repr])
            body = enn.SequentialModule(
                enn.R2Conv(enn.FieldType(gs, [gs.trivial_repr]), act1.in_type, kernel_size=7, padding=3),
                enn.IIDBatchNorm2d(act1.in_type),
                act1,
                enn.R2Conv(act1.out_type, act2.in_type, kernel_size=5, padding=2),
                enn.IIDBatchNorm2d(act2.in_type),
                act2,
                enn.R2Conv(act2.out_type, invariant, kernel_size=1, bias=False),
            )
            self.body, self.head = EscnnTensorModel(body), nn.Linear(invariant.size, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.body(x).mean(dim=(-2, -1)))

    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = Net().double().eval()
    _ESCNN_MODELS.append(net)
    return net


_ESCNN_MODELS: list = []


@pytest.fixture(scope="module", autouse=True)
def _escnn_back_to_float32():
    """escnn shares cached submodules between models built alike: ``.double()`` on these would leave the float64
    copies to the escnn models of later tests, so they go back to float32 when this module's tests are done."""
    yield
    while _ESCNN_MODELS:
        _ESCNN_MODELS.pop().float()


@pytest.fixture(scope="module", params=["plain-cnn", "escnn-so2"])
def model(request):
    return plain_cnn() if request.param == "plain-cnn" else escnn_so2()


@pytest.mark.parametrize("generator", GENERATORS)
def test_default_tangent_is_within_15_percent_of_the_analytic_ground_truth(model, generator):
    sym = symmetry_for(generator)
    truth = ground_truth(model, sym, generator)
    res = lie_derivative(model, scene_images(generator, 0.0), sym, generator=generator)
    assert res.tangent == TANGENTS[0] == "fd8"
    assert vector_error(res, truth) < TOL  # measured ≤ 0.11% (plain CNN), ≤ 1.5% (escnn)
    assert float(truth.flatten(1).norm(dim=1).min()) > 0  # a real derivative, not 0 against 0


def test_former_central_tangent_misreads_the_nearly_invariant_model():
    model = escnn_so2()
    sym = symmetry_for("rotation")
    truth = ground_truth(model, sym, "rotation")
    with torch.no_grad():
        out = model(sym.input_action.prepare(sym.group, scene_images("rotation", 0.0)))
    true_rel = truth.flatten(1).norm(dim=1) / out.flatten(1).norm(dim=1)
    old = lie_derivative(model, scene_images("rotation", 0.0), sym, tangent="central")
    new = lie_derivative(model, scene_images("rotation", 0.0), sym)
    assert float(true_rel.max()) < 1e-2  # nearly invariant
    assert vector_error(old, truth) > 0.5 > TOL > 10 * vector_error(new, truth)  # measured 111% and 0.9%


@pytest.mark.parametrize("tangent", [t for t in TANGENTS if t != "spectral"])
def test_exactly_equivariant_cases_read_zero_with_every_local_tangent(tangent):
    x = scene_images("rotation", 0.0)
    rot = eqm.Symmetry.from_spec(name="rot", group="so2", input="image", output="equivariant")
    assert float(lie_derivative(nn.Identity(), x, rot, tangent=tangent).total.max()) < 1e-14
    shift = eqm.Symmetry.from_spec(name="shift", group="translation", input_kwargs={"padding": "circular"})
    with torch.random.fork_rng():
        torch.manual_seed(0)
        pooled = nn.Sequential(
            nn.Conv2d(1, 4, 5, padding=2, padding_mode="circular", dtype=_F64),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
    for generator in ("translation_x", "translation_y"):  # a circular conv and a mean commute with the stencil
        assert float(lie_derivative(pooled, x, shift, generator=generator, tangent=tangent).total.max()) < 1e-12


def test_spectral_tangent_is_exact_on_periodic_band_limited_images():
    size = 16
    r = torch.arange(size, dtype=_F64)
    wave = torch.sin(2 * math.pi * 3 * r / size)[None, :] * torch.cos(2 * math.pi * 2 * r / size)[:, None]
    x = wave.expand(1, 1, size, size)
    want_dx = (
        (2 * math.pi * 3 / size)
        * torch.cos(2 * math.pi * 3 * r / size)[None, :]
        * torch.cos(2 * math.pi * 2 * r / size)[:, None]
    )
    got = eqm.functional.image_tangent(x, "translation_x", padding="circular", method="spectral")
    assert torch.allclose(got[0, 0], -want_dx, atol=1e-12)


def test_tangent_errors_are_clear():
    x = scene_images("rotation", 0.0)
    with pytest.raises(ValueError, match="tangent"):
        lie_derivative(plain_cnn(), x, symmetry_for("rotation"), tangent="bilinear")
    with pytest.raises(ValueError, match="method"):
        eqm.functional.image_tangent(x, "rotation", method="fd5")
