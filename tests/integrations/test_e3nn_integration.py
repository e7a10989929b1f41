"""The e3nn integration: IrrepsAction, symmetries from irreps, and agreement with e3nn's own `equivariance_error`.

e3nn's ``equivariance_error`` draws one ``o3.rand_matrix`` per (trial, parity) from the global torch RNG, in the order
``for trial: for parity_k in (0, 1)``, and multiplies it by ``(-1) ** parity_k``. The comparisons below reseed, call
it, then reseed and replicate that draw to get the very same O(3) elements for eqmonitor (and check that the replica
is what e3nn used by recording its draws). e3nn builds its ``D`` matrices with generators in the *default* dtype and
returns its errors in the default dtype, so those tests run under a float64 default (as e3nn's own test-suite does).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

e3nn = pytest.importorskip("e3nn")
from e3nn import o3  # noqa: E402
from e3nn.nn import Gate  # noqa: E402
from e3nn.util.test import equivariance_error  # noqa: E402

from eqmonitor import Symmetry, actions  # noqa: E402
from eqmonitor.functional import orbit_errors  # noqa: E402
from eqmonitor.groups import O3, SO2, SO3, Translation  # noqa: E402
from eqmonitor.integrations import e3nn as eqm_e3nn  # noqa: E402
from eqmonitor.integrations.e3nn import IrrepsAction, symmetry_for_e3nn, symmetry_from_irreps  # noqa: E402
from eqmonitor.integrations.e3nn import _common as e3nn_common  # noqa: E402

F64 = torch.float64
IRREPS_IN = o3.Irreps("2x0e + 1x1o + 1x2e")
IRREPS_OUT = o3.Irreps("1x0e + 2x1o + 1x2e")
AGREE_TOL = 1e-9


@pytest.fixture
def f64_default():
    old = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


# ==================================================================================================== models
class GateTensorSquare(nn.Module):
    """Linear -> Gate -> tensor product of the gated features with themselves: one input, one output, nonlinear."""

    def __init__(self, irreps_in=IRREPS_IN, irreps_out=IRREPS_OUT) -> None:
        super().__init__()
        self.gate = Gate("4x0e", [torch.tanh], "3x0e", [torch.sigmoid], "2x1o + 1x2e")
        self.lin = o3.Linear(irreps_in, self.gate.irreps_in)
        hidden = self.gate.irreps_out
        self.tp = o3.FullyConnectedTensorProduct(hidden, hidden, irreps_out)
        self.irreps_in, self.irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.gate(self.lin(x))
        return self.tp(h, h)


class BrokenLinear(nn.Module):
    """An e3nn Linear plus a fixed non-equivariant 3x3 map from the input's 1o part into the output's first 1o."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = o3.Linear(IRREPS_IN, IRREPS_OUT)
        self.register_buffer("a", torch.tensor([[1.0, 0.5, 0.0], [0.0, 0.2, 0.0], [0.3, 0.0, -0.4]]))
        self.irreps_in, self.irreps_out = IRREPS_IN, IRREPS_OUT

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.lin(x)
        return torch.cat([out[..., :1], out[..., 1:4] + x[..., 2:5] @ self.a.T, out[..., 4:]], dim=-1)


def _model(kind: str) -> nn.Module:
    torch.manual_seed(1234)
    model = {
        "linear": lambda: o3.Linear(IRREPS_IN, IRREPS_OUT),
        "gate_tp": GateTensorSquare,
        "broken": BrokenLinear,
    }[kind]()
    return model.double().eval()


def _x(n: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, IRREPS_IN.dim, dtype=F64, generator=torch.Generator().manual_seed(seed))


def _replicate_e3nn_draw(seed: int, ntrials: int, do_parity: bool) -> tuple[torch.Tensor, list[int]]:
    """The O(3) elements ``equivariance_error`` draws after ``torch.manual_seed(seed)``, ``[T·P, 9]``, and parities."""
    torch.manual_seed(seed)
    mats, parities = [], []
    for _ in range(ntrials):
        for parity_k in (0, 1) if do_parity else (0,):
            mats.append(o3.rand_matrix(dtype=F64) * (-1) ** parity_k)
            parities.append(parity_k)
    return torch.stack(mats).reshape(-1, 9), parities


