"""layer_errors on networks built as their users build them: in-place ReLU and residual ``out += identity``
(torchvision's ResNet), the identity self-check, and parametrized modules (weight_norm, spectral_norm, orthogonal,
register_parametrization), through layer_errors, audit and the monitor in a real fit."""

from __future__ import annotations

import pytest
import torch
from layerwise_models import c4_resnet
from torch import nn
from torch.nn.utils import parametrizations, parametrize

import eqmonitor as eqm
from eqmonitor.functional.layerwise import layer_errors

PRECISION = 1e-5  # float32 models: float rounding, far below the 1e-4 isolated tolerance


@pytest.fixture
def c4():
    return eqm.Symmetry.from_spec(name="c4", group="c4")


@pytest.fixture
def x33():
    return torch.randn(4, 1, 33, 33, generator=torch.Generator().manual_seed(1))


# ============================================================================ in-place operations (torchvision ResNet)
def test_in_place_resnet_has_no_failing_layer_and_matches_the_out_of_place_one(c4, x33):
    """An exactly C4-invariant ResNet: BatchNorm then ``ReLU(inplace=True)`` overwrote the BatchNorm's kept output
    (isolated error 3.8 at the identity, BatchNorm named first failing), and ``out += identity`` the second one's."""
    model = c4_resnet(inplace=True)
    elements = c4.group.all_elements()
    assert float(eqm.functional.orbit_errors(model, x33, c4, elements).rel_errors.max()) < 1e-6
    res = layer_errors(model, x33, c4, elements)
    assert res.first_failing is None and res.not_measured == {}
    assert "layer1.0.bn2" in res.names and "layer2.0.downsample.1" in res.names and res.names[-1] == "fc"
    assert float(res.isolated.max()) < PRECISION and float(res.cumulative.max()) < PRECISION
    assert float(res.self_check.max()) < 1e-6  # every capture reproduced at the identity
    reference = layer_errors(c4_resnet(inplace=False), x33, c4, elements)
    assert reference.names == res.names
    torch.testing.assert_close(res.isolated, reference.isolated, rtol=0, atol=1e-6)
    torch.testing.assert_close(res.cumulative, reference.cumulative, rtol=0, atol=1e-6)


def test_in_place_resnet_names_an_injected_convolution(c4, x33):
    model = c4_resnet(inplace=True)
    torch.manual_seed(5)
    model.layer2[0].conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)  # not symmetrised
    res = layer_errors(model, x33, c4, c4.group.all_elements())
    assert res.first_failing == "layer2.0.conv2"
    iso, cum = res.per_layer("isolated"), res.per_layer("cumulative")
    assert float(iso[res.names.index("layer2.0.conv2")]) > 1e-2
    for earlier in res.names[: res.names.index("layer2.0.conv2")]:
        assert float(cum[res.names.index(earlier)]) < PRECISION, earlier
    for later in ("layer2.0.bn2", "layer3.0.conv1", "layer3.0.bn1", "layer4.0.bn2"):  # carry it, are not its cause
        assert float(cum[res.names.index(later)]) > 1e-3 and float(iso[res.names.index(later)]) < PRECISION


class DoubleInPlace(nn.Module):
    """Equivariant, and works on its input in place (``x.mul_``): its input must be taken before it runs."""

    def forward(self, x):
        return x.mul_(2.0)


class Noise(nn.Module):
    """Fresh noise at every call: no capture of it can be reproduced."""

    def forward(self, x):
        return x + 1e-2 * torch.randn_like(x)


def test_a_layer_working_in_place_on_its_input_is_measured_on_its_input(c4):
    torch.manual_seed(0)
    model = eqm.demos.C4EquivariantCNN().eval()
    model.act1 = nn.Sequential(nn.ReLU(), DoubleInPlace())
    x = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    res = layer_errors(model, x, c4, c4.group.all_elements())
    assert res.first_failing is None and float(res.isolated.max()) < PRECISION


def test_identity_self_check_reports_an_unreproducible_capture_without_a_number(c4):
    torch.manual_seed(0)
    model = eqm.demos.C4EquivariantCNN().eval()
    model.act2 = nn.Sequential(nn.ReLU(), Noise())
    x = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    res = layer_errors(model, x, c4, c4.group.all_elements())
    assert res.not_measured == {"act2.1": "capture unreliable"}
    i = res.names.index("act2.1")
    assert torch.isnan(res.isolated[i]).all() and torch.isnan(res.cumulative[i]).all()
    assert float(res.self_check[i].nan_to_num().max()) > 1e-3
    assert float(res.self_check[:i].max()) < 1e-6  # the layers before it reproduce their captures
    assert res.first_failing is None  # the noise is not blamed on a later layer
    report = eqm.report.AuditReport.from_orbit(eqm.functional.orbit_errors(model, x, c4, c4.group.all_elements()))
    report.add_layers(res)
    assert report.layers["verdict"] == "incomplete"
    assert "act2.1 (capture unreliable)" in report.to_text()


# ============================================================================================ parametrized modules
class QuarterTurnAverage(nn.Module):
    """A parametrization that averages a kernel over the four quarter turns (C4-symmetric convolutions)."""

    def forward(self, w):
        return sum(torch.rot90(w, k, (-2, -1)) for k in range(4)) / 4


