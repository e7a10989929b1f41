"""EquivarianceError (torchmetrics Metric): against orbit_errors on all the data, additive over updates and
processes (merge_state and a real 2-process gloo run), non-finite outputs counted apart, elements checked."""

from __future__ import annotations

import dataclasses
import socket
import sys
from dataclasses import replace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import eqmonitor as eqm
from eqmonitor.functional import orbit_errors
from eqmonitor.metric import EquivarianceError
from eqmonitor.summary import _summary_compute, _summary_update

C4 = {"name": "c4", "group": "c4", "input": "image", "output": "invariant"}
ROT = {"name": "rotation", "group": "so2", "input": "image", "output": "invariant"}


class NaNWhere(nn.Module):
    """A small CNN whose output is NaN when the top-left pixel is positive (so NaN at some elements only)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = eqm.demos.SmallCNN(size=12, width=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inner(x)
        return torch.where((x[:, 0, 0, 0] > 0.5)[:, None], torch.full_like(y, float("nan")), y)


def _cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return eqm.demos.SmallCNN(size=12, width=4).eval()


def _data(n: int = 24, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 1, 12, 12, generator=torch.Generator().manual_seed(seed))


def _rows(res, lo: int, hi: int):
    """The same OrbitErrors restricted to samples ``lo:hi``."""
    per_sample = ("errors", "abs_errors", "rel_errors", "nonfinite", "flips", "confidence", "confidence_ref")
    return replace(res, **{f: getattr(res, f)[lo:hi] for f in per_sample if getattr(res, f) is not None})


def _reference(res, which: str = "errors") -> dict:
    """Naive statistics of one OrbitErrors, computed pair by pair over the finite entries (summary field names)."""
    v = res.values(which)
    finite = torch.isfinite(v)
    flat = v[finite]
    per_mean = torch.stack([v[finite[:, k], k].mean() for k in range(v.shape[1])])
    per_max = torch.stack([v[finite[:, k], k].max() for k in range(v.shape[1])])
    per_std = torch.stack([v[finite[:, k], k].std(unbiased=False) for k in range(v.shape[1])])
    return {
        "error_mean": flat.mean(),
        "error_max": flat.max(),
        "error_std": flat.std(unbiased=False),
        "per_element_mean": per_mean,
        "per_element_max": per_max,
        "per_element_std": per_std,
        "nonfinite_count": (~finite).sum(),
    }


_FIELDS = ("error_mean", "error_max", "error_std", "per_element_mean", "per_element_max", "per_element_std",
           "nonfinite_count")  # fmt: skip


def _assert_close(out, ref: dict, rtol: float = 1e-12) -> None:
    for key, value in ref.items():
        torch.testing.assert_close(getattr(out, key).double(), value.double(), rtol=rtol, atol=0.0, msg=key)


def _assert_same(a, b, **tol) -> None:
    """Two summaries agree field by field (``None`` where one is ``None``)."""
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        assert (x is None) == (y is None), f.name
        if x is not None:
            torch.testing.assert_close(x, y, equal_nan=True, msg=f.name, **tol)


# ==================================================================================================== values
def test_compute_matches_orbit_errors_on_all_data():
    model, x = _cnn(), _data()
    metric = EquivarianceError(ROT, n_elements=8)
    for chunk in x.split(8):
        metric.update(model, chunk)
    out = metric.summary()
    res = orbit_errors(model, x, metric.symmetry, metric.elements)
    torch.testing.assert_close(metric.elements, metric.symmetry.group.grid(8))
    _assert_close(out, _reference(res), rtol=1e-5)  # float32 forwards of different batch compositions
    assert out.error_mean > 0.01  # a plain CNN is not rotation invariant: the test can fail
    assert metric.compute() == out.error_mean and metric.per_element().shape == out.per_element_max.shape == (8,)


def test_several_updates_equal_one_update():
    model, x = _cnn(), _data()
    one, many = EquivarianceError(ROT, n_elements=6), EquivarianceError(ROT, n_elements=6)
    res = orbit_errors(model, x, one.symmetry, one.elements)
    one.update(res)
    for lo, hi in [(0, 5), (5, 6), (6, 24)]:
        many.update(_rows(res, lo, hi))
    a, b = one.summary(), many.summary()
    for key in _FIELDS + ("nonfinite", "exact_error", "interp_error"):
        torch.testing.assert_close(getattr(a, key), getattr(b, key), rtol=1e-13, atol=1e-15, msg=key)
    _assert_close(a, _reference(res))


def test_nonfinite_outputs_are_counted_not_averaged():
    torch.manual_seed(0)
    model, x = NaNWhere().eval(), _data(16)
    metric = EquivarianceError(C4, which="rel_errors")
    metric.update(model, x)
    out = metric.summary()
    res = orbit_errors(model, x, metric.symmetry, metric.elements)
    assert 0 < res.n_nonfinite < res.errors.numel()  # some pairs only, so the test means something
    assert int(out.nonfinite_count) == res.n_nonfinite
    assert float(out.nonfinite) == res.n_nonfinite / res.errors.numel()  # the fraction, as the monitor logs it
    assert torch.isfinite(out.error_mean) and torch.isfinite(out.per_element_mean).all()
    _assert_close(out, _reference(res, "rel_errors"))
    finite = res.values("rel_errors").isfinite()
    assert int(metric.count.sum()) == int(finite.sum())
    # mean over all finite pairs, not the mean of per-element means (the counts differ per element)
    assert len(set(finite.sum(0).tolist())) > 1
    assert not torch.isclose(out.error_mean, out.per_element_mean.mean(), rtol=1e-9)


def test_infinite_error_values_count_as_nonfinite():
    values = torch.tensor([[1.0, float("inf")], [3.0, 2.0], [float("nan"), 4.0]], dtype=torch.float64)
    stats = _summary_update(values, torch.zeros(3, 2, dtype=torch.bool), torch.ones(3, 2, dtype=torch.bool))
    assert stats["nonfinite"].tolist() == [1, 1] and stats["count"].tolist() == [2, 2]
    out = _summary_compute(stats, torch.ones(2, dtype=torch.bool), with_flips=True)
    assert out.error_mean.item() == 2.5 and out.error_max.item() == 4.0 and out.flip_rate.item() == 1.0
    assert out.nonfinite.item() == 2 / 6 and out.nonfinite_count.item() == 2


def test_all_nonfinite_gives_nan_summaries():
    metric = EquivarianceError(C4)
    metric.update(lambda x: torch.full((x.shape[0], 3), float("nan")), _data(4))
    out = metric.summary()
    assert int(out.nonfinite_count) == 16 and float(out.nonfinite) == 1.0
    assert out.error_mean.isnan() and out.error_max.isnan() and out.per_element_max.isnan().all()
    assert metric.compute().isnan()


def test_flip_rate_only_for_class_scores():
    model, x = _cnn(), _data(8)
    metric = EquivarianceError(C4)
    metric.update(model, x)
    out = metric.summary()
    res = orbit_errors(model, x, metric.symmetry, metric.elements)
    torch.testing.assert_close(out.flip_rate, res.flips.double().mean())
    regression = EquivarianceError(C4)
    regression.update(lambda x: x.mean(dim=(2, 3)), x)  # one output column: no classes, no flips
    assert regression.summary().flip_rate is None and "flip_rate" not in regression.summary().scalars()


class LinearNaNWhere(nn.Module):
    """A linear classifier on the pixels (its top class changes under rotations), NaN where the top-left pixel is
    above 0.5 (so at some elements only)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(144, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(x.flatten(1))
        return torch.where((x[:, 0, 0, 0] > 0.5)[:, None], torch.full_like(y, float("nan")), y)


class AllNaN(nn.Module):
    """A classifier whose every output is NaN."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 3), float("nan"))


def _naive_flip_rate(model, x: torch.Tensor, metric: EquivarianceError) -> float:
    """Pair by pair: the fraction of pairs with finite outputs whose top-1 class changed (NaN when none)."""
    sym = metric.symmetry
    x0 = sym.input_action.prepare(sym.group, x)
    ref = model(x0)
    flips = count = 0
    for g in metric.elements:
        out = model(sym.input_action(sym.group, g[None].expand(x.shape[0], -1), x0))
        ok = torch.isfinite(out).all(1) & torch.isfinite(ref).all(1)
        flips += int((ok & (out.argmax(1) != ref.argmax(1))).sum())
        count += int(ok.sum())
    return flips / count if count else float("nan")


@pytest.mark.parametrize("kind", ["partly_nan", "all_nan"])
def test_orbit_error_statistics_agree_with_the_metric(kind):
    torch.manual_seed(0)
    model, x = (LinearNaNWhere().eval() if kind == "partly_nan" else AllNaN()), _data(16)
    metric = EquivarianceError(C4, max_batch=32)
    with torch.no_grad():
        metric.update(model, x)
        res = orbit_errors(model, x, metric.symmetry, metric.elements, max_batch=32)
        naive_flips = _naive_flip_rate(model, x, metric)
    kept = EquivarianceError(C4, max_batch=32, keep_samples=True)
    kept.update(res)
    out, stats = metric.summary(), res.summary()
    _assert_same(kept.summary(), stats, rtol=0, atol=0)  # one summary function: the same bits
    assert out.error_p95 is None and stats.error_p95 is not None  # p95 needs the kept per-pair values
    assert set(stats.scalars()) == {"error_mean", "error_max", "error_p95", "nonfinite", "exact_error", "flip_rate"}
    assert all(v.dtype == torch.float64 and v.ndim == 0 for v in stats.scalars().values())
    pairs = res.errors.numel()
    assert int(res.nonfinite_count()) == int(out.nonfinite_count) == res.n_nonfinite
    assert float(stats.nonfinite) == float(out.nonfinite) == int(out.nonfinite_count) / pairs
    for key in ("error_mean", "error_max", "flip_rate", "exact_error"):
        torch.testing.assert_close(getattr(stats, key), getattr(out, key), rtol=0, atol=0, equal_nan=True, msg=key)
    torch.testing.assert_close(stats.flip_rate.item(), naive_flips, rtol=1e-12, atol=0, equal_nan=True)
    if kind == "partly_nan":
        assert 0 < res.n_nonfinite < pairs and 0 < naive_flips < 1
        finite = res.errors[~res.nonfinite]
        torch.testing.assert_close(stats.error_p95, torch.quantile(finite, 0.95).double(), rtol=0, atol=0)
        torch.testing.assert_close(stats.exact_error, stats.error_mean, rtol=0, atol=0)  # C4: every element exact
        assert stats.interp_error is None
    else:
        assert int(out.nonfinite_count) == pairs and float(stats.nonfinite) == 1.0
        assert res.flips.isnan().all()  # undefined, not "no flip"
        for key in ("error_mean", "error_max", "error_p95", "exact_error", "flip_rate"):
            assert getattr(stats, key).isnan(), key
        assert out.error_mean.isnan() and out.error_max.isnan() and out.flip_rate.isnan()


def test_deprecated_statistics_keep_their_old_keys():
    res = orbit_errors(_cnn(), _data(4), eqm.Symmetry.from_spec(**ROT), eqm.groups.SO2().grid(8))
    with pytest.warns(DeprecationWarning, match="summary"):
        old = res.statistics()
    new = res.summary()
    assert set(old) == {"mean", "max", "p95", "nonfinite", "exact_mean", "interp_mean", "flip_rate"}
    pairs = {"mean": "error_mean", "max": "error_max", "p95": "error_p95", "nonfinite": "nonfinite",
             "exact_mean": "exact_error", "interp_mean": "interp_error", "flip_rate": "flip_rate"}  # fmt: skip
    for o, n in pairs.items():
        torch.testing.assert_close(old[o], getattr(new, n), rtol=0, atol=0, msg=o)


def test_exact_and_interpolated_means_split_the_pairs():
    model, x = _cnn(), _data(8)
    res = orbit_errors(model, x, EquivarianceError(ROT).symmetry, eqm.groups.SO2().grid(8))
    assert res.exact.any() and not res.exact.all()
    torch.testing.assert_close(res.exact_mean(), res.subset(res.exact).errors.mean().double(), rtol=1e-15, atol=0)
    torch.testing.assert_close(res.interp_mean(), res.subset(~res.exact).errors.mean().double(), rtol=1e-15, atol=0)
    torch.testing.assert_close(res.mean(), res.errors.mean().double(), rtol=1e-15, atol=0)
    torch.testing.assert_close(res.quantile(0.95), torch.quantile(res.errors.flatten(), 0.95), rtol=0, atol=0)


def test_flip_stats_leave_out_nonfinite_and_undefined_pairs():
    values = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=torch.float64)
    nonfinite = torch.tensor([[False, True], [False, False], [False, False]])
    flips = torch.tensor([[1.0, 1.0], [float("nan"), 0.0], [0.0, 1.0]], dtype=torch.float64)
    exact = torch.ones(2, dtype=torch.bool)
    stats = _summary_update(values, nonfinite, flips)
    assert stats["flips"].tolist() == [1, 1] and stats["flip_count"].tolist() == [2, 2]
    assert stats["flip_pairs"].tolist() == [3, 3]
    assert _summary_compute(stats, exact).flip_rate.item() == 0.5
    none = _summary_update(values, torch.ones(3, 2, dtype=torch.bool), flips)
    assert _summary_compute(none, exact).flip_rate.isnan()  # a classifier with no finite pair: NaN, not absent
    assert _summary_compute(_summary_update(values, nonfinite), exact).flip_rate is None


def test_update_with_a_dict_output_model():
    class DictModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = _cnn()

        def forward(self, x):
            return {"logits": self.net(x), "features": x.flatten(1)}

    model, x = DictModel().eval(), _data(8)
    keyed = EquivarianceError({**C4, "output_key": "logits"}, max_batch=16)
    keyed.update(model, x)
    plain = EquivarianceError(C4, max_batch=16)
    plain.update(model.net, x)
    _assert_same(keyed.summary(), plain.summary(), rtol=0, atol=0)
    with pytest.raises(TypeError, match="pass `output_key=`"):
        EquivarianceError(C4).update(model, x)


def test_keep_samples_concatenates_rows():
    model, x = _cnn(), _data(10)
    metric = EquivarianceError(C4, keep_samples=True)
    metric.update(model, x[:4])
    metric.update(model, x[4:])
    res = orbit_errors(model, x, metric.symmetry, metric.elements)
    torch.testing.assert_close(torch.cat(metric.samples), res.errors.double(), rtol=1e-5, atol=1e-7)
    assert "samples" not in EquivarianceError(C4)._defaults  # no per-sample state by default


def test_group_averaged_model_measures_zero_on_c4(c4_averaged, digits):
    metric = EquivarianceError(C4)
    metric.update(c4_averaged, digits[0][:16])
    out = metric.summary()
    assert float(out.error_max) < 1e-5
    assert int(out.nonfinite_count) == 0 and float(out.flip_rate) == 0.0
    plain = EquivarianceError(C4)
    plain.update(c4_averaged.model, digits[0][:16])
    assert float(plain.compute()) > 1e-3  # without averaging the same network is not invariant


def test_update_leaves_model_unchanged():
    torch.manual_seed(0)
    model = eqm.demos.SmallCNN(size=12, width=4, batch_norm=True, dropout=0.5).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    metric = EquivarianceError(ROT, n_elements=4)
    metric.update(model, _data(6))
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_forward_returns_batch_value_and_accumulates():
    model, x = _cnn(), _data(8)
    metric = EquivarianceError(C4)
    batch = metric(model, x[:4])
    metric(model, x[4:])
    single = EquivarianceError(C4)
    single.update(model, x[:4])
    torch.testing.assert_close(batch, single.compute())
    assert int(metric.count.sum()) == 8 * 4


# ==================================================================================================== errors
def test_mismatched_elements_raise():
    model, x = _cnn(), _data(4)
    metric = EquivarianceError(C4)
    sym = metric.symmetry
    with pytest.raises(ValueError, match="elements"):
        metric.update(orbit_errors(model, x, sym, torch.tensor([0, 1])))  # K = 2, not 4
    with pytest.raises(ValueError, match="elements"):
        metric.update(orbit_errors(model, x, sym, torch.tensor([1, 0, 2, 3])))  # same K, other order
    rot = eqm.Symmetry.from_spec(**ROT)
    with pytest.raises(ValueError, match="group"):
        metric.update(orbit_errors(model, x, rot, rot.group.grid(4)))
    kl = eqm.Symmetry.from_spec(**C4, error="kl")
    with pytest.raises(ValueError, match="distance"):
        metric.update(orbit_errors(model, x, kl, kl.group.all_elements()))
    other = EquivarianceError(C4, elements=[0, 2])
    with pytest.raises(ValueError, match="elements"):
        metric.merge_state(other)
    assert int(metric.count.sum()) == 0  # nothing was accumulated by the failed updates


def test_bad_arguments_raise():
    with pytest.raises(TypeError, match="symmetry"):
        EquivarianceError("c4")
    with pytest.raises(ValueError, match="which"):
        EquivarianceError(C4, which="mean")
    with pytest.raises(ValueError, match="n_elements"):
        EquivarianceError(ROT, n_elements=0)
    with pytest.raises(ValueError, match="max_batch"):
        EquivarianceError(C4, max_batch=0)
    with pytest.raises(ValueError, match="at least one"):
        EquivarianceError(C4, elements=torch.zeros(0, 1, dtype=torch.long))
    metric = EquivarianceError(C4)
    with pytest.raises(TypeError, match="x"):
        metric.update(_cnn())
    res = orbit_errors(_cnn(), _data(2), metric.symmetry, metric.elements)
    with pytest.raises(TypeError, match="not both"):
        metric.update(res, _data(2))


# ==================================================================================================== state
def test_reset_restores_empty_state():
    model, x = _cnn(), _data(8)
    metric = EquivarianceError(C4)
    metric.update(model, x)
    metric.reset()
    assert int(metric.count.sum()) == 0 and torch.isinf(metric.max).all()
    metric.update(model, x[:3])
    fresh = EquivarianceError(C4)
    fresh.update(model, x[:3])
    _assert_same(metric.summary(), fresh.summary())


def test_merge_state_equals_one_metric_on_all_data():
    model, x = _cnn(), _data(20)
    a, b, whole = (EquivarianceError(ROT, n_elements=6, keep_samples=True) for _ in range(3))
    res = orbit_errors(model, x, whole.symmetry, whole.elements)
    a.update(_rows(res, 0, 13))
    b.update(_rows(res, 13, 20))
    whole.update(res)
    a.merge_state(b)
    merged, ref = a.summary(), whole.summary()
    _assert_same(merged, ref, rtol=1e-13, atol=1e-15)
    rows, whole_rows = torch.cat(a.samples), torch.cat(whole.samples)  # torchmetrics puts the incoming rows first
    assert torch.equal(rows, torch.cat([whole_rows[13:], whole_rows[:13]])) or torch.equal(rows, whole_rows)


@pytest.mark.filterwarnings("ignore:The ``compute`` method:UserWarning")  # loaded states, no update: expected
def test_state_dict_round_trip():
    model, x = _cnn(), _data(6)
    metric = EquivarianceError(C4)
    metric.persistent(True)
    metric.update(model, x)
    restored = EquivarianceError(C4)
    restored.persistent(True)
    restored.load_state_dict(metric.state_dict())
    _assert_same(restored.summary(), metric.summary())


def test_dict_and_yaml_construction():
    yaml = pytest.importorskip("yaml")
    cfg = yaml.safe_load(
        "symmetry: {name: rotation, group: so2, input: image, output: invariant, error: max_abs}\n"
        "n_elements: 12\nwhich: errors\nmax_batch: 64\n"
    )
    metric = EquivarianceError(**cfg)
    assert metric.symmetry.name == "rotation" and metric.symmetry.error_name == "max_abs"
    torch.testing.assert_close(metric.elements, metric.symmetry.group.grid(12))
    bounded = EquivarianceError({**C4, "error": "symmetric_relative"})
    assert bounded._plot_upper_bound == 1.0 and metric._plot_upper_bound is None
    assert (EquivarianceError.higher_is_better, EquivarianceError.full_state_update) == (False, False)
    assert (EquivarianceError.is_differentiable, EquivarianceError.plot_lower_bound) == (False, 0.0)


def test_elements_survive_dtype_and_device_moves():
    metric = EquivarianceError(ROT, n_elements=5)
    before = metric.elements.clone()
    metric.half().to("cpu")
    assert torch.equal(metric.elements, before) and metric.elements.dtype == torch.float64


# ==================================================================================================== plot
def test_plot_returns_figure_without_pyplot(monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)  # any pyplot import now fails
    model, x = _cnn(), _data(4)
    metric = EquivarianceError(ROT, n_elements=8)
    metric.update(model, x)
    val = metric.summary()
    fig, ax = metric.plot()
    assert isinstance(fig, Figure) and ax.figure is fig
    torch.testing.assert_close(torch.as_tensor(ax.lines[0].get_ydata()), val.per_element_mean)
    torch.testing.assert_close(torch.as_tensor(ax.lines[0].get_xdata()), torch.rad2deg(metric.elements[:, 0]))
    fig2, ax2 = metric.plot([val, val])  # one curve per value (e.g. per epoch), plus the mean line
    assert len([ln for ln in ax2.lines if len(ln.get_xdata()) == 8]) == 2
    polar = Figure().add_subplot(projection="polar")
    fig3, ax3 = metric.plot(val, ax=polar)
    assert ax3 is polar and fig3 is polar.figure


# ==================================================================================================== DDP
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model, x = NaNWhere().eval(), _data(18)
        metric = EquivarianceError(C4, keep_samples=True, max_batch=32)
        shard = x[:11] if rank == 0 else x[11:]  # uneven shards
        for chunk in shard.split(4):
            metric.update(model, chunk)
        torch.save(dataclasses.asdict(metric.summary()), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo")
def test_two_process_ddp_equals_single_process(tmp_path):
    # fork where the platform has it (the children inherit the imports: ~1 s instead of ~10 s), else spawn
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method=method)
    torch.manual_seed(0)
    model, x = NaNWhere().eval(), _data(18)
    single = EquivarianceError(C4, keep_samples=True, max_batch=32)
    single.update(model, x)
    ref = dataclasses.asdict(single.summary())
    assert int(ref["nonfinite_count"]) > 0 and ref["error_p95"] is not None
    for rank in (0, 1):
        out = torch.load(tmp_path / f"rank{rank}.pt")
        assert set(out) == set(ref)
        for key in ref:
            if ref[key] is None:
                assert out[key] is None, key
            else:
                torch.testing.assert_close(out[key], ref[key], rtol=1e-5, atol=1e-7, equal_nan=True, msg=key)


def test_consensus_reference_accumulates_the_errors_against_the_consensus(digits):
    x, _ = digits
    torch.manual_seed(0)
    model = eqm.demos.SmallCNN().eval()
    spec = {"name": "c4", "group": "c4", "input": "image", "output": "invariant", "error": "kl"}
    metric = EquivarianceError(spec, reference="consensus")
    metric.update(model, x[:8])
    metric.update(model, x[8:16])
    sym = metric.symmetry
    expected = eqm.functional.consensus_errors(model, x[:16], sym, metric.elements)
    torch.testing.assert_close(metric.compute(), expected.mean(), rtol=1e-6, atol=0)
    torch.testing.assert_close(metric.per_element(), expected.mean(0), rtol=1e-6, atol=0)
    assert metric.compute() != EquivarianceError(spec)(model, x[:16])  # another reference, another number
    _, cons = eqm.functional.orbit_errors_with_consensus(model, x[:4], sym, metric.elements)
    metric.update(cons)  # precomputed errors of the same reference
    with pytest.raises(ValueError, match="reference 'consensus'.*against 'identity'"):
        metric.update(orbit_errors(model, x[:4], sym, metric.elements))
    with pytest.raises(ValueError, match="Expected `reference` to be one of"):
        EquivarianceError(spec, reference="truth")