def _e3nn_error(model, x, seed, ntrials, do_parity, monkeypatch=None, irreps_in=None, irreps_out=None):
    """e3nn's ``equivariance_error`` after ``torch.manual_seed(seed)``; also the matrices it drew if monkeypatched."""
    drawn = []
    if monkeypatch is not None:
        original = o3.rand_matrix

        def recording(*args, **kwargs):
            r = original(*args, **kwargs)
            drawn.append(r)  # e3nn multiplies it by (-1)^k in place, so this ends up as the element it used
            return r

        monkeypatch.setattr(o3, "rand_matrix", recording)
    torch.manual_seed(seed)
    errs = equivariance_error(
        model,
        args_in=[x],
        irreps_in=[irreps_in or model.irreps_in],
        irreps_out=[irreps_out or model.irreps_out],
        ntrials=ntrials,
        do_parity=do_parity,
        do_translation=False,
    )
    if monkeypatch is not None:
        monkeypatch.undo()
    return errs, drawn


# ==================================================================================================== (i) agreement
@pytest.mark.parametrize("kind", ["linear", "gate_tp", "broken"])
@pytest.mark.parametrize("group_name", ["o3", "so3"])
def test_per_element_errors_match_e3nn(kind, group_name, f64_default, monkeypatch):
    """For each of e3nn's own elements, eqmonitor's max-abs error (max over samples) equals e3nn's."""
    model, x = _model(kind), _x()
    do_parity = group_name == "o3"
    sym = symmetry_for_e3nn(model, group=group_name, error="max_abs")
    assert sym.kind == "covariant" and isinstance(sym.input_action, IrrepsAction)

    e3nn_errors, elements = [], []
    for seed in range(8):
        errs, drawn = _e3nn_error(model, x, seed, ntrials=1, do_parity=do_parity, monkeypatch=monkeypatch)
        replica, parities = _replicate_e3nn_draw(seed, ntrials=1, do_parity=do_parity)
        assert torch.equal(torch.stack(drawn).reshape(-1, 9), replica)  # same elements as e3nn used
        elements.append(replica)
        e3nn_errors += [float(errs[(k, False)][0]) for k in parities]
    elements = torch.cat(elements)
    if do_parity:
        assert (torch.linalg.det(elements.reshape(-1, 3, 3))[1::2] < 0).all()

    res = orbit_errors(model, x, sym, elements)
    ours = res.errors.max(0).values  # [K]: max over samples, per element
    assert torch.equal(res.errors, res.abs_errors)
    theirs = torch.tensor(e3nn_errors, dtype=F64)
    gap = (ours - theirs).abs().max().item()
    print(f"\n[{kind}/{group_name}] K={len(theirs)} max|eqm-e3nn|={gap:.3e}", end=" ")
    print(f"max error: eqmonitor {ours.max():.3e}, e3nn {theirs.max():.3e}")
    assert gap < AGREE_TOL
    if kind == "broken":
        assert ours.min() > 1e-2 and theirs.min() > 1e-2  # (ii): flagged by both, on every element
    else:
        assert ours.max() < 1e-10 and theirs.max() < 1e-10


@pytest.mark.parametrize("kind", ["gate_tp", "broken"])
def test_trial_maxima_match_e3nn(kind, f64_default):
    """With several trials, e3nn's per-parity maxima equal eqmonitor's maxima over the replicated elements."""
    model, x, ntrials = _model(kind), _x(), 6
    errs, _ = _e3nn_error(model, x, seed=7, ntrials=ntrials, do_parity=True)
    elements, parities = _replicate_e3nn_draw(7, ntrials, do_parity=True)
    res = orbit_errors(model, x, symmetry_for_e3nn(model, group="o3"), elements)
    per_element = res.errors.max(0).values
    parities = torch.tensor(parities)
    for k in (0, 1):
        ours, theirs = per_element[parities == k].max().item(), float(errs[(k, False)][0])
        print(f"\n[{kind}/trials parity={k}] eqm={ours:.6e} e3nn={theirs:.6e} |diff|={abs(ours - theirs):.3e}")
        assert abs(ours - theirs) < AGREE_TOL


