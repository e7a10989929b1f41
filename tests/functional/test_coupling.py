"""Batch coupling: models whose output for one sample depends on the rest of their batch are warned about once, and
the chunkings that keep batches apart measure them as they are used; uncoupled models get no warning."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import eqmonitor as eqm
from eqmonitor.functional import BatchCouplingWarning, orbit_errors
from eqmonitor.functional._chunking import pair_ranges
from eqmonitor.functional._coupling import regrouped_gap

F64 = torch.float64


class CloudRadiusGraph(nn.Module):
    """An invariant point-cloud model ``[B, P, 3] -> [B, 1]`` with its radius graph built over the concatenated batch
    by ``torch.cdist`` (no per-sample batch index), the naive way: ``Σ_edges exp(-d²)`` per cloud. Alone, a cloud is
    rotation-invariant; in a batch, clouds that overlap in space share edges."""

    def __init__(self, radius: float = 1.5) -> None:
        super().__init__()
        self.radius = radius
        self.scale = nn.Parameter(torch.ones((), dtype=F64))

    def forward(self, pos: torch.Tensor) -> torch.Tensor:
        b, p, _ = pos.shape
        flat = pos.reshape(-1, 3)
        d = torch.cdist(flat, flat)
        edges = (d < self.radius) & (d > 0)
        node = (torch.exp(-d.square()) * edges).sum(1)
        return self.scale * node.reshape(b, p).sum(1, keepdim=True)


class BatchCentred(nn.Module):
    """``h(x − mean over the batch of x)``: the group-averaged CNN ``h`` on batch-centred images (a batch statistic
    computed by hand). A batch moved as a whole by a quarter turn moves its mean too, so it stays invariant."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.h = eqm.demos.GroupAveraged(eqm.demos.SmallCNN(size=16), eqm.groups.Cyclic(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.h(x - x.mean(0, keepdim=True))


def batch_norm_without_running_stats() -> nn.Module:
    """BatchNorm with ``track_running_stats=False`` normalises by the batch's statistics even in eval mode."""
    torch.manual_seed(0)
    averaged = eqm.demos.GroupAveraged(eqm.demos.SmallCNN(size=16), eqm.groups.Cyclic(4))
    return nn.Sequential(nn.BatchNorm2d(1, track_running_stats=False), averaged)


