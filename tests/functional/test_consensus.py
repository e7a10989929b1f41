"""Consensus (NERO §2.5): an exactly equivariant model is its own consensus, a plain CNN is not; class scores are
averaged as probabilities."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import eqmonitor as eqm
from eqmonitor.actions import ImageAction, VectorField
from eqmonitor.functional import consensus, consensus_errors
from eqmonitor.functional.consensus import check_reference
from eqmonitor.groups import Dihedral


def _flow_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 3, padding=1))


class _D4Covariant(nn.Module):
    """``(1/|G|) Σ_g g⁻¹ · f(g · x)`` with frames moved as images and the output moved back as a vector field."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.group = model, Dihedral(4)
        self.frames, self.field = ImageAction(mask=None), VectorField(mask=None)

    def forward(self, x: Tensor) -> Tensor:
        g = self.group.all_elements(x.device).repeat_interleave(x.shape[0], 0)
        k = len(g) // x.shape[0]
        out = self.model(self.frames(self.group, g, x.repeat(k, 1, 1, 1)))
        back = self.field(self.group, self.group.inverse(g), out)
        return back.reshape(k, x.shape[0], *back.shape[1:]).mean(0)


@pytest.fixture
def field_setup():
    torch.manual_seed(0)
    sym = eqm.Symmetry(Dihedral(4), ImageAction(mask=None), VectorField(mask=None))
    return sym, torch.randn(3, 2, 12, 12)


@pytest.fixture
def c4():
    torch.manual_seed(0)
    sym = eqm.Symmetry.from_spec(group="c4", input="image", output="invariant")
    return sym, torch.randn(4, 1, 28, 28)


def test_equivariant_field_is_its_own_consensus(field_setup):
    sym, x = field_setup
    model = _D4Covariant(_flow_cnn())
    elements = sym.group.all_elements()
    c = consensus(model, x, sym, elements)
    y = model.eval()(x)
    assert c.shape == y.shape and c.dtype == y.dtype
    assert (c - y).abs().max() < 1e-6 * y.abs().max()
    e = consensus_errors(model, x, sym, elements)
    assert e.shape == (3, 8) and e.dtype == torch.float64
    assert e.max() < 1e-6


def test_plain_cnn_field_differs_from_its_consensus(field_setup):
    sym, x = field_setup
    model = _flow_cnn()
    elements = sym.group.all_elements()
    c = consensus(model, x, sym, elements)
    y = model.eval()(x)
    assert (c - y).abs().max() > 1e-2 * y.abs().max()
    e = consensus_errors(model, x, sym, elements)
    assert e.min() > 1e-2
    # the consensus of a plain CNN is itself exactly D4-covariant: its errors against its own orbit are the spread
    # of the model's outputs, and averaging them back gives the consensus again
    back = _D4Covariant(model)(x)
    assert torch.allclose(c, back, atol=1e-6)


def test_equivariant_classifier_consensus_is_its_softmax(c4):
    sym, x = c4
    model = eqm.demos.GroupAveraged(eqm.demos.SmallCNN(), eqm.groups.Cyclic(4))
    elements = sym.group.all_elements()
    c = consensus(model, x, sym, elements)
    p = model.eval()(x).softmax(1)
    assert c.shape == p.shape
    assert (c - p).abs().max() < 1e-6
    for error in ("relative", "kl"):
        sym_e = eqm.Symmetry.from_spec(group="c4", input="image", output="invariant", error=error)
        assert consensus_errors(model, x, sym_e, elements).max() < 1e-5


def test_plain_classifier_consensus_is_a_distribution_unlike_its_softmax(c4):
    sym, x = c4
    model = eqm.demos.SmallCNN()
    elements = sym.group.all_elements()
    c = consensus(model, x, sym, elements)
    p = model.eval()(x).softmax(1)
    assert (c >= 0).all() and torch.allclose(c.sum(1), torch.ones(4), atol=1e-6)
    assert (c - p).abs().max() > 1e-3
    # the mean of the probabilities, not the softmax of the mean logits
    logits = torch.stack([model(torch.rot90(x, k, (2, 3))) for k in range(4)])
    assert torch.allclose(c, logits.softmax(2).mean(0), atol=1e-6)
    assert not torch.allclose(c, logits.mean(0).softmax(1), atol=1e-6)
    kl = eqm.Symmetry.from_spec(group="c4", input="image", output="invariant", error="kl")
    e = consensus_errors(model, x, kl, elements)
    assert e.shape == (4, 4) and (e > 0).all()