def test_broken_model_flagged_on_eqmonitor_samples(f64_default):
    """(ii) on eqmonitor's own Haar samples: e3nn's internals give the same per-element errors for those elements."""
    from e3nn.util._argtools import _transform  # e3nn's own transform, used per element

    model, x = _model("broken"), _x()
    group = O3()
    elements = group.sample(12, torch.Generator().manual_seed(3))
    res = orbit_errors(model, x, symmetry_for_e3nn(model, group=group), elements)
    with torch.no_grad():
        theirs = torch.stack(
            [
                (model(_transform([x], [IRREPS_IN], r)[0]) - _transform([model(x)], [IRREPS_OUT], r)[0]).abs().max()
                for r in group.matrix(elements)
            ]
        )
    gap = (res.errors.max(0).values - theirs).abs().max().item()
    print(f"\n[broken/eqmonitor elements] max|eqm-e3nn internals|={gap:.3e}")
    assert gap < AGREE_TOL and res.errors.max(0).values.min() > 1e-2


def test_float32_model_under_float32_default():
    """A float32 model: D is computed in float64 and cast to the features' dtype; errors sit at float32 noise."""
    torch.manual_seed(0)
    model = o3.Linear(IRREPS_IN, IRREPS_OUT)
    x = torch.randn(8, IRREPS_IN.dim)
    elements = O3().sample(6, torch.Generator().manual_seed(0))
    res = orbit_errors(model, x, symmetry_for_e3nn(model, group="o3"), elements)
    assert res.errors.max() < 1e-5


# ==================================================================================================== (iii) group laws
@pytest.mark.parametrize("group", [SO3(), O3()], ids=["so3", "o3"])
def test_group_laws(group):
    act = IrrepsAction("2x0e + 1x0o + 1x1o + 1x1e + 2x2e + 1x3o + 1x4e")
    gen = torch.Generator().manual_seed(0)
    g, h = group.sample(64, gen), group.sample(64, gen)
    x = torch.randn(64, 3, act.irreps.dim, dtype=F64, generator=gen)
    ident = group.identity().expand(64, -1)
    assert (act(group, ident, x) - x).abs().max() < 1e-12
    assert (act(group, g, act(group, h, x)) - act(group, group.compose(g, h), x)).abs().max() < 1e-12
    assert (act(group, group.inverse(g), act(group, g, x)) - x).abs().max() < 1e-12
    eye = torch.eye(act.irreps.dim, dtype=F64)
    d = act.matrices(group, g)
    assert (d @ d.transpose(1, 2) - eye).abs().max() < 1e-12
    # the batched block-wise action is the full matrix applied row by row
    assert (act(group, g, x) - torch.einsum("bij,bnj->bni", d, x)).abs().max() < 1e-12


def test_matches_e3nn_d_from_matrix(f64_default):
    group = O3()
    irreps = o3.Irreps("1x0e + 1x0o + 2x1o + 1x1e + 1x2e + 1x2o + 1x3o")
    elements = torch.cat([group.sample(16, torch.Generator().manual_seed(1)), group.grid(8), group.testing_elements()])
    ours = IrrepsAction(irreps).matrices(group, elements)
    theirs = irreps.D_from_matrix(group.matrix(elements))
    assert (ours - theirs).abs().max() < 1e-13


def test_float64_accuracy_does_not_depend_on_default_dtype():
    """e3nn's D_from_matrix is float32-accurate under a float32 default; IrrepsAction stays float64-accurate."""
    assert torch.get_default_dtype() == torch.float32
    group = SO3()
    act = IrrepsAction("1x2e + 1x3o")
    g, h = group.sample(8, torch.Generator().manual_seed(2)), group.sample(8, torch.Generator().manual_seed(3))
    lhs = act.matrices(group, g) @ act.matrices(group, h)
    assert (lhs - act.matrices(group, group.compose(g, h))).abs().max() < 1e-12


