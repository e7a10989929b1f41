"""lie_derivative: generators really move images, invariant models measure ≈ 0, jvp agrees with finite differences of
eqmonitor's own actions, layer contributions sum to the total, and the model is left exactly as found."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import eqmonitor as eqm
from eqmonitor.functional.lie import GENERATORS, image_tangent, lie_derivative

_F64 = torch.float64
SIZE = 64


def blobs(n: int, size: int = SIZE, k: int = 4, seed: int = 0, spread: float = 0.15) -> torch.Tensor:
    """Smooth images: sums of ``k`` Gaussian blobs (σ 4–6 px) near the centre, float64 ``[n, 1, size, size]``."""
    g = torch.Generator().manual_seed(seed)
    c = (size - 1) / 2
    ys, xs = torch.meshgrid(torch.arange(size, dtype=_F64) - c, torch.arange(size, dtype=_F64) - c, indexing="ij")
    out = torch.zeros(n, 1, size, size, dtype=_F64)
    for i in range(n):
        for _ in range(k):
            cx, cy = ((torch.rand(2, generator=g, dtype=_F64) * 2 - 1) * size * spread).tolist()
            s = 4 + 2 * float(torch.rand(1, generator=g, dtype=_F64))
            a = 0.5 + float(torch.rand(1, generator=g, dtype=_F64))
            out[i, 0] += a * torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * s**2))
    return out


class SmoothRadial(nn.Module):
    """Rotation-invariant function of the continuous image: intensity in smooth Gaussian rings, then a linear map."""

    def __init__(self, size: int = SIZE, bins: int = 8, sigma: float = 2.0) -> None:
        super().__init__()
        c = (size - 1) / 2
        ys, xs = torch.meshgrid(torch.arange(size, dtype=_F64) - c, torch.arange(size, dtype=_F64) - c, indexing="ij")
        r = (xs**2 + ys**2).sqrt()
        centres = torch.linspace(0, 0.9 * c, bins, dtype=_F64)
        rings = torch.exp(-((r[None] - centres[:, None, None]) ** 2) / (2 * sigma**2))
        self.register_buffer("rings", rings.flatten(1).T.contiguous())
        self.head = nn.Linear(bins, 4, dtype=_F64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.flatten(1) @ self.rings)


def seeded(factory, seed: int = 0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return factory()


def rel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)


def finite_difference(model, x, symmetry, h: float = 1e-2) -> torch.Tensor:
    """``(h(φ(+h, x)) − h(φ(−h, x))) / 2h`` with the symmetry's own (bilinear, masked) input action."""
    group, phi = symmetry.group, symmetry.input_action
    e = torch.full((x.shape[0], 1), h, dtype=_F64)
    x0 = phi.prepare(group, x)
    with torch.no_grad():
        return (model(phi(group, e, x0)) - model(phi(group, -e, x0))).to(_F64) / (2 * h)


@pytest.fixture(scope="module")
def x():
    return blobs(4)


@pytest.fixture
def rotation():
    return eqm.Symmetry.from_spec(name="rotation", group="so2", input="image", output="invariant")