def parametrized_c4_cnn(broken: bool = False) -> nn.Module:
    """C4EquivariantCNN with ``weight_norm`` (conv2), ``register_parametrization`` (conv3), ``orthogonal`` (an
    8×8 Linear after the flatten) and ``spectral_norm`` (the head); ``broken``: conv2 a plain weight-normed conv."""
    torch.manual_seed(0)
    model = eqm.demos.C4EquivariantCNN()
    model.conv2 = parametrizations.weight_norm(nn.Conv2d(8, 8, 3, padding=1) if broken else model.conv2)
    model.conv3 = nn.Conv2d(8, 8, 3, padding=1)
    parametrize.register_parametrization(model.conv3, "weight", QuarterTurnAverage())
    model.flatten = nn.Sequential(nn.Flatten(), parametrizations.orthogonal(nn.Linear(8, 8)))
    model.head = parametrizations.spectral_norm(model.head)
    return model.eval()


NAMES = ["conv1", "act1", "conv2", "act2", "conv3", "act3", "pool", "flatten.0", "flatten.1", "head"]


def test_parametrized_modules_are_one_layer_each(c4):
    x = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    res = layer_errors(parametrized_c4_cnn(), x, c4, c4.group.all_elements())
    assert res.names == NAMES  # no `conv2.parametrizations.weight.0`, and the parametrized modules are there
    assert res.types[NAMES.index("head")] == "ParametrizedLinear"
    assert res.first_failing is None and res.not_measured == {}
    assert float(res.isolated.max()) < PRECISION and float(res.cumulative.max()) < PRECISION
    broken = layer_errors(parametrized_c4_cnn(broken=True), x, c4, c4.group.all_elements())
    assert broken.names == NAMES and broken.first_failing == "conv2"
    with pytest.raises(ValueError, match="inside a parametrization.*'conv2'"):
        layer_errors(parametrized_c4_cnn(), x, c4, [1], layers=["conv2.parametrizations.weight.0"])
    picked = layer_errors(parametrized_c4_cnn(), x, c4, [1], layers=lambda n, m: "conv" in n)
    assert picked.names == ["conv1", "conv2", "conv3"]


def test_audit_of_a_parametrized_model(c4, digits):
    x, _ = digits
    report = eqm.audit(parametrized_c4_cnn(broken=True), x[:8], c4, layers=True)
    assert [r["layer"] for r in report.layers["rows"]] == NAMES
    assert report.layers["first_failing"] == "conv2" and report.layers["verdict"] == "broken"
    assert "first failing layer: conv2" in report.to_text()


def test_monitor_with_layerwise_on_a_parametrized_model_in_a_real_fit(fit):
    """At the monitor's defaults: the parametrized head and first convolution are logged under their own names."""
    from eqmonitor.callbacks import EquivarianceMonitor
    from eqmonitor.demos.lightning_digits import DigitsClassifier

    model = DigitsClassifier(batch_norm=True, dropout=0.2)
    parametrizations.weight_norm(model.net.head)
    parametrizations.spectral_norm(model.net.features[0])
    mon = EquivarianceMonitor({"name": "c4", "group": "c4"}, n_samples=16, layerwise=True)
    trainer, _, _ = fit([mon], max_epochs=1)
    keys = [k for k in trainer.callback_metrics if k.startswith("equivariance/c4/layer/")]
    assert "equivariance/c4/layer/net.head" in keys and "equivariance/c4/layer/net.features.0" in keys
    assert not any("parametrizations" in k for k in keys)
    layers = mon.latest["c4"].layers
    assert "net.head" in layers.names and "net.features.0" in layers.names
    assert layers.first_failing is not None  # a plain CNN: some layer breaks C4


def test_monitor_dry_run_runs_the_layer_wise_test(fit, monkeypatch):
    """A layer-wise test that cannot run fails at fit start with the dry run's message, not at the first check."""
    import eqmonitor.check as check
    from eqmonitor.callbacks import EquivarianceMonitor
    from eqmonitor.demos.lightning_digits import DigitsClassifier

    calls = []

    def failing(*args, **kw):
        calls.append(args[2].name)
        raise RuntimeError("layer-wise failure")

    monkeypatch.setattr(check, "layer_errors", failing)
    mon = EquivarianceMonitor({"name": "c4", "group": "c4"}, n_samples=16, layerwise=True)
    with pytest.raises(RuntimeError, match="does not fit this model: layer-wise failure"):
        fit([mon], model=DigitsClassifier(), max_epochs=1)
    assert calls == ["c4"]


def test_a_layer_called_several_times_in_one_forward_is_not_measured():
    """A group average written as a loop (``mean_k net(rot90(x, k))``) calls each inner layer 4 times: its first
    call's output is one copy's feature, which need not transform while the average does. Measured, a correct model's
    inner conv was blamed (seen by a newcomer on a looped ResNet average); now such layers are listed as not measured
    and nothing is blamed, while a layer called once is still measured."""

    class LoopAveraged(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = eqm.demos.SmallCNN()
            self.scale = torch.nn.Linear(10, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.scale(torch.stack([self.net(torch.rot90(x, k, (-2, -1))) for k in range(4)]).mean(0))

    sym = eqm.Symmetry.from_spec(name="c4", group="c4", input="image", output="invariant")
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    res = layer_errors(LoopAveraged().eval(), x, sym, sym.group.all_elements())
    assert res.first_failing is None
    inner = [n for n in res.names if n.startswith("net.")]
    assert inner and all(res.not_measured[n] == "called 4 times in one forward" for n in inner)
    # the output layer is still measured (its input, the average, has no known action: no isolated number)
    assert res.not_measured.get("scale") == "unknown input action"
    assert float(res.cumulative[res.names.index("scale")].max()) < 1e-5
