"""Graph and point networks in the layer-wise test: e3nn's ``gate_points_2101.Network`` on clouds of points.

Its layers run on the node features of all the clouds of a forward at once, ``[B · N, dim]``. Declared with
``node_features(network, nodes_per_sample=N)``, they are measured per sample; the network and its ``Compose``
blocks (containers of graph convolutions) are measured layer by layer, so that a broken gate is named.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("e3nn")
from e3nn.nn import Gate  # noqa: E402
from e3nn.nn.models.gate_points_2101 import Network  # noqa: E402

import eqmonitor as eqm  # noqa: E402
from eqmonitor.functional import layer_errors  # noqa: E402
from eqmonitor.integrations.e3nn import feature_adapter_for_e3nn, node_features, symmetry_from_irreps  # noqa: E402

N_POINTS = 8
LAYERS = ["net.layers.0.first", "net.layers.0.second", "net.layers.1.first", "net.layers.1.second", "net.layers.2"]


class TanhGate(Gate):
    """The injected bug: an elementwise tanh after the gate, on its vector outputs too."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.tanh(super().forward(features))


class Clouds(nn.Module):
    """``[B, N, 3]`` clouds -> e3nn's network on the flattened nodes (``batch`` = the cloud of each node) -> ``[B, 3]``,
    as users feed ``gate_points`` networks."""

    def __init__(self, broken: bool = False, declare: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = Network(
            irreps_in=None,
            irreps_hidden="8x0e + 8x0o + 4x1e + 4x1o",
            irreps_out="1x1o",
            irreps_node_attr=None,
            irreps_edge_attr="0e + 1o + 2e",
            layers=2,
            max_radius=2.5,
            number_of_basis=8,
            radial_layers=1,
            radial_neurons=16,
            num_neighbors=3.0,
            num_nodes=float(N_POINTS),
        )
        if broken:
            self.net.layers[0].second.__class__ = TanhGate
        if declare:
            node_features(self.net, nodes_per_sample=N_POINTS)

    def forward(self, pos: torch.Tensor) -> torch.Tensor:
        b, n, _ = pos.shape
        batch = torch.arange(b, device=pos.device).repeat_interleave(n)
        return self.net({"pos": pos.reshape(-1, 3), "batch": batch})


@pytest.fixture(autouse=True)
def f64_default():
    """e3nn builds its constants (spherical harmonics, radial bases) in the default dtype, as its own tests run."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture
def probe():
    x = torch.randn(3, N_POINTS, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sym = symmetry_from_irreps("cartesian_points", "1x1o", group="so3")
    return x, sym, sym.group.sample(4, torch.Generator().manual_seed(1))


def test_correct_graph_network_has_no_failing_layer(probe):
    x, sym, els = probe
    # one forward per 3 clouds: the radius graph over larger batches picks up rounding self-loops (batch coupling)
    res = layer_errors(Clouds(), x, sym, els, max_batch=3)
    assert res.names == LAYERS  # the network and its Compose blocks are not one layer
    assert res.first_failing is None
    assert float(res.cumulative.max()) < 1e-12
    gates = [LAYERS.index("net.layers.0.second"), LAYERS.index("net.layers.1.second")]
    assert float(res.isolated[gates].max()) < 1e-12
    assert bool(torch.isnan(res.isolated[LAYERS.index("net.layers.0.first")]).all())  # several inputs: output only


def test_broken_gate_is_named_at_the_defaults(probe):
    x, sym, els = probe
    res = layer_errors(Clouds(broken=True), x, sym, els)
    assert res.first_failing == "net.layers.0.second" and res.types[1] == "TanhGate"
    iso = res.per_layer("isolated")
    assert float(iso[1]) > 1e-2 and float(iso[3]) < 1e-12  # the later, correct gate is not blamed
    report = eqm.audit(Clouds(broken=True), x, sym, layers=True, n_elements=4)
    assert report.verdict == "broken" and "first failing layer: net.layers.0.second" in report.to_text()


def test_undeclared_graph_network_is_a_clear_error(probe):
    x, sym, els = probe
    with pytest.raises(ValueError, match=r"graph layer.*node_features\(network, nodes_per_sample=N\)"):
        layer_errors(Clouds(declare=False), x, sym, els, layers=["net.layers.0.first"])


def test_node_features_adapter_and_bad_declarations():
    model = Clouds()
    sym = symmetry_from_irreps("cartesian_points", "1x1o", group="so3")
    gate = feature_adapter_for_e3nn(model.net.layers[0].second, sym)
    nodes = torch.randn(2 * N_POINTS, gate.output_action.irreps.dim)
    assert gate.unwrap(nodes).shape == (2, N_POINTS, nodes.shape[1])
    assert torch.equal(gate.wrap(gate.unwrap(nodes)), nodes)
    with pytest.raises(ValueError, match="not samples of 8 nodes"):
        gate.unwrap(nodes[:-1])
    assert feature_adapter_for_e3nn(model.net, sym) is None  # containers of graph convolutions
    assert feature_adapter_for_e3nn(model.net.layers[0], sym) is None
    with pytest.raises(TypeError, match="positive int"):
        node_features(model.net, nodes_per_sample=0)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        node_features(lambda x: x, nodes_per_sample=3)