@pytest.fixture
def clouds():
    return torch.randn(6, 8, 3, dtype=F64, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def so3():
    return eqm.Symmetry.from_spec(name="so3", group="so3", input="points", output="invariant")


@pytest.fixture
def images():
    return torch.randn(12, 1, 16, 16, generator=torch.Generator().manual_seed(0))


def coupling_warnings(record) -> list:
    return [w for w in record if issubclass(w.category, BatchCouplingWarning)]


# ------------------------------------------------------------------------------------------------- detection
def test_radius_graph_over_the_batch_is_warned_once_and_per_sample_measures_it(clouds, so3):
    model = CloudRadiusGraph()
    elements = so3.group.sample(8, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        mixed = orbit_errors(model, clouds, so3, elements)
        again = orbit_errors(model, clouds, so3, elements)  # the same model and inputs: no second warning
    found = coupling_warnings(record)
    assert len(found) == 1
    text = str(found[0].message)
    assert "CloudRadiusGraph" in text and "chunking='per_sample'" in text and "torch.cdist" in text
    assert float(mixed.max()) > 1e-3 and torch.equal(mixed.errors, again.errors)  # measured on eqmonitor's batches
    with warnings.catch_warnings():
        warnings.simplefilter("error", BatchCouplingWarning)
        alone = orbit_errors(model, clouds, so3, elements, chunking="per_sample")
    assert float(alone.max()) < 1e-12  # each cloud alone is invariant at float64 precision


@pytest.mark.parametrize("make", [BatchCentred, batch_norm_without_running_stats], ids=["batch_mean", "batch_norm"])
def test_batch_statistics_are_warned_and_per_element_measures_them(make, images, c4):
    model = make().eval()
    # chunks of 20 pairs cut orbits apart (an auto-tuned chunk that holds all 48 pairs would hide the coupling:
    # the statistics of a whole orbit are invariant)
    with pytest.warns(BatchCouplingWarning, match="batch statistics"):
        mixed = orbit_errors(model, images, c4, c4.group.all_elements(), max_batch=20)
    assert float(mixed.max()) > 1e-3
    with warnings.catch_warnings():
        warnings.simplefilter("error", BatchCouplingWarning)
        whole = orbit_errors(model, images, c4, c4.group.all_elements(), chunking="per_element")
        blocks = orbit_errors(model, images, c4, c4.group.all_elements(), chunking="per_element", max_batch=4)
    assert float(whole.max()) < 1e-6 and float(blocks.max()) < 1e-6  # a batch moved as a whole stays invariant


def test_uncoupled_models_get_no_warning(trained_cnn, c4_averaged, digits, rotation, c4):
    x, _ = digits
    with warnings.catch_warnings():
        warnings.simplefilter("error", BatchCouplingWarning)
        plain = orbit_errors(trained_cnn, x, rotation, rotation.group.grid(8))
        averaged = orbit_errors(c4_averaged, x, c4, c4.group.all_elements())
        orbit_errors(c4_averaged, x[:2], c4, c4.group.all_elements()[:2], max_batch=4)  # the monitor's dry run
    assert float(averaged.max()) < 1e-6 and float(plain.mean()) > 1e-2


def test_chunkings_agree_on_an_uncoupled_model(trained_cnn, digits, rotation):
    x, y = digits[0][:10], digits[1][:10]
    elements = rotation.group.grid(6)
    ref = orbit_errors(trained_cnn, x, rotation, elements, labels=y)
    for chunking, max_batch in (("per_element", "auto"), ("per_element", 3), ("per_sample", "auto"), ("per_sample", 7)):
        res = orbit_errors(trained_cnn, x, rotation, elements, labels=y, chunking=chunking, max_batch=max_batch)
        torch.testing.assert_close(res.errors, ref.errors, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(res.confidence, ref.confidence, rtol=1e-4, atol=1e-6)


def test_regrouped_gap_and_pair_ranges():
    x = torch.randn(9, 3, dtype=F64)
    assert float(regrouped_gap(lambda t: t.sin(), x, x.sin())) == 0.0
    assert float(regrouped_gap(lambda t: t - t.mean(0), x, x - x.mean(0))) > 0.1
    assert regrouped_gap(lambda t: t - t.mean(0), x[:1], x[:1]) is None  # one pair: nothing to regroup
    # the forwards cover every pair once; "per_element" never crosses an element and repeats the sample blocks
    for chunking in ("mixed", "per_element", "per_sample"):
        ranges = pair_ranges(5, 3, 2, chunking)
        assert [i for a, b in ranges for i in range(a, b)] == list(range(15))
    assert all(a // 5 == (b - 1) // 5 for a, b in pair_ranges(5, 3, 2, "per_element"))
    assert {(a % 5, b - a) for a, b in pair_ranges(5, 3, 2, "per_element")} == {(0, 2), (2, 2), (4, 1)}


# ------------------------------------------------------------------------------------------------ pass-through
def test_chunking_reaches_audit_metric_and_monitor(images, c4):
    from eqmonitor.metric import EquivarianceError

    model = BatchCentred().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", BatchCouplingWarning)
        assert eqm.audit(model, images, c4, chunking="per_element", progress=False).verdict == "exact"
        eqm.assert_equivariant(model, images, c4, chunking="per_element")
        metric = EquivarianceError(c4, chunking="per_element")
        metric.update(model, images)
    assert float(metric.summary().error_max) < 1e-6
    monitor = eqm.EquivarianceMonitor(c4, chunking="per_sample")
    assert monitor.options.chunking == "per_sample"
    for make in (
        lambda: orbit_errors(model, images, c4, [1], chunking="per_batch"),
        lambda: EquivarianceError(c4, chunking="pairs"),
        lambda: eqm.EquivarianceMonitor(c4, chunking=None),
    ):
        with pytest.raises(ValueError, match="Expected `chunking` to be one of"):
            make()


# ------------------------------------------------------------------------------------------- e3nn's own network
def test_e3nn_gate_points_network_agrees_with_e3nn_once_batches_are_kept_apart():
    """e3nn's ``gate_points_2102`` network on 3 clouds of 8 points: e3nn's own test measures float precision; mixed
    chunks (> 25 points per forward, where ``torch.cdist`` rounds self-distances above 0) do not, and are warned
    about; ``per_sample`` and ``per_element`` agree with e3nn."""
    pytest.importorskip("e3nn")
    from e3nn import o3
    from e3nn.nn.models.gate_points_2102 import Network
    from e3nn.util.test import equivariance_error

    from eqmonitor.integrations.e3nn import symmetry_from_irreps

    irreps_out = o3.Irreps("2x0o + 2x1o + 2x2e")
    old = torch.get_default_dtype()
    torch.set_default_dtype(F64)  # as e3nn's own tests run: e3nn builds its constants in the default dtype
    try:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            net = Network(None, "5x0e + 5x0o + 5x1e + 5x1o", irreps_out, "0e", o3.Irreps.spherical_harmonics(3),
                          layers=2, max_radius=2.0, number_of_basis=5, radial_layers=1, radial_neurons=16,
                          num_neighbors=4.0, num_nodes=8)  # fmt: skip
            pos = torch.randn(3, 8, 3)

        class Clouds(nn.Module):  # [B, P, 3] -> [B, irreps_out.dim], one graph per cloud (e3nn's `batch` index)
            def __init__(self) -> None:
                super().__init__()
                self.net = net

            def forward(self, p: torch.Tensor) -> torch.Tensor:
                batch = torch.arange(p.shape[0], device=p.device).repeat_interleave(p.shape[1])
                return self.net({"pos": p.reshape(-1, 3), "batch": batch})

        model = Clouds()
        e3nn_err = equivariance_error(lambda p: model(p.reshape(3, 8, 3)), [pos.reshape(-1, 3)],
                                      irreps_in=["cartesian_points"], irreps_out=[irreps_out], ntrials=1)  # fmt: skip
    finally:
        torch.set_default_dtype(old)
    assert max(float(v.max()) for v in e3nn_err.values()) < 1e-12
    sym = symmetry_from_irreps("cartesian_points", irreps_out, group="so3")
    elements = sym.group.sample(8, generator=torch.Generator().manual_seed(0))
    with pytest.warns(BatchCouplingWarning):
        mixed = orbit_errors(model, pos, sym, elements)
    assert float(mixed.max()) > 1e-6
    for chunking, max_batch in (("per_sample", "auto"), ("per_element", 3)):
        res = orbit_errors(model, pos, sym, elements, chunking=chunking, max_batch=max_batch)
        assert float(res.max()) < 1e-12
