"""Output selector (``Symmetry.output_key``): tuple, dict, ModelOutput-like and callable selections reach every probe
(orbit, gradients, Lie derivative, layer-wise, Metric, audit) and give the plain model's numbers; bad selectors fail
with messages that name them."""

from __future__ import annotations

from collections import OrderedDict, namedtuple
from dataclasses import replace

import pytest
import torch
from torch import nn

import eqmonitor as eqm
from eqmonitor.functional import gradient_errors, layer_errors, lie_derivative, orbit_errors
from eqmonitor.metric import EquivarianceError

C4 = {"name": "c4", "group": "c4", "input": "image", "output": "invariant"}
Pair = namedtuple("Pair", ["logits", "features"])


class ModelOutputLike(OrderedDict):
    """Like HuggingFace's ``ModelOutput``: an OrderedDict whose keys are also attributes."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class MultiHead(nn.Module):
    """A small CNN whose forward returns its logits packed as ``kind`` says (and a second tensor beside them)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = eqm.demos.SmallCNN(size=12, width=4)
        self.kind = kind

    def forward(self, x: torch.Tensor):
        logits, features = self.net(x), x.flatten(1)[:, :5]
        if self.kind == "tuple":
            return logits, features
        if self.kind == "dict":
            return {"logits": logits, "features": features}
        if self.kind == "model_output":
            return ModelOutputLike(logits=logits, features=features)
        if self.kind == "namedtuple":
            return Pair(logits, features)
        return {"heads": [features, {"z": logits}]}  # nested: for a callable


def _x(n: int = 6) -> torch.Tensor:
    return torch.randn(n, 1, 12, 12, generator=torch.Generator().manual_seed(3))


def _assert_same(res, ref) -> None:
    for name in ("errors", "abs_errors", "rel_errors", "nonfinite", "flips"):
        torch.testing.assert_close(getattr(res, name), getattr(ref, name), rtol=0, atol=0, equal_nan=True, msg=name)


SELECTIONS = [
    pytest.param("tuple", 0, id="tuple-index"),
    pytest.param("tuple", -2, id="tuple-negative-index"),
    pytest.param("dict", "logits", id="dict-key"),
    pytest.param("dict", 0, id="dict-position"),
    pytest.param("model_output", "logits", id="model-output-key"),
    pytest.param("model_output", 0, id="model-output-index"),
    pytest.param("namedtuple", "logits", id="namedtuple-attribute"),
    pytest.param("nested", lambda out: out["heads"][1]["z"], id="callable"),
]


@pytest.mark.parametrize("kind, key", SELECTIONS)
def test_selection_gives_the_plain_models_orbit_errors(kind, key):
    model, x = MultiHead(kind).eval(), _x()
    sym = eqm.Symmetry.from_spec(**C4, output_key=key)
    plain = eqm.Symmetry.from_spec(**C4)
    elements = sym.group.all_elements()
    _assert_same(
        orbit_errors(model, x, sym, elements, max_batch=5), orbit_errors(model.net, x, plain, elements, max_batch=5)
    )


def test_select_output_picks_by_key_index_attribute_and_callable():
    a, b = torch.ones(2, 3), torch.zeros(2, 5)
    sym = eqm.Symmetry.from_spec(group="c4")
    assert sym.select_output(a) is a
    assert sym.with_output_key(1).select_output((a, b)) is b
    assert sym.with_output_key("features").select_output({"logits": a, "features": b}) is b
    assert sym.with_output_key(-1).select_output(ModelOutputLike(logits=a, features=b)) is b
    assert sym.with_output_key("features").select_output(Pair(a, b)) is b
    assert sym.with_output_key(lambda out: out[0]).select_output([a, b]) is a


