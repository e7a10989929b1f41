"""Feature actions that are not guessed: flatten heads (``nn.Flatten``, ``torch.flatten`` in ``forward``), flat
features whose action cannot be known (not measured, never 0), maps too small for the disc mask, and the audit."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from layerwise_models import c4_resnet
from torch import nn

import eqmonitor as eqm
from eqmonitor.demos.models import C4SymmetricConv2d
from eqmonitor.functional._features import TOO_SMALL, ReshapedAction
from eqmonitor.functional.layerwise import layer_errors

PRECISION = 1e-5


@pytest.fixture
def c4():
    return eqm.Symmetry.from_spec(name="c4", group="c4")


@pytest.fixture
def x():
    return torch.randn(6, 1, 12, 12, generator=torch.Generator().manual_seed(1))


class FlattenHead(nn.Module):
    """C4-equivariant convolutions, then a linear head over the flattened map: broken only by the head.

    ``flatten``: ``"module"`` (``nn.Flatten``), ``"forward"`` (``torch.flatten`` in ``forward``), ``"pooled"``
    (``F.avg_pool2d`` then ``flatten`` in ``forward``: a feature no layer produced), or ``"mlp"`` (``nn.Flatten``,
    then ``Linear -> ReLU -> Linear``)."""

    def __init__(self, flatten: str = "module", size: int = 12) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.mode = flatten
        self.conv1 = C4SymmetricConv2d(1, 4, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = C4SymmetricConv2d(4, 4, 3, padding=1)
        self.act2 = nn.ReLU()
        side = size // 2 if flatten == "pooled" else size
        self.flatten = nn.Flatten() if flatten in ("module", "mlp") else None
        if flatten == "mlp":
            self.head = nn.Sequential(nn.Linear(4 * side * side, 16), nn.ReLU(), nn.Linear(16, 3))
        else:
            self.head = nn.Linear(4 * side * side, 3)

    def forward(self, x):
        x = self.act2(self.conv2(self.act1(self.conv1(x))))
        if self.flatten is not None:
            x = self.flatten(x)
        elif self.mode == "pooled":
            x = F.avg_pool2d(x, 2).flatten(1)
        else:
            x = torch.flatten(x, 1)
        return self.head(x)


def end_to_end(model, x, sym):
    return float(eqm.functional.orbit_errors(model, x, sym, sym.group.all_elements()).rel_errors.mean())


@pytest.mark.parametrize("flatten", ["module", "forward"])
def test_a_flatten_linear_head_is_named(c4, x, flatten):
    """The flattened map carries the spatial action, so the head is measured and fails alone (it was taken for an
    invariant feature: no failing layer, while the model is broken end to end)."""
    model = FlattenHead(flatten).eval()
    assert end_to_end(model, x, c4) > 0.1
    res = layer_errors(model, x, c4, c4.group.all_elements())
    assert res.first_failing == "head" and res.not_measured == {}
    iso, cum = res.per_layer("isolated"), res.per_layer("cumulative")
    assert float(iso[res.names.index("head")]) > 0.1
    for nm in res.names[:-1]:  # the convolutions and the flatten itself: a permutation of the entries
        assert float(cum[res.names.index(nm)]) < PRECISION and float(iso[res.names.index(nm)]) < PRECISION, nm


def test_the_flattened_action_is_a_permutation_of_the_entries_on_exact_elements(c4):
    fmap = torch.randn(3, 4, 5, 5)
    act = ReshapedAction(eqm.actions.ImageAction(mask=None), (4, 5, 5))
    k = torch.tensor([[1], [2], [3]])
    turned = act(c4.group, k, fmap.flatten(1))
    assert torch.equal(turned, eqm.actions.ImageAction(mask=None)(c4.group, k, fmap).flatten(1))
    assert torch.equal(turned.sort(1).values, fmap.flatten(1).sort(1).values) and not torch.equal(
        turned, fmap.flatten(1)
    )
    assert bool(act.exact_elements(c4.group, c4.group.all_elements(), turned.shape).all())


def test_a_feature_no_layer_produced_is_not_measured_never_zero(c4, x):
    """``F.avg_pool2d(x, 2).flatten(1)`` in ``forward``: nothing tells how the head's input transforms. The head's
    output is the model's, so its cumulative error (the end-to-end one) is measured; its isolated error is not."""
    model = FlattenHead("pooled").eval()
    res = layer_errors(model, x, c4, c4.group.all_elements())
    assert res.not_measured == {"head": "unknown input action"}
    assert res.first_failing is None and torch.isnan(res.isolated[-1]).all()
    torch.testing.assert_close(float(res.per_layer("cumulative")[-1]), end_to_end(model, x, c4), rtol=1e-4, atol=0)


