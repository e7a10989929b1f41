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