# ------------------------------------------------------------------------------------------------ (1) tangents
@pytest.mark.parametrize(
    "generator, group, step, action",
    [
        ("rotation", eqm.groups.SO2(), [1.0], eqm.actions.ImageAction(mask=None)),
        ("translation_x", eqm.groups.Translation2d(integer=False), [1.0, 0.0], eqm.actions.ImageAction(mask=None)),
        ("translation_y", eqm.groups.Translation2d(integer=False), [0.0, 1.0], eqm.actions.ImageAction(mask=None)),
        ("scale", eqm.groups.Scale(), [1.0], eqm.actions.ImageAction(mask=None)),
        ("rotation", eqm.groups.SO2(), [1.0], eqm.actions.VectorField(mask=None)),
    ],
    ids=["rotation", "translation_x", "translation_y", "scale", "rotation-vector-field"],
)
def test_generator_tangent_matches_finite_differences_of_the_action(x, generator, group, step, action):
    h = 1e-2
    assert h != 0 and math.pi // 16 == 0  # the trap of a zero "small angle" (Gruver et al.'s eta = np.pi // 16)
    imgs = torch.cat([x, x.flip(-1)], 1) if isinstance(action, eqm.actions.VectorField) else x
    e = torch.tensor([step], dtype=_F64).expand(imgs.shape[0], -1) * h
    fd = (action(group, e, imgs) - action(group, -e, imgs)) / (2 * h)
    tangent = image_tangent(imgs, generator, vector_field=isinstance(action, eqm.actions.VectorField))
    c = (SIZE - 1) / 2
    ys, xs = torch.meshgrid(torch.arange(SIZE) - c, torch.arange(SIZE) - c, indexing="ij")
    interior = ((xs**2 + ys**2).sqrt() <= 0.8 * c).to(_F64)
    assert float(rel(tangent * interior, fd * interior).max()) < 5e-2
    assert float((fd.flatten(1).norm(dim=1) / imgs.flatten(1).norm(dim=1)).min()) > 5e-2  # it really moves


def test_rotation_turns_plus_x_towards_plus_y():
    img = torch.zeros(1, 1, 9, 9, dtype=_F64)
    img[0, 0, 4, 6] = 1.0  # on the +x axis, two pixels right of the centre
    t = image_tangent(img, "rotation")
    assert float(t[0, 0, 5, 6]) > 0 > float(t[0, 0, 3, 6])  # it moves down the rows (+y)


# ------------------------------------------------------------------------------------------------ (2) + (3) values
def test_invariant_model_is_near_zero_and_plain_cnn_is_not(x, rotation):
    smooth = lie_derivative(seeded(SmoothRadial), x, rotation)
    rings = lie_derivative(seeded(lambda: eqm.demos.RadialProfile(size=SIZE).double()), x, rotation)
    cnn = lie_derivative(seeded(lambda: eqm.demos.SmallCNN(size=SIZE).double()), x, rotation)
    assert smooth.generator == "rotation" and smooth.total.shape == (4,) and smooth.derivative.shape == (4, 4)
    assert float(smooth.total.max()) < 1e-5  # measured 6.8e-8 – 1.7e-6 (2.4e-4 – 7.5e-4 with tangent="central")
    assert float(rings.total.max()) < 2e-2  # hard rings cut pixels: measured 5.0e-3 – 1.0e-2
    assert float(cnn.total.min()) > 1e-2  # measured 0.19 – 0.29
    assert float(cnn.total.min()) > 10 * float(rings.total.max())


@pytest.mark.parametrize(
    "factory",
    [lambda: eqm.demos.RadialProfile(size=SIZE).double(), lambda: eqm.demos.SmallCNN(size=SIZE).double()],
    ids=["radial-profile", "plain-cnn"],
)
def test_jvp_agrees_with_finite_differences_of_the_action(x, rotation, factory):
    # the "central" tangent is the small-angle derivative of the bilinear action, so it is the one to compare with
    # finite differences of that action (the default is compared with rendered scenes in test_lie_accuracy.py)
    model = seeded(factory)
    res = lie_derivative(model, x, rotation, tangent="central")
    fd = finite_difference(model, x, rotation, h=1e-2)
    with torch.no_grad():
        fd_total = fd.flatten(1).norm(dim=1) / model(rotation.input_action.prepare(rotation.group, x)).flatten(1).norm(
            dim=1
        )
    assert res.method == "jvp"
    assert float(((res.total - fd_total).abs() / fd_total).max()) < 0.2  # measured ≤ 1.4%
    assert float(rel(res.derivative, fd).max()) < 0.2  # measured ≤ 12% (plain CNN), ≤ 2% (radial profile)


