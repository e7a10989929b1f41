"""NERO plots: each layout shows the result's own numbers (read back from the artists), overlays, PCA against a numpy
reference, non-finite samples excluded, Agg rendering to RGB, and pyplot never imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

import eqmonitor as eqm
from eqmonitor.plots import aggregate, dimension_reduction, figure_to_array, individual, layer_table, new_figure
from eqmonitor.plots.nero import pca_2d

F = eqm.functional.orbit_errors


def _cnn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return eqm.demos.SmallCNN(size=12, width=4).eval()


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 1, 12, 12, generator=g), torch.randint(0, 3, (6,), generator=g)


def _image_result(spec: str, images, seed: int = 0, labels: bool = False):
    x, y = images
    sym = eqm.Symmetry.from_spec(name=f"sym-{spec}", group=spec, input="image", output="invariant")
    shuffled = torch.randperm(12, generator=torch.Generator().manual_seed(0))  # plots must sort by angle
    grid = {"so2": lambda g: g.grid(12)[shuffled], "translation": lambda g: g.grid(5), "scale": lambda g: g.grid(5)}
    elements = grid.get(spec, lambda g: g.all_elements())(sym.group)
    return F(_cnn(seed), x, sym, elements, labels=y if labels else None, max_batch=64)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()


# ==================================================================================================== aggregate
@pytest.mark.parametrize("spec", ["so2", "c4"])
def test_aggregate_polar_curve_is_the_per_element_mean(images, spec):
    res = _image_result(spec, images)
    fig = aggregate(res)
    ax = fig.axes[0]
    assert ax.name == "polar"
    angles = _np(res.elements[:, 0]) * (2 * np.pi / 4 if spec == "c4" else 1.0)
    order = np.argsort(angles)
    line = ax.lines[0]
    x, y = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
    np.testing.assert_allclose(x[:-1], angles[order])
    np.testing.assert_allclose(y[:-1], _np(res.per_element())[order], rtol=1e-12)
    assert y[-1] == y[0] and x[-1] == pytest.approx(x[0] + 2 * np.pi)  # closed around the circle
    band = np.concatenate([p.vertices for p in ax.collections[0].get_paths()])[:, 1]  # the interquartile band
    v = _np(res.values())
    assert band.max() == pytest.approx(np.quantile(v, 0.75, axis=0).max())
    assert band.min() == pytest.approx(np.quantile(v, 0.25, axis=0).min())
    title = ax.get_title()
    assert f"sym-{spec}" in title and "relative error" in title


def test_epochs_overlay_one_line_per_result_in_colormap_order(images):
    results = [_image_result("so2", images, seed=s) for s in range(3)]
    fig = aggregate(results, labels=["epoch 0", "epoch 1", "epoch 2"])
    ax = fig.axes[0]
    assert len(ax.lines) == 3
    for line, res in zip(ax.lines, results):
        order = np.argsort(_np(res.elements[:, 0]))
        np.testing.assert_allclose(np.asarray(line.get_ydata())[:-1], _np(res.per_element())[order], rtol=1e-12)
    colors = {tuple(line.get_color()) for line in ax.lines}
    assert len(colors) == 3
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["epoch 0", "epoch 1", "epoch 2"]


def test_dihedral_draws_unflipped_and_flipped_curves(images):
    res = _image_result("d4", images)
    ax = aggregate(res).axes[0]
    assert ax.name == "polar" and len(ax.lines) == 2
    pe, el = _np(res.per_element()), res.elements.numpy()
    for flip, line in enumerate(ax.lines):
        sel = el[:, 1] == flip
        expected = pe[sel][np.argsort(el[sel, 0])]
        np.testing.assert_allclose(np.asarray(line.get_ydata())[:-1], expected, rtol=1e-12)
        assert ("flipped" if flip else "unflipped") in line.get_label()


def test_translation_heat_map_over_shifts(images):
    res = _image_result("translation", images)
    fig = aggregate(res)
    ax = fig.axes[0]
    assert ax.name == "rectilinear" and ax.yaxis_inverted()
    mesh = ax.collections[0]
    # Translation2d.grid(5) is a meshgrid in "xy" order: element k = (dx_k % 5, dy_k // 5) -> row dy, column dx
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(5, 5), _np(res.per_element()).reshape(5, 5))
    assert "sym-translation" in ax.get_title()
    assert len(aggregate([res, _image_result("translation", images, seed=1)]).axes) == 3  # 2 panels + colorbar


def test_scale_line_over_log_scale_factor(images):
    res = _image_result("scale", images)
    ax = aggregate(res).axes[0]
    assert ax.get_xscale() == "log"
    np.testing.assert_allclose(ax.lines[0].get_xdata(), np.exp(_np(res.elements[:, 0])))
    np.testing.assert_allclose(ax.lines[0].get_ydata(), _np(res.per_element()), rtol=1e-12)


def test_finite_groups_points_per_element(images):
    res = _image_result("flip", images)
    ax = aggregate(res).axes[0]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), _np(res.per_element()), rtol=1e-12)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["flip=0", "flip=1"]

    sets = torch.randn(4, 5, 3, generator=torch.Generator().manual_seed(3))
    sym = eqm.Symmetry.from_spec(name="perm", group="s5", input="set", output="invariant")
    torch.manual_seed(0)
    res = F(eqm.demos.DeepSets(), sets, sym, sym.group.testing_elements())
    ax = aggregate(res, spread="std").axes[0]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), _np(res.per_element()), rtol=1e-12)


def test_so3_grid_one_curve_per_axis_else_index_line():
    points = torch.randn(4, 6, 3, generator=torch.Generator().manual_seed(4))
    sym = eqm.Symmetry.from_spec(name="points", group="so3", input="points", output="invariant")
    torch.manual_seed(0)
    model = eqm.demos.DeepSets()
    res = F(model, points, sym, sym.group.grid(8))
    ax = aggregate(res).axes[0]
    assert len(ax.lines) == 3
    pe = _np(res.per_element())
    for b, line in enumerate(ax.lines):
        np.testing.assert_allclose(line.get_xdata(), np.arange(8) * 45.0)
        np.testing.assert_allclose(line.get_ydata(), pe[8 * b : 8 * b + 8], rtol=1e-12)
    res = F(model, points, sym, sym.group.sample(5, generator=torch.Generator().manual_seed(0)))
    ax = aggregate(res).axes[0]
    assert len(ax.lines) == 1 and "element index" in ax.get_xlabel()


def test_classes_split_the_aggregate(images):
    res = _image_result("c4", images)
    classes = images[1]
    ax = aggregate(res, classes=classes).axes[0]
    kinds = classes.unique().tolist()
    assert len(ax.lines) == len(kinds)
    for k, line in zip(kinds, ax.lines):
        assert line.get_label() == f"class {k}"
        np.testing.assert_allclose(line.get_ydata()[:-1], _np(res.values()[classes == k].mean(0)), rtol=1e-12)


def test_confidence_and_flip_rate_aggregates(images):
    res = _image_result("c4", images, labels=True)
    ax = aggregate(res, which="confidence").axes[0]
    np.testing.assert_allclose(ax.lines[0].get_ydata()[:-1], _np(res.confidence.mean(0)), rtol=1e-12)
    assert ax.get_ylim() == (0.0, 1.0) and "confidence" in ax.get_title()
    ax = aggregate(res, which="flips").axes[0]
    np.testing.assert_allclose(ax.lines[0].get_ydata()[:-1], _np(res.flips.double().mean(0)), rtol=1e-12)


# ==================================================================================================== individual
def test_individual_is_one_sample_with_its_confidence(images):
    res = _image_result("so2", images, labels=True)
    fig = individual(res, sample=-2)
    polar = [a for a in fig.axes if a.name == "polar"]
    assert len(polar) == 2  # error and confidence panels
    order = np.argsort(_np(res.elements[:, 0]))
    np.testing.assert_allclose(polar[0].lines[0].get_ydata()[:-1], _np(res.values()[4])[order], rtol=1e-12)
    np.testing.assert_allclose(polar[1].lines[0].get_ydata()[:-1], _np(res.confidence[4])[order], rtol=1e-12)
    reference = polar[1].lines[1].get_ydata()
    assert np.allclose(reference, float(res.confidence_ref[4]))  # dotted circle at the untransformed input
    assert polar[1].get_ylim() == (0.0, 1.0)
    assert "sample 4" in fig._suptitle.get_text()

    assert len(individual(res, 0, confidence=False).axes) == 1
    with pytest.raises(ValueError, match="`sample`"):
        individual(res, 6)


def test_drawing_into_a_given_axes_returns_its_figure(images):
    res = _image_result("scale", images)
    fig = new_figure()
    left, right = fig.subfigures(1, 2)
    ax = right.add_subplot()
    assert aggregate(res, ax=ax) is fig and individual(res, 1, ax=left.add_subplot()) is fig
    np.testing.assert_allclose(ax.lines[0].get_ydata(), _np(res.per_element()), rtol=1e-12)


# ==================================================================================================== non-finite
class _NaNForBright(nn.Module):
    """A CNN whose output is NaN for samples brighter than 50 (a row of non-finite outputs)."""

    def __init__(self) -> None:
        super().__init__()
        self.cnn = _cnn(0)

    def forward(self, x):
        bad = x.flatten(1).amax(1) > 50
        return self.cnn(x).masked_fill(bad[:, None], float("nan"))


def _nan_result(images, bad=(1, 4)):
    x = images[0].clone()
    x[list(bad)] = 100.0
    sym = eqm.Symmetry.from_spec(name="rotation", group="c4")
    return F(_NaNForBright(), x, sym, sym.group.all_elements())


def test_pca_matches_numpy_svd_up_to_sign(images):
    res = _image_result("so2", images)
    fig = dimension_reduction(res, n_outliers=2)
    ax = fig.axes[0]
    v = _np(res.values())
    centred = v - v.mean(0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    reference = u[:, :2] * s[:2]
    offsets = np.asarray(ax.collections[0].get_offsets())
    for i in range(2):
        sign = np.sign(offsets[:, i] @ reference[:, i])
        np.testing.assert_allclose(offsets[:, i], sign * reference[:, i], atol=1e-10)
    np.testing.assert_allclose(ax.collections[0].get_array(), v.mean(1))
    assert sorted(int(t.get_text()) for t in ax.texts) == sorted(np.argsort(-v.mean(1))[:2].tolist())
    var = dimension_reduction(res, color_by="variance").axes[0].collections[0].get_array()
    np.testing.assert_allclose(var, v.var(1))
    coords, explained = pca_2d(v)
    assert explained.sum() <= 1 + 1e-12 and explained[0] >= explained[1]


def test_nonfinite_samples_are_excluded_and_never_crash(images):
    res = _nan_result(images)
    assert res.n_nonfinite == 8
    ax = dimension_reduction(res, n_outliers=6).axes[0]
    assert len(ax.collections[0].get_offsets()) == 4
    assert "2 samples with non-finite outputs excluded (1, 4)" in ax.get_title()
    assert {int(t.get_text()) for t in ax.texts} == {0, 2, 3, 5}
    np.testing.assert_allclose(aggregate(res).axes[0].lines[0].get_ydata()[:-1], _np(res.per_element()))
    assert "8 non-finite entries masked" in aggregate(res).axes[0].get_title()
    assert np.isnan(individual(res, 1).axes[0].lines[0].get_ydata()).all()

    all_bad = _nan_result(images, bad=range(6))
    for fig in (aggregate(all_bad), individual(all_bad, 0)):
        assert figure_to_array(fig, dpi=20).dtype == np.uint8
    with pytest.raises(ValueError, match="at least 3 samples"):
        dimension_reduction(_nan_result(images, bad=(0, 1, 2, 3)))
    with pytest.raises(ValueError, match="at least 3 samples"):
        dimension_reduction(_image_result("c4", (images[0][:2], images[1][:2])))


# ==================================================================================================== layers
def test_layer_table_bars_are_the_per_layer_means_and_the_culprit_is_highlighted():
    torch.manual_seed(0)
    model = eqm.demos.C4EquivariantCNN(width=4).eval()
    model.conv2 = nn.Conv2d(4, 4, 3, padding=1)  # the injected bug
    sym = eqm.Symmetry.from_spec(name="c4", group="c4")
    x = torch.randn(3, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    lr = eqm.functional.layer_errors(model, x, sym, sym.group.all_elements())
    assert lr.first_failing == "conv2"
    ax = layer_table(lr).axes[0]
    assert ax.get_xscale() == "log"
    iso_bars, cum_bars = ax.containers
    for bars, kind in ((iso_bars, "isolated"), (cum_bars, "cumulative")):
        mean = _np(lr.per_layer(kind))
        ends = np.array([p.get_x() + p.get_width() for p in bars.patches])
        measured = mean > 1e-300
        np.testing.assert_allclose(ends[measured], mean[measured], rtol=1e-9)
    labels = ax.get_yticklabels()
    culprit = lr.names.index("conv2")
    assert labels[culprit].get_color() == "red" and labels[0].get_color() != "red"
    assert any(list(line.get_xdata()) == [lr.tolerance] * 2 for line in ax.lines)
    assert "first failing layer: conv2" in ax.get_title()


# ==================================================================================================== rendering
def test_figure_to_array_is_rgb_uint8(images):
    fig = aggregate(_image_result("c4", images))
    img = figure_to_array(fig, dpi=40)
    w, h = fig.get_size_inches()
    assert img.dtype == np.uint8 and img.shape == (round(h * 40), round(w * 40), 3)
    assert (img < 250).any(axis=-1).mean() > 0.01  # something is drawn
    assert fig.dpi == 100
    with pytest.raises(TypeError, match="matplotlib.figure.Figure"):
        figure_to_array(img)


def test_bad_arguments_fail_early(images):
    so2, c4 = _image_result("so2", images), _image_result("c4", images)
    with pytest.raises(ValueError, match="one group"):
        aggregate([so2, c4])
    with pytest.raises(ValueError, match="one label per result"):
        aggregate([so2, so2], labels=["a"])
    with pytest.raises(ValueError, match="`which`"):
        aggregate(so2, which="loss")
    with pytest.raises(ValueError, match="no `confidence`"):
        aggregate(so2, which="confidence")
    with pytest.raises(ValueError, match="`color_by`"):
        dimension_reduction(so2, color_by="max")


def test_missing_matplotlib_says_how_to_install(monkeypatch, images):
    res = _image_result("c4", images)
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ModuleNotFoundError, match="pip install matplotlib"):
        aggregate(res)


def test_pyplot_is_never_imported():
    code = textwrap.dedent(
        """
        import sys, torch, eqmonitor as eqm, eqmonitor.plots as plots
        assert "matplotlib" not in sys.modules, "importing eqmonitor.plots imported matplotlib"
        sym = eqm.Symmetry.from_spec(name="c4", group="c4")
        x, y = torch.randn(4, 1, 12, 12), torch.tensor([0, 1, 2, 3])
        model = eqm.demos.SmallCNN(size=12, width=4)
        res = eqm.functional.orbit_errors(model, x, sym, sym.group.all_elements(), labels=y)
        lr = eqm.functional.layer_errors(model, x, sym, sym.group.all_elements())
        figs = [plots.aggregate([res, res]), plots.individual(res, 0), plots.dimension_reduction(res),
                plots.layer_table(lr)]
        assert all(plots.figure_to_array(f, dpi=30).ndim == 3 for f in figs)
        assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported"
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