def test_bad_selectors_say_what_the_output_holds():
    out = (torch.ones(2, 3), torch.zeros(2, 5))
    sym = eqm.Symmetry.from_spec(group="c4")
    hint = r"pass `output_key=` \(a key, an index or a callable\) to the Symmetry / EquivarianceMonitor / "
    with pytest.raises(
        TypeError, match=r"returned a tuple of 2.*" + hint + r"EquivarianceError / audit, e\.g\. `output_key=0`"
    ):
        sym.select_output(out)
    with pytest.raises(ValueError, match=r"(?i)the model returned a tuple of 2; `output_key=2` is out of range"):
        sym.with_output_key(2).select_output(out)
    logits = {"logits": out[0], "features": out[1]}
    with pytest.raises(ValueError, match=r"no key 'logit'.*keys are \['logits', 'features'\]"):
        sym.with_output_key("logit").select_output(logits)
    with pytest.raises(ValueError, match=r"no key 'logit'.*keys are \['logits', 'features'\]"):
        sym.with_output_key("logit").select_output(ModelOutputLike(logits))
    with pytest.raises(ValueError, match=r"no key 'logit'.*attributes are \['logits', 'features'\]"):
        sym.with_output_key("logit").select_output(Pair(*out))
    with pytest.raises(TypeError, match=r"`output_key='logits'` selects a key or an attribute"):
        sym.with_output_key("logits").select_output(out[0])
    with pytest.raises(TypeError, match=r"returned a Tensor; `output_key=0` indexes a tuple"):
        sym.with_output_key(0).select_output(out[0])
    with pytest.raises(TypeError, match=r"`output_key=<lambda>` picked a tuple of 2 out of the model's output"):
        sym.with_output_key(lambda o: o).select_output(out)
    with pytest.raises(TypeError, match="`output_key` to be None, a key"):
        eqm.Symmetry.from_spec(group="c4", output_key=True)
    with pytest.raises(TypeError, match="`output_key` to be None, a key"):
        eqm.Symmetry.from_spec(group="c4", output_key=1.5)


def test_bad_selector_fails_in_every_probe():
    model, x = MultiHead("dict").eval(), _x(2)
    sym = eqm.Symmetry.from_spec(**C4, output_key="logit")
    e = sym.group.all_elements()
    for probe in (
        lambda: orbit_errors(model, x, sym, e),
        lambda: layer_errors(model, x, sym, e),
        lambda: gradient_errors(model, x, sym, e, lambda out, _: out.sum()),
        lambda: lie_derivative(model, x, sym),
        lambda: eqm.audit(model, x, sym),
        lambda: EquivarianceError(sym).update(model, x),
    ):
        with pytest.raises(
            ValueError, match=r"`output_key='logit'` does not fit .*: no key 'logit'; keys are \['logits', 'features'\]"
        ):
            probe()


def test_with_output_key_replaces_only_when_given():
    sym = eqm.Symmetry.from_spec(name="c4", group="c4", output="equivariant", output_key="logits")
    assert sym.with_output_key(None) is sym
    other = sym.with_output_key(0)
    assert other.output_key == 0 and sym.output_key == "logits"
    assert other.output_action is other.input_action and other.kind == "equivariant"  # identity survives replace
    assert replace(sym, output_key=1).output_key == 1
    assert "output_key='logits'" in repr(sym) and "output_key" not in repr(eqm.Symmetry.from_spec(group="c4"))


def test_yaml_spec_and_metric_argument():
    yaml = pytest.importorskip("yaml")
    cfg = yaml.safe_load(
        "symmetry: {name: c4, group: c4, input: image, output: invariant, output_key: logits}\nn_elements: 4\n"
    )
    model, x = MultiHead("dict").eval(), _x()
    from_yaml = EquivarianceError(**cfg)
    assert from_yaml.symmetry.output_key == "logits"
    from_yaml.update(model, x)
    by_index = EquivarianceError(yaml.safe_load("{name: c4, group: c4, output_key: 0}"))
    by_index.update(MultiHead("tuple").eval(), x)
    overridden = EquivarianceError(cfg["symmetry"], output_key=0)  # the argument wins over the spec's key
    assert overridden.symmetry.output_key == 0
    overridden.update(MultiHead("tuple").eval(), x)
    plain = EquivarianceError(C4)
    plain.update(model.net, x)
    ref = plain.summary()
    for metric in (from_yaml, by_index, overridden):
        out = metric.summary()
        for key in ("error_mean", "error_max", "per_element_mean", "nonfinite", "flip_rate"):
            torch.testing.assert_close(getattr(out, key), getattr(ref, key), rtol=0, atol=0, msg=key)