def test_vector_convention_and_translation_group():
    """1o is rotated by R itself (e3nn >= 0.2.2 order); under Translation(3) irreps features do not change."""
    group = O3()
    g = group.sample(5, torch.Generator().manual_seed(4))
    v = torch.randn(5, 7, 3, dtype=F64)
    assert (IrrepsAction("1x1o")(group, g, v) - actions.Vectors()(group, g, v)).abs().max() < 1e-13
    assert (IrrepsAction("1x1e")(group, g, v) - actions.Vectors(pseudo=True)(group, g, v)).abs().max() < 1e-13
    t = Translation(3, integer=False)
    x = torch.randn(5, 9, dtype=F64)
    assert torch.allclose(IrrepsAction("1x0e + 1x1o + 1x2e")(t, t.sample(5), x), x, atol=1e-14, rtol=0)


def test_cartesian_points_and_translation(f64_default):
    """'cartesian_points' inputs: spherical harmonics of points; translations via a separate Translation(3) symmetry."""
    sh_irreps = o3.Irreps.spherical_harmonics(3)

    class CentredSH(nn.Module):
        irreps_in, irreps_out = "cartesian_points", sh_irreps

        def forward(self, pos):  # [B, N, 3] -> [B, N, dim]
            return o3.spherical_harmonics(sh_irreps, pos - pos.mean(1, keepdim=True), normalize=False)

    model = CentredSH()
    pos = torch.randn(4, 6, 3, dtype=F64)
    sym = symmetry_for_e3nn(model, group="o3")
    assert isinstance(sym.input_action, actions.Points)
    seed, ntrials = 11, 3
    errs, _ = _e3nn_error(model, pos, seed, ntrials, True, irreps_in="cartesian_points", irreps_out=sh_irreps)
    elements, parities = _replicate_e3nn_draw(seed, ntrials, True)
    per_element = orbit_errors(model, pos, sym, elements).errors.max(0).values
    for k in (0, 1):
        assert abs(per_element[torch.tensor(parities) == k].max().item() - float(errs[(k, False)][0])) < AGREE_TOL
    assert per_element.max() < 1e-10
    shifts = symmetry_for_e3nn(model, group="translation3d")
    assert orbit_errors(model, pos, shifts, Translation(3, integer=False).sample(5)).errors.max() < 1e-10
    no_centre = lambda p: o3.spherical_harmonics(sh_irreps, p, normalize=False)  # noqa: E731
    assert orbit_errors(no_centre, pos, shifts, torch.ones(3, 3, dtype=F64)).errors.max() > 1e-2