def test_chunking_does_not_change_the_result(c4):
    sym, x = c4
    model = eqm.demos.SmallCNN()
    elements = sym.group.all_elements()
    assert torch.allclose(consensus(model, x, sym, elements, max_batch=3), consensus(model, x, sym, elements))


def test_bad_input_is_refused(c4):
    sym, x = c4
    model = eqm.demos.SmallCNN()
    elements = sym.group.all_elements()
    with pytest.raises(TypeError, match="Symmetry"):
        consensus(model, x, "c4", elements)
    with pytest.raises(ValueError, match="max_batch"):
        consensus(model, x, sym, elements, max_batch=0)
    with pytest.raises(ValueError, match="at least one sample"):
        consensus(model, x[:0], sym, elements)
    with pytest.raises(ValueError, match="finite"):
        consensus(model, x.clone().fill_(float("nan")), sym, elements)
    with pytest.raises(TypeError, match="dtype"):
        consensus(model, x.double(), sym, elements)
    conf = eqm.Symmetry.from_spec(group="c4", input="image", output="invariant", error="confidence")
    with pytest.raises(ValueError, match="needs labels"):
        consensus_errors(model, x, conf, elements)
    assert consensus(model, x, conf, elements).shape == (4, 10)  # the consensus itself needs no labels


@pytest.mark.parametrize("error", ["relative", "kl", "flip"])
def test_one_pass_gives_the_orbit_errors_and_the_consensus_errors_of_a_classifier(c4, error):
    _, x = c4
    sym = eqm.Symmetry.from_spec(group="c4", input="image", output="invariant", error=error)
    model = eqm.demos.SmallCNN()
    elements = sym.group.all_elements()
    own, cons = eqm.functional.orbit_errors_with_consensus(model, x, sym, elements, max_batch=5)
    alone = eqm.functional.orbit_errors(model, x, sym, elements)
    assert own.reference == "identity" and cons.reference == "consensus"
    torch.testing.assert_close(own.errors, alone.errors, rtol=1e-6, atol=1e-9)  # the first result is orbit_errors
    torch.testing.assert_close(cons.errors, consensus_errors(model, x, sym, elements), rtol=1e-6, atol=1e-9)
    # flips against the consensus: the top-1 class at each element against the consensus' top-1
    c = consensus(model, x, sym, elements)
    top = torch.stack([model.eval()(torch.rot90(x, -k, (2, 3))).argmax(1) for k in range(4)], 1)  # C4's k: -k·90°
    torch.testing.assert_close(cons.flips, (top != c.argmax(1, keepdim=True)).double())
    assert cons.confidence is None and (cons.elements == own.elements).all()


def test_one_pass_consensus_errors_of_a_vector_field(field_setup):
    sym, x = field_setup
    elements = sym.group.all_elements()
    for model, small in ((_D4Covariant(_flow_cnn()), True), (_flow_cnn(), False)):
        own, cons = eqm.functional.orbit_errors_with_consensus(model, x, sym, elements)
        torch.testing.assert_close(cons.errors, consensus_errors(model, x, sym, elements), rtol=1e-6, atol=1e-9)
        assert (cons.max() < 1e-6) if small else (cons.errors.min() > 1e-2)
        assert (own.max() < 1e-6) if small else (own.errors[:, 1:].min() > 1e-2)


def test_one_pass_consensus_marks_a_sample_with_a_nan_output_as_nonfinite(c4):
    sym, x = c4
    net = eqm.demos.SmallCNN()

    def model(t: Tensor) -> Tensor:  # NaN for the first sample's quarter turn only
        out = net(t)
        bad = (t - torch.rot90(x[:1], -1, (2, 3))).flatten(1).abs().amax(1) == 0
        return torch.where(bad[:, None], torch.full_like(out, float("nan")), out)

    own, cons = eqm.functional.orbit_errors_with_consensus(model, x, sym, sym.group.all_elements(), max_batch=4)
    assert int(own.nonfinite.sum()) == 1 and own.nonfinite[0, 1]
    assert cons.nonfinite[0].all() and not cons.nonfinite[1:].any()  # its consensus is unknown: every element
    assert torch.isfinite(cons.summary().error_mean)


def test_bad_reference_and_labelled_errors_are_refused(c4):
    sym, x = c4
    with pytest.raises(ValueError, match="Expected `reference` to be one of"):
        check_reference("ground_truth")
    conf = eqm.Symmetry.from_spec(group="c4", input="image", output="invariant", error="confidence")
    with pytest.raises(ValueError, match="needs labels"):
        eqm.functional.orbit_errors_with_consensus(eqm.demos.SmallCNN(), x, conf, [0, 1])