def test_gradients_are_of_the_loss_on_the_selected_output():
    model, x = MultiHead("model_output").eval(), _x(4)
    y = torch.tensor([0, 1, 2, 3])
    sym = eqm.Symmetry.from_spec(**C4, output_key="logits")
    loss = eqm.audit.__globals__["_default_loss"]
    res = gradient_errors(model, x, sym, sym.group.all_elements(), loss, y)
    ref = gradient_errors(model.net, x, eqm.Symmetry.from_spec(**C4), sym.group.all_elements(), loss, y)
    torch.testing.assert_close(res.input, ref.input, rtol=0, atol=0)
    assert sorted(res.params) == [f"net.{n}" for n in sorted(ref.params)]
    for name, err in ref.params.items():
        torch.testing.assert_close(res.params[f"net.{name}"], err, rtol=0, atol=0)


def test_lie_derivative_on_the_selected_output_with_attribution():
    class Heads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.chain = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1, dtype=torch.float64), nn.AdaptiveAvgPool2d(1),
                                       nn.Flatten())  # fmt: skip

        def forward(self, x):
            return {"logits": self.chain[2](self.chain[1](self.chain[0](x))), "aux": x.mean()}

    torch.manual_seed(0)
    model, x = Heads(), torch.randn(3, 1, 16, 16, dtype=torch.float64)
    sym = eqm.Symmetry.from_spec(group="so2", output_key="logits")
    res = lie_derivative(model, x, sym, layers=["chain.0", "chain.1", "chain.2"])
    ref = lie_derivative(model.chain, x, eqm.Symmetry.from_spec(group="so2"), layers=["0", "1", "2"])
    torch.testing.assert_close(res.total, ref.total, rtol=0, atol=0)
    assert res.names == ["chain.0", "chain.1", "chain.2"]
    torch.testing.assert_close(res.residual(), torch.zeros_like(res.derivative), atol=1e-12, rtol=0)


def test_layerwise_on_a_dict_model_names_its_own_layers():
    model, x = MultiHead("dict").eval(), _x(4)
    sym = eqm.Symmetry.from_spec(**C4, output_key="logits")
    res = layer_errors(model, x, sym, sym.group.all_elements())
    ref = layer_errors(model.net, x, eqm.Symmetry.from_spec(**C4), sym.group.all_elements())
    assert res.names == [f"net.{n}" for n in ref.names] and res.types == ref.types
    torch.testing.assert_close(res.cumulative, ref.cumulative, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(res.isolated, ref.isolated, rtol=0, atol=0, equal_nan=True)
    assert res.first_failing == (None if ref.first_failing is None else f"net.{ref.first_failing}")


def test_audit_and_assert_equivariant_take_output_key():
    torch.manual_seed(0)
    inner = eqm.demos.GroupAveraged(eqm.demos.SmallCNN(size=12, width=4), eqm.groups.Cyclic(4)).eval()

    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return ModelOutputLike(logits=self.inner(x), hidden=x)

    model, x = Wrapped().eval(), _x(4)
    sym = eqm.Symmetry.from_spec(**C4)
    with pytest.raises(TypeError, match=r"returned a ModelOutputLike with keys \['logits', 'hidden'\].*audit, "
                                         r"e\.g\. `output_key='logits'`"):  # fmt: skip
        eqm.audit(model, x, sym)
    report = eqm.audit(model, x, sym, output_key="logits", layers=True, gradients=True)
    assert report.verdict == "exact"
    assert eqm.assert_equivariant(model, x, sym, output_key="logits").errors.shape == (4, 4)
    assert sym.output_key is None  # the argument never changes the caller's symmetry
    rotated = eqm.assert_equivariant(model, x, sym.with_output_key(0), elements=[1])
    assert float(rotated.max()) < 1e-6
