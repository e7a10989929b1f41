"""gradient_errors: exact for a group-averaged CNN on exact elements, not for a plain CNN; .grad untouched."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import eqmonitor as eqm
from eqmonitor.functional.gradients import gradient_errors


def ce(out, y):
    return F.cross_entropy(out, y, reduction="sum")


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 1, 16, 16, generator=g), torch.randint(0, 10, (6,), generator=g)


def test_group_averaged_cnn_gradients_respect_c4(data):
    x, y = data
    torch.manual_seed(0)
    model = eqm.demos.GroupAveraged(eqm.demos.SmallCNN(size=16), eqm.groups.Cyclic(4))
    c4 = eqm.Symmetry.from_spec(name="c4", group="c4")
    res = gradient_errors(model, x, c4, c4.group.all_elements(), ce, y)
    assert res.input.shape == (6, 4)
    assert float(res.input.max()) < 1e-5
    assert max(float(e.max()) for e in res.params.values()) < 1e-5
    assert res.broken_params() == []


def test_plain_cnn_gradients_do_not(data):
    x, y = data
    torch.manual_seed(0)
    model = eqm.demos.SmallCNN(size=16)
    c4 = eqm.Symmetry.from_spec(name="c4", group="c4")
    res = gradient_errors(model, x, c4, c4.group.all_elements(), ce, y)
    assert float(res.input[:, 0].max()) == 0.0  # identity element
    assert float(res.input[:, 1:].mean()) > 1e-2
    broken = res.broken_params()
    assert "features.0.weight" in broken and "head.weight" in broken
    assert set(res.per_layer()) == {"features.0", "features.2", "features.4", "head"}


def test_equivariant_output_with_transformed_targets(data):
    x, _ = data
    torch.manual_seed(0)
    conv = eqm.demos.C4SymmetricConv2d(1, 2, 3, padding=1)
    sym = eqm.Symmetry.from_spec(name="c4", group="c4", input="image", output="equivariant")
    target = torch.randn(6, 2, 16, 16)
    res = gradient_errors(conv, x, sym, sym.group.all_elements(), lambda o, t: (o - t).square().sum(), target)
    assert float(res.input.max()) < 1e-5 and max(float(e.max()) for e in res.params.values()) < 1e-5


def test_grad_untouched_and_inference_mode_refused(data):
    x, y = data
    model = eqm.demos.SmallCNN(size=16)
    model(x).sum().backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    c4 = eqm.Symmetry.from_spec(name="c4", group="c4")
    gradient_errors(model, x, c4, [1], ce, y)
    assert all(torch.equal(p.grad, before[n]) for n, p in model.named_parameters())
    with torch.inference_mode(), pytest.raises(RuntimeError, match=r"Trainer\(inference_mode=False\)"):
        gradient_errors(model, x, c4, [1], ce, y)


# ---------------------------------------------------------------------------------------------- normalisation
class Confident(torch.nn.Module):
    """``model``'s logits times ``factor``: every sample is classified with near certainty, so input gradients of
    the cross-entropy are tiny (``1 - softmax`` of the true class)."""

    def __init__(self, model, factor: float) -> None:
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, x):
        return self.model(x) * self.factor


def manual(model, x, y, k):
    """Manual autograd at the quarter turn ``k`` (``Cyclic(4)`` element ``k`` is ``rot90(x, -k)``): the input gradient
    at the turned input, the turned input gradient at ``x`` and the parameter gradients at both."""
    params = list(model.parameters())
    z = torch.rot90(x, -k, dims=(-2, -1)).requires_grad_(True)
    gz, *pz = torch.autograd.grad(ce(model(z), y), [z, *params])
    x = x.clone().requires_grad_(True)
    gx, *px = torch.autograd.grad(ce(model(x), y), [x, *params])
    return gz, torch.rot90(gx, -k, dims=(-2, -1)), pz, px


def test_gradient_errors_equal_manual_autograd_in_their_raw_parts(data):
    x, y = data
    torch.manual_seed(0)
    model = eqm.demos.SmallCNN(size=16).double()
    x = x.double()
    c4 = eqm.Symmetry.from_spec(name="c4", group="c4")
    res = gradient_errors(model, x, c4, c4.group.all_elements(), ce, y)
    names = [n for n, _ in model.named_parameters()]
    for k in range(4):
        a, b, pa, pb = manual(model, x, y, k)
        diff = (a - b).flatten(1).norm(dim=1)
        scale = ((a.square().sum() + b.square().sum()) / (2 * x.shape[0])).sqrt()
        torch.testing.assert_close(res.input_abs[:, k], diff, rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(res.input_scale[k], scale, rtol=1e-10, atol=0)
        torch.testing.assert_close(res.input[:, k], diff / scale, rtol=1e-10, atol=1e-14)
        for name, ga, gb in zip(names, pa, pb):
            expected = (ga - gb).norm() / ((ga.square().sum() + gb.square().sum()) / 2).sqrt()
            torch.testing.assert_close(res.params[name][k], expected, rtol=1e-10, atol=1e-14)


def test_confident_samples_no_longer_explode(trained_cnn, digits):
    """Very confident samples have input gradients near zero. Divided by each sample's own gradient norm (the old
    measure), a broken model's errors explode; divided by the probe's gradient scale they stay meaningful: of order
    one for the plain CNN, float precision for its C4 average (made confident with scaled logits)."""
    x = digits[0][:16]
    c4 = eqm.Symmetry.from_spec(name="c4", group="c4")
    out = {}
    for name, model in (
        ("plain", Confident(trained_cnn, 3.0)),
        ("averaged", Confident(eqm.demos.GroupAveraged(trained_cnn, eqm.groups.Cyclic(4)), 3.0)),
    ):
        with torch.no_grad():
            y = model(x).argmax(1)  # right and sure: the cross-entropy's input gradients are tiny
        res = gradient_errors(model, x, c4, c4.group.all_elements(), ce, y)
        own = torch.stack([manual(model, x, y, k)[1].flatten(1).norm(dim=1) for k in range(4)], 1)
        old = res.input_abs / own  # the old per-sample relative error
        out[name] = {"smallest gradient": float(own.min()), "median gradient": float(own.median()),
                     "old mean": float(old[:, 1:].mean()), "old median": float(old[:, 1:].median()),
                     "new mean": float(res.input[:, 1:].mean()), "new max": float(res.input.max())}  # fmt: skip
    print(out)
    assert out["plain"]["smallest gradient"] < 1e-4
    assert 1e-2 < out["plain"]["new mean"] <= 2.0 and out["plain"]["old mean"] > 100 * out["plain"]["new mean"]
    assert out["averaged"]["new max"] < 1e-5  # float32 rounding against the probe's scale


def test_disc_masked_rotation_compares_gradients_inside_the_disc(c4_averaged, digits, rotation):
    """Under SO(2) images are masked to the inscribed disc; the gradient at ``g·x`` is compared within the disc,
    where the action is defined (outside it, the model's sensitivity to corner pixels is no symmetry matter)."""
    x, y = digits[0][:8], digits[1][:8]
    res = gradient_errors(c4_averaged, x, rotation, rotation.group.grid(4), ce, y)  # the exact quarter turns
    assert bool(res.exact.all()) and float(res.input.max()) < 1e-5
    assert max(float(e.max()) for e in res.params.values()) < 1e-5