# ==================================================================================================== (iv) errors
def test_wrong_last_dimension_is_a_clear_error():
    model = _model("linear")
    sym = symmetry_from_irreps("1x0e + 1x1o", IRREPS_OUT, group="so3")
    with pytest.raises(RuntimeError, match=r"\[B, \.\.\., 4\].*last dimension 10.*irreps_in"):
        orbit_errors(model, _x(), sym, SO3().sample(2))
    sym = symmetry_from_irreps(IRREPS_IN, "1x0e + 1x1o", group="so3")
    with pytest.raises(RuntimeError, match=r"output has shape \(16, 12\).*irreps_out"):
        orbit_errors(model, _x(), sym, SO3().sample(2))
    act = IrrepsAction("1x1o")
    with pytest.raises(RuntimeError, match="keep a batch dimension"):
        act.check(SO3(), torch.randn(3, dtype=F64))
    with pytest.raises(RuntimeError, match="floating-point"):
        act.check(SO3(), torch.ones(2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="3D space"):
        act.check(SO2(), torch.randn(2, 3))
    with pytest.raises(ValueError, match="3D space"):
        symmetry_from_irreps("1x1o", "1x1o", group="so2")
    with pytest.raises(ValueError, match="e3nn irreps"):
        IrrepsAction("1x1q")


def test_symmetry_for_e3nn_reads_irreps():
    sym = symmetry_for_e3nn(o3.Linear("1x1o + 1x0e", "1x1o + 1x0e"), group="o3", name="lin")
    assert sym.kind == "equivariant" and sym.name == "lin" and sym.error_name == "max_abs"
    assert isinstance(sym.group, O3)
    inv = symmetry_for_e3nn(o3.Norm("2x1o"))
    assert inv.kind == "invariant"
    pts = symmetry_from_irreps("cartesian_points", "cartesian_points", group="so3")
    assert pts.kind == "equivariant" and isinstance(pts.input_action, actions.Points)
    assert symmetry_from_irreps(None, "1x1o").input_action.is_identity


def test_several_inputs_or_outputs_not_implemented():
    tp = o3.FullyConnectedTensorProduct("1x1o", "1x1o", "1x0e")
    with pytest.raises(NotImplementedError, match="single-input"):
        symmetry_for_e3nn(tp)

    class TwoOutputs(nn.Module):
        irreps_in, irreps_out = "1x1o", ["1x1o", "1x0e"]

    with pytest.raises(NotImplementedError, match="several outputs"):
        symmetry_for_e3nn(TwoOutputs())
    with pytest.raises(ValueError, match="no `irreps_in` or `irreps_out`"):
        symmetry_for_e3nn(nn.Linear(3, 3))


def test_missing_e3nn_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(e3nn_common, "_E3NN_AVAILABLE", False)
    with pytest.raises(ModuleNotFoundError, match=r"pip install eqmonitor\[e3nn\]"):
        IrrepsAction("1x1o")
    with pytest.raises(ModuleNotFoundError, match=r"pip install eqmonitor\[e3nn\]"):
        symmetry_from_irreps("1x1o", "1x1o")


def test_importing_does_not_import_e3nn():
    code = (
        "import sys, eqmonitor, eqmonitor.integrations, eqmonitor.integrations.e3nn as m; "
        "assert m._E3NN_AVAILABLE; assert 'e3nn' not in sys.modules, 'e3nn imported eagerly'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ==================================================================================================== (v) parity
def test_parity_vector_vs_pseudovector(f64_default):
    identity = nn.Identity()
    x = torch.randn(10, 3, dtype=F64)
    o3_elements = O3().sample(32, torch.Generator().manual_seed(5))
    reflections = torch.linalg.det(O3().matrix(o3_elements)) < 0
    assert reflections.any() and (~reflections).any()

    vector = orbit_errors(identity, x, symmetry_from_irreps("1x1o", "1x1o", group="o3"), o3_elements)
    assert vector.errors.max() < 1e-12

    pseudo = orbit_errors(identity, x, symmetry_from_irreps("1x1o", "1x1e", group="o3"), o3_elements)
    per_element = pseudo.errors.max(0).values
    assert per_element[reflections].min() > 1e-2 and per_element[~reflections].max() < 1e-12

    so3 = orbit_errors(identity, x, symmetry_from_irreps("1x1o", "1x1e", group="so3"), SO3().sample(16))
    assert so3.errors.max() < 1e-12

    # e3nn agrees: the parity case is broken, the rotation case is not
    errs = equivariance_error(identity, [x], irreps_in=["1x1o"], irreps_out=["1x1e"], ntrials=3, do_translation=False)
    assert errs[(0, False)].max() < 1e-12 and errs[(1, False)].max() > 1e-2


# ==================================================================================================== layer-wise
class DeclaredLinear(nn.Module):
    """A plain torch Linear that declares irreps it does not respect (it mixes vector components freely)."""

    def __init__(self, irreps) -> None:
        super().__init__()
        self.irreps_in = self.irreps_out = o3.Irreps(irreps)
        self.lin = nn.Linear(self.irreps_in.dim, self.irreps_in.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


class Halve(nn.Module):
    """A plain torch module that is equivariant for any linear action: its inherited action must not blame it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x


class E3Net(nn.Module):
    """``o3.Linear -> Gate -> (bug) -> Halve -> tensor square -> o3.Linear``, float64, invariant + vector out."""

    def __init__(self, bug: str = "none") -> None:
        super().__init__()
        torch.manual_seed(7)
        self.gate = Gate("4x0e", [torch.tanh], "2x0e", [torch.sigmoid], "2x1o")
        self.lin1 = o3.Linear(IRREPS_IN, self.gate.irreps_in)
        hidden = self.gate.irreps_out
        self.bug = {"none": nn.Identity(), "declared": DeclaredLinear(hidden), "tanh": nn.Tanh()}[bug]
        self.halve = Halve()
        self.tp = o3.FullyConnectedTensorProduct(hidden, hidden, "2x0e + 2x1o")
        self.lin2 = o3.Linear(self.tp.irreps_out, "1x0e + 1x1o")
        self.double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.halve(self.bug(self.gate(self.lin1(x))))
        return self.lin2(self.tp(h, h))


@pytest.fixture
def e3_layers():
    from eqmonitor.functional.layerwise import layer_errors

    sym = symmetry_from_irreps(IRREPS_IN, "1x0e + 1x1o", group="o3", name="o3")
    elements = O3().sample(6, torch.Generator().manual_seed(3))
    return lambda bug: layer_errors(E3Net(bug).eval(), _x(8), sym, elements)


def test_layer_errors_e3nn_network_has_no_failing_layer(e3_layers):
    res = e3_layers("none")
    # adapted modules are whole blocks (the Gate's inner modules are not measured apart); the tensor product (two
    # inputs) is measured on its output only
    assert res.names == ["lin1", "gate", "halve", "tp", "lin2"]
    assert res.first_failing is None
    assert float(res.cumulative.max()) < 1e-12
    iso = res.isolated.flatten(1).amax(1)
    assert float(iso.nan_to_num().max()) < 1e-12
    assert torch.isnan(iso[res.names.index("tp")]) and not torch.isnan(iso[res.names.index("halve")])


@pytest.mark.parametrize("bug", ["declared", "tanh"])
def test_layer_errors_names_the_non_equivariant_layer_in_an_e3nn_network(e3_layers, bug):
    """A plain Linear that declares irreps (adapter) and an elementwise tanh on vector irreps (no irreps of its own:
    it inherits the Gate's output irreps) are both named."""
    res = e3_layers(bug)
    assert res.first_failing == "bug"
    iso, cum = res.per_layer("isolated"), res.per_layer("cumulative")
    assert float(iso[res.names.index("bug")]) > 1e-3  # tanh is nearly linear on these small features: 7e-3
    assert float(cum[res.names.index("lin1")]) < 1e-12 and float(cum[res.names.index("gate")]) < 1e-12
    assert float(cum[res.names.index("lin2")]) > 1e-3  # carried on, not caused
    assert float(iso[res.names.index("lin2")]) < 1e-12
    assert ("bug.lin" in res.names) is False


def test_feature_adapter_reads_irreps():
    sym = symmetry_from_irreps("1x1o", "1x1o", group="o3")
    adapter = eqm_e3nn.feature_adapter_for_e3nn(o3.Linear("1x0e + 1x1o", "1x1o"), sym)
    assert isinstance(adapter.input_action, IrrepsAction) and adapter.output_action.irreps == o3.Irreps("1x1o")
    tp = eqm_e3nn.feature_adapter_for_e3nn(o3.FullyConnectedTensorProduct("1x1o", "1x1o", "1x0e"), sym)
    assert tp.input_action is None and isinstance(tp.output_action, actions.Invariant)
    assert eqm_e3nn.feature_adapter_for_e3nn(nn.Linear(3, 3), sym) is None
    planar = Symmetry.from_spec(name="c4", group="c4")  # irreps are O(3) representations: not for planar groups
    assert eqm_e3nn.feature_adapter_for_e3nn(o3.Linear("1x1o", "1x1o"), planar) is None


def test_old_names_warn_and_still_work():
    module = o3.Linear("1x0e + 1x1o", "1x1o")
    sym = symmetry_for_e3nn(module, group="o3")
    with pytest.warns(DeprecationWarning, match="symmetry_for_e3nn"):
        old = eqm_e3nn.symmetry_for_module(module, group="o3")
    assert repr(old) == repr(sym)
    with pytest.warns(DeprecationWarning, match="feature_adapter_for_e3nn"):
        adapter = eqm_e3nn.feature_adapter(module, sym)
    assert adapter.output_action.irreps == o3.Irreps("1x1o")