# ------------------------------------------------------------------------------------------------ (4) chain rule
def conv_stack(pad: str = "zeros", head: str = "flatten") -> nn.Sequential:
    def make() -> nn.Sequential:
        layers = [
            nn.Conv2d(1, 4, 3, padding=1, padding_mode=pad, dtype=_F64),
            nn.ReLU(),
            nn.Conv2d(4, 4, 3, padding=1, stride=2, padding_mode=pad, dtype=_F64),
            nn.ReLU(),
        ]
        if head == "flatten":
            layers += [nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 16 * 16, 3, dtype=_F64)]
        else:
            layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3, dtype=_F64)]
        return nn.Sequential(*layers)

    return seeded(make)


def test_layer_contributions_sum_to_the_total(x, rotation):
    model = conv_stack()
    names = [n for n, _ in model.named_children()]
    res = lie_derivative(model, x, rotation, layers=names[::-1])  # any order: reported in forward order
    assert res.names == names and set(res.local) == set(names)
    assert all(c.shape == res.derivative.shape for c in res.contributions.values())
    scale = res.derivative.flatten(1).norm(dim=1)
    assert float((res.residual().flatten(1).norm(dim=1) / scale).max()) < 1e-8
    assert float(res.total.min()) > 1e-2
    assert torch.equal(res.relative(), res.total) and res.relative("0").shape == (4,)
    # a ReLU commutes with motions of the continuous plane, but on a grid its kinks alias (Gruver et al. 2023):
    # its own Lie derivative is small but not zero; flattening a feature map into an invariant vector is not small
    assert 0 < float(res.local["1"].max()) < 0.1 and float(res.local["5"].min()) > 0.1


def test_layer_contributions_sum_for_image_outputs(x):
    sym = eqm.Symmetry.from_spec(name="rot", group="so2", input="image", output="equivariant")
    model = seeded(
        lambda: nn.Sequential(
            nn.Conv2d(1, 3, 5, padding=2, dtype=_F64), nn.Tanh(), nn.Conv2d(3, 1, 3, padding=1, dtype=_F64)
        )
    )
    res = lie_derivative(model, x, sym, layers=["0", "1", "2"])
    assert res.derivative.shape == x.shape
    assert float((res.residual().flatten(1).norm(dim=1) / res.derivative.flatten(1).norm(dim=1)).max()) < 1e-8
    assert float(res.total.min()) > 1e-2  # random 5×5 kernels are not isotropic