def test_hidden_layers_of_a_flat_head_are_not_measured(c4, x):
    model = FlattenHead("mlp").eval()
    res = layer_errors(model, x, c4, c4.group.all_elements())
    assert res.not_measured == {
        "head.0": "unknown feature action",
        "head.1": "unknown feature action",
        "head.2": "unknown input action",
    }
    assert torch.isnan(res.cumulative[res.names.index("head.0")]).all() and res.first_failing is None
    declared = layer_errors(model, x, c4, c4.group.all_elements(), feature_actions={"head.0": "invariant"})
    assert declared.first_failing == "head.0" and declared.not_measured == {}


def test_pooled_flat_features_stay_measured(c4):
    """Flat features of a globally pooled map (``nn.Flatten``, or ``torch.flatten`` in ResNet's ``forward``) are
    invariant because their origin is: every layer is measured."""
    torch.manual_seed(0)
    x = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    res = layer_errors(eqm.demos.C4EquivariantCNN().eval(), x, c4, c4.group.all_elements())
    assert res.not_measured == {} and res.first_failing is None


def test_maps_too_small_for_the_disc_mask_are_not_measured():
    """Under SO(2) the disc mask of a 2×2 map keeps none of its 4 pixels (ResNet's last stage on 33×33 images, as
    ResNet-18's layer4 on 64×64): those layers read exactly 0 before; now they are not measured."""
    so2 = eqm.Symmetry.from_spec(name="so2", group="so2")
    x = torch.randn(3, 1, 33, 33, generator=torch.Generator().manual_seed(1))
    res = layer_errors(c4_resnet(), x, so2, so2.group.grid(8))
    small = [nm for nm in res.names if nm.startswith("layer4.")]
    assert small and all(res.not_measured.get(nm) == TOO_SMALL for nm in small)
    rows = [res.names.index(nm) for nm in small]
    assert torch.isnan(res.cumulative[rows]).all() and torch.isnan(res.isolated[rows]).all()
    assert set(res.not_measured) == set(small) and res.first_failing is None  # judged on the exact quarter turns
    assert not torch.isnan(res.isolated[res.names.index("avgpool")]).any()  # 2×2 in, pooled out: measured


def test_audit_never_calls_unmeasured_layers_ok(c4, x):
    broken = eqm.audit(FlattenHead("forward").eval(), x, c4, layers=True)
    assert broken.verdict == "broken" and broken.layers["verdict"] == "broken"
    assert broken.layers["first_failing"] == "head" and "first failing layer: head" in broken.to_text()

    report = eqm.audit(FlattenHead("mlp").eval(), x, c4, layers=True)
    assert report.verdict == "broken" and report.layers["first_failing"] is None
    assert report.layers["verdict"] == "incomplete"
    text = report.to_text()
    assert "layer-wise (ok" not in text and "layer-wise (incomplete: 3 of 8 layers not measured" in text
    assert "head.0 (unknown feature action)" in text and "not measured (unknown input action)" in text
    data = json.loads(report.to_json())["layers"]
    assert data["not_measured"]["head.2"] == "unknown input action"
    row = next(r for r in data["rows"] if r["layer"] == "head.0")
    assert row["isolated"] is None and row["cumulative"] is None and row["not_measured"] == "unknown feature action"
    assert "not measured" in report.to_markdown()
