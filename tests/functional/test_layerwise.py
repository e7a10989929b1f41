"""layer_errors: injected bugs are located at their layer; correct models have no failing layer; hooks cleaned up."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import eqmonitor as eqm
from eqmonitor.functional.layerwise import layer_errors


def c4_symmetric(conv: nn.Conv2d) -> nn.Conv2d:
    with torch.no_grad():
        w = conv.weight
        conv.weight.copy_(sum(torch.rot90(w, k, (-2, -1)) for k in range(4)) / 4)
    return conv


@pytest.fixture
def model():
    torch.manual_seed(0)
    return eqm.models.C4EquivariantCNN().eval()


@pytest.fixture
def x():
    return torch.randn(8, 1, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def c4():
    return eqm.Symmetry.from_spec(name="c4", group="c4")


def test_correct_model_has_no_failing_layer(model, x, c4):
    res = layer_errors(model, x, c4, c4.group.all_elements())
    assert res.names == ["conv1", "act1", "conv2", "act2", "conv3", "act3", "pool", "flatten", "head"]
    assert res.cumulative.shape == res.isolated.shape == (9, 8, 4)
    assert res.first_failing is None
    assert float(res.cumulative.max()) < 1e-6 and float(res.isolated.nan_to_num().max()) < 1e-6


@pytest.mark.parametrize(
    "bug",
    [
        pytest.param(lambda: nn.Conv2d(8, 8, 3, padding=1), id="asymmetric-kernel"),
        pytest.param(lambda: c4_symmetric(nn.Conv2d(8, 8, 3, padding=1, stride=2)), id="strided-even-size"),
    ],
)
def test_injected_bug_is_the_first_failing_layer(model, x, c4, bug):
    torch.manual_seed(2)
    model.conv2 = bug()
    res = layer_errors(model, x, c4, c4.group.all_elements())
    assert res.first_failing == "conv2"
    iso = res.per_layer("isolated")
    assert float(iso[res.names.index("conv2")]) > 1e-2
    for earlier in ("conv1", "act1"):  # nothing before the bug is blamed
        assert float(res.per_layer("cumulative")[res.names.index(earlier)]) < 1e-6
    for later in ("act2", "conv3", "act3"):  # later layers carry the error but are not its cause
        assert float(res.per_layer("cumulative")[res.names.index(later)]) > 1e-3
        assert float(iso[res.names.index(later)]) < 1e-6


def test_interpolated_elements_do_not_blame_layers_when_exact_ones_exist(model, x):
    so2 = eqm.Symmetry.from_spec(name="rotation", group="so2")
    res = layer_errors(model, x, so2, so2.group.grid(8))
    assert res.first_failing is None  # judged on the four exact quarter turns
    assert float(res.cumulative[:, :, ~res.exact].nanmean()) > 1e-3  # interpolation error is still reported


def test_shift_scaled_to_feature_resolution():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, padding_mode="circular"), nn.AvgPool2d(2))
    sym = eqm.Symmetry(
        group=eqm.groups.Translation2d(max_shift=4),
        input_action=eqm.actions.ImageAction(padding="circular"),
        output_action=eqm.actions.ImageAction(padding="circular"),
        name="shift",
    )
    x = torch.randn(3, 1, 8, 8)
    res = layer_errors(net, x, sym, torch.tensor([[2.0, 0.0], [0.0, -2.0], [2.0, 2.0]]))
    assert float(res.cumulative.max()) < 1e-6  # an even shift is a whole-pixel shift after 2× pooling


def test_overrides_and_layer_selection(model, x, c4):
    res = layer_errors(model, x, c4, [1], layers=["conv1", "head"], feature_actions={"head": "skip"})
    assert res.names == ["conv1", "head"]
    assert torch.isnan(res.cumulative[1]).all()
    with pytest.raises(ValueError, match="Unknown layer names"):
        layer_errors(model, x, c4, [1], layers=["conv9"])


def test_hooks_removed_and_model_untouched_even_on_error(model, x, c4):
    model.train()
    before = copy.deepcopy(model.state_dict())
    layer_errors(model, x, c4, c4.group.all_elements())
    assert all(not m._forward_hooks for m in model.modules())
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())

    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    model.act2 = Boom()
    with pytest.raises(RuntimeError, match="boom"):
        layer_errors(model, x, c4, [1])
    assert all(not m._forward_hooks for m in model.modules())
    assert model.training