def test_equivariant_image_outputs_measure_zero(x):
    rot = eqm.Symmetry.from_spec(name="rot", group="so2", input="image", output="equivariant")
    assert float(lie_derivative(nn.Identity(), x, rot).total.max()) < 1e-14
    shift = eqm.Symmetry.from_spec(
        name="shift", group="translation", input="image", output="equivariant", input_kwargs={"padding": "circular"}
    )
    conv = seeded(lambda: nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular", bias=False, dtype=_F64))
    for gen in ("translation_x", "translation_y"):
        assert float(lie_derivative(conv, x, shift, generator=gen).total.max()) < 1e-12


# ------------------------------------------------------------------------------------------------ (5) translations
def test_translation_of_circular_conv_stack_with_pooled_output_is_near_zero(x):
    sym = eqm.Symmetry.from_spec(name="shift", group="translation", input_kwargs={"padding": "circular"})
    pooled, flat = conv_stack("circular", "pool"), conv_stack("circular", "flatten")
    for gen in ("translation_x", "translation_y"):
        small = lie_derivative(pooled, x, sym, generator=gen, layers=[str(i) for i in range(7)])
        big = lie_derivative(flat, x, sym, generator=gen)
        assert float(small.total.max()) < 1e-3  # the discrete chain rule through ReLU: measured ≲ 1e-4
        assert float(big.total.min()) > 10 * float(small.total.max())
        assert float((small.residual().flatten(1).norm(dim=1) / small.derivative.flatten(1).norm(dim=1)).max()) < 1e-8
    assert lie_derivative(pooled, x, sym).generator == "translation_x"


# ------------------------------------------------------------------------------------------------ fallback
class Resample(nn.Module):
    """``grid_sample`` at the pixel centres (an identity with no forward-mode AD)."""

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        theta = torch.eye(2, 3, dtype=u.dtype).expand(u.shape[0], 2, 3)
        grid = F.affine_grid(theta, list(u.shape), align_corners=False)
        return F.grid_sample(u, grid, align_corners=False)


def test_double_backward_fallback_for_ops_without_forward_ad(x, rotation):
    model = conv_stack("zeros", "pool")
    with_resample = nn.Sequential(Resample(), *model)
    ref = lie_derivative(model, x, rotation)
    res = lie_derivative(with_resample, x, rotation, layers=[str(i) for i in range(8)])
    assert ref.method == "jvp" and res.method == "double_backward"
    assert torch.allclose(res.derivative, ref.derivative, rtol=1e-9, atol=1e-12)
    assert float((res.residual().flatten(1).norm(dim=1) / res.derivative.flatten(1).norm(dim=1)).max()) < 1e-8


# ------------------------------------------------------------------------------------------------ (6) interference
def test_leaves_the_model_and_rng_exactly_as_found(x, rotation):
    model = seeded(
        lambda: nn.Sequential(
            Resample(),
            nn.Conv2d(1, 4, 3, padding=1, dtype=_F64),
            nn.BatchNorm2d(4, dtype=_F64),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4, 2, dtype=_F64),
        )
    )
    model.train()
    model[4].eval()  # mixed flags must come back as they were
    model(x).sum().backward()  # populate .grad and BatchNorm statistics
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    flags = [m.training for m in model.modules()]
    rng, grad_mode = torch.get_rng_state(), torch.is_grad_enabled()
    res = lie_derivative(model, x, rotation, layers=[str(i) for i in range(8)])
    assert res.method == "double_backward" and torch.isfinite(res.total).all()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert all(torch.equal(g, p.grad) for (_, p), g in zip(model.named_parameters(), grads.values()))
    assert [m.training for m in model.modules()] == flags
    assert torch.equal(torch.get_rng_state(), rng) and torch.is_grad_enabled() == grad_mode


# ------------------------------------------------------------------------------------------------ (7) errors
def test_clear_errors(x, rotation):
    model = conv_stack()
    points = eqm.Symmetry.from_spec(group="so2", input="points", output="invariant")
    with pytest.raises(TypeError, match="image action"):
        lie_derivative(model, torch.randn(4, 5, 2, dtype=_F64), points)
    with pytest.raises(ValueError, match="generator"):
        lie_derivative(model, x, rotation, generator="shear")
    covariant = eqm.Symmetry.from_spec(group="so2", input="image", output="points")
    with pytest.raises(NotImplementedError, match="invariant outputs and image"):
        lie_derivative(model, x, covariant)
    flip = eqm.Symmetry.from_spec(group="flip", input="image", output="invariant")
    with pytest.raises(ValueError, match="Cannot infer"):
        lie_derivative(model, x, flip)
    assert lie_derivative(model, x, flip, generator="translation_y").generator == "translation_y"
    with pytest.raises(ValueError, match="Unknown layer names"):
        lie_derivative(model, x, rotation, layers=["0", "nope"])
    with pytest.raises(ValueError, match="model's output is not the output of the last layer"):
        lie_derivative(model, x, rotation, layers=["0", "1"])
    cnn = eqm.demos.SmallCNN(size=SIZE).double()  # `.flatten(1)` between `pool` and `dropout`
    with pytest.raises(ValueError, match="The input of layer 'dropout'"):
        lie_derivative(cnn, x, rotation, layers=["features", "pool", "dropout", "head"])
    with pytest.raises(ValueError, match="inside"):
        lie_derivative(cnn, x, rotation, layers=["features", "features.0"])
    with pytest.raises(TypeError, match="dtype"):
        lie_derivative(model, x.float(), rotation)
    with pytest.raises(KeyError, match="Unknown layer"):
        lie_derivative(model, x, rotation, layers=[str(i) for i in range(7)]).relative("nope")
    assert set(GENERATORS) == {"rotation", "translation_x", "translation_y", "scale"}
