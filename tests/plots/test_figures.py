"""Cached NERO figures: every kind renders RGB, shows the results' own numbers (read back from the artists), is
updated in place rather than rebuilt, and renders exactly what a freshly built figure renders from the same data."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from eqmonitor.plots.canvas import pca_2d
from eqmonitor.plots.figures import FigureCache
from eqmonitor.plots.payload import layer_data, orbit_data

SPECS = ["so2", "c4", "d4", "translation", "scale", "flip"]


def _inked(img: np.ndarray) -> float:
    return float((img < 235).any(axis=-1).mean())


def _np(t) -> np.ndarray:
    return t.detach().double().cpu().numpy()


@pytest.mark.parametrize("spec", SPECS)
def test_every_kind_is_a_non_blank_rgb_image(probe, spec):
    cache = FigureCache()
    images = {
        "aggregate": cache.aggregate([(0, probe(spec)), (10, probe(spec, seed=1))]),
        "individual": cache.individual(probe(spec)),
        "individual, no labels": cache.individual(probe(spec, labels=False)),
        "dimension reduction": cache.dimension_reduction(probe(spec)),
    }
    for name, img in images.items():
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[-1] == 3, name
        assert _inked(img) > 0.02, f"{name} is blank"
    assert images["aggregate"].shape == ((400, 900, 3) if spec == "translation" else (500, 650, 3))
    assert images["individual"].shape[1] == 1100 and images["individual, no labels"].shape[1] in (550, 650)


def test_layer_table_is_a_non_blank_rgb_image(layers):
    img = FigureCache().layers(layers())
    n = len(layers().names)
    assert img.dtype == np.uint8 and img.shape == (round(100 * max(2.5, 0.45 * n + 1.5)), 850, 3)
    assert _inked(img) > 0.05


@pytest.mark.parametrize("spec", SPECS)
def test_a_cached_figure_after_updates_renders_what_a_fresh_one_renders(probe, spec):
    """Data that moves the scale, the worst sample and the non-finite rows between checks: the static layer must
    never go stale."""
    checks = [probe(spec, seed=0), probe(spec, seed=1, bright=(1,)), probe(spec, seed=2), probe(spec, seed=3)]
    checks = checks if spec in ("so2", "d4") else checks[:3]  # two in-place updates each; more for the polar ones
    cache = FigureCache()
    for i in range(1, len(checks)):
        overlay = [(10 * j, r) for j, r in enumerate(checks[i - 1 : i + 1])]
        for kind, draw in [
            ("aggregate", lambda c, o=overlay: c.aggregate(o)),
            ("individual", lambda c, r=checks[i]: c.individual(r)),
            ("dimension reduction", lambda c, r=checks[i]: c.dimension_reduction(r)),
        ]:
            np.testing.assert_array_equal(draw(cache), draw(FigureCache()), err_msg=f"{kind} at check {i}")
    assert cache.built == 3  # one figure per kind, updated in place ever since
    for kind in ("nero_aggregate", "nero_individual", "nero_dr"):
        assert cache.chart(f"sym-{spec}", kind).layer_draws[0] == 1  # the base layer drawn once, then reused
    assert cache.updated == 3 * (len(checks) - 1)


def test_a_cached_layer_table_after_updates_renders_what_a_fresh_one_renders(layers):
    first = layer_data(layers(0))
    moved = dataclasses.replace(first, isolated=first.isolated * 1e-3, cumulative=first.cumulative * 10)
    other = dataclasses.replace(layer_data(layers(1)), first_failing="conv3")
    cache = FigureCache()
    for data in (first, moved, other, first):
        np.testing.assert_array_equal(cache.layers(data), FigureCache().layers(data))
    assert cache.built == 1


def test_the_layout_is_rebuilt_only_when_it_must_change(probe):
    cache = FigureCache()
    so2 = [probe("so2", seed=s) for s in range(4)]
    for n in range(1, 7):  # the overlay fills up: the figure is built for 6 curves
        cache.aggregate([(s, so2[s % 4]) for s in range(n)])
    cache.individual(so2[0])
    cache.individual(so2[1])
    assert cache.built == 2
    cache.aggregate([(s, so2[s % 4]) for s in range(7)])  # more than it was built for
    assert cache.built == 3
    cache.aggregate([(0, probe("c4"))])  # another symmetry: a figure of its own
    assert cache.built == 4 and len(cache) == 3
    cache.discard("sym-so2")
    assert cache.figure("sym-so2", "nero_aggregate") is None and len(cache) == 1
    assert cache.figure("sym-c4", "nero_aggregate") is cache.chart("sym-c4", "nero_aggregate").fig


# ==================================================================================================== read back
def _circle_values(panel, line) -> tuple[np.ndarray, np.ndarray]:
    """(angle, value) of a curve drawn at (r cos θ, r sin θ) on a circle panel of ring ticks [lo, ..., top]."""
    ticks = panel.scale_key()
    x, y = line.get_data()
    return np.arctan2(y, x) % (2 * np.pi), ticks[0] + np.hypot(x, y) * (ticks[-1] - ticks[0])


def test_aggregate_curves_are_the_per_element_means_of_each_check(probe):
    checks = [probe("so2", seed=s) for s in range(3)]
    cache = FigureCache()
    cache.aggregate([(100 * i, r) for i, r in enumerate(checks)])
    chart = cache.chart("sym-so2", "nero_aggregate")
    for res, row in zip(checks, chart.panel.lines):
        angle, value = _circle_values(chart.panel, row[0])
        order = np.argsort(_np(res.elements[:, 0]))
        np.testing.assert_allclose(value[:-1], _np(res.per_element())[order], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(angle[:-1], _np(res.elements[:, 0])[order] % (2 * np.pi), atol=1e-9)
        assert value[-1] == pytest.approx(value[0])  # closed around the circle
    assert [t.get_text() for t in chart.legend.texts if t.get_visible()] == ["step 0", "step 100", "step 200"]
    colors = {tuple(row[0].get_color()) for row in chart.panel.lines[:3]}
    assert len(colors) == 3  # the check as colour
    title = chart.title.get_text()
    assert "sym-so2 (so2)" in title and "relative error" in title and "interquartile" in title
    assert [row[0].get_visible() for row in chart.panel.lines] == [True] * 3 + [False] * 3  # built for 6
    band = chart.panel.bands[2][0].get_paths()[0].vertices
    hi = np.hypot(*band.T).max()
    v = np.nanquantile(_np(checks[-1].values()), 0.75, axis=0).max()
    ticks = chart.panel.scale_key()
    assert ticks[0] + hi * (ticks[-1] - ticks[0]) == pytest.approx(v)


def test_dihedral_parts_and_legend(probe):
    cache = FigureCache()
    cache.aggregate([(0, probe("d4")), (5, probe("d4", seed=1))])
    chart = cache.chart("sym-d4", "nero_aggregate")
    shown = [t.get_text() for t in chart.legend.texts if t.get_visible()]
    assert shown == ["step 0", "step 5", "unflipped", "flipped"]
    el, pe = probe("d4", seed=1).elements.numpy(), _np(probe("d4", seed=1).per_element())
    for flip, line in enumerate(chart.panel.lines[1]):
        sel = el[:, 1] == flip
        _, value = _circle_values(chart.panel, line)
        np.testing.assert_allclose(value[:-1], pe[sel][np.argsort(el[sel, 0])], rtol=1e-9, atol=1e-12)


def test_individual_is_the_worst_sample_with_its_confidence(probe):
    res = probe("so2", labels=True, bright=(2,))
    cache = FigureCache()
    cache.individual(res)
    chart = cache.chart("sym-so2", "nero_individual")
    worst = res.worst()[0]
    order = np.argsort(_np(res.elements[:, 0]))
    errors, confidence = chart.panels
    _, value = _circle_values(errors, errors.lines[0][0])
    np.testing.assert_allclose(value[:-1], _np(res.values()[worst])[order], rtol=1e-9, atol=1e-12)
    _, conf = _circle_values(confidence, confidence.lines[0][0])
    np.testing.assert_allclose(conf[:-1], _np(res.confidence[worst])[order], rtol=1e-9, atol=1e-12)
    assert confidence.scale_key()[-1] == 1.0  # confidence on a fixed 0–1 scale
    ref = np.hypot(*confidence.reference.get_data())
    assert confidence.reference.get_visible() and np.allclose(ref, float(res.confidence_ref[worst]))
    title = chart.title.get_text()
    assert f"sample {worst}" in title and "12 non-finite entries masked" in title


def test_translation_heat_map_over_shifts(probe):
    res = probe("translation")
    cache = FigureCache()
    cache.aggregate([(0, res)])
    mesh = cache.chart("sym-translation", "nero_aggregate").panels[0].mappable
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(5, 5), _np(res.per_element()).reshape(5, 5))


def test_dimension_reduction_is_the_pca_of_the_finite_orbits(probe):
    res = probe("so2", n=8, bright=(1, 4))
    cache = FigureCache()
    cache.dimension_reduction(res)
    chart = cache.chart("sym-so2", "nero_dr")
    v = _np(res.values())
    keep = np.isfinite(v).all(1)
    coords, explained = pca_2d(v[keep])
    np.testing.assert_allclose(np.asarray(chart.points.get_offsets()), coords, atol=1e-12)
    np.testing.assert_allclose(chart.points.get_array(), v[keep].mean(1))
    kept = np.nonzero(keep)[0]
    expected = sorted(kept[np.argsort(-v[keep].mean(1))[:3]].tolist())
    assert sorted(int(t.get_text()) for t in chart.outliers) == expected
    assert "2 samples with non-finite outputs excluded (1, 4)" in chart.title.get_text()
    assert f"PC1 ({100 * explained[0]:.0f}% of variance)" == chart.xlabel.get_text()
    lo, hi = chart.points.get_clim()
    assert lo <= v[keep].mean(1).min() and hi >= v[keep].mean(1).max()
    with pytest.raises(ValueError, match="at least 3 samples"):
        cache.dimension_reduction(probe("so2", bright=(0, 1, 2, 3)))


def test_layer_table_bars_and_culprit(layers):
    lr = layers()
    cache = FigureCache()
    cache.layers(lr)
    chart = cache.chart("sym-c4", "layers")
    for kind in ("isolated", "cumulative"):
        mean = _np(lr.per_layer(kind))
        ends = np.array([b.get_x() + b.get_width() for b in chart.bars[kind]])
        measured = mean > chart.ax.get_xlim()[0]
        np.testing.assert_allclose(ends[measured], mean[measured], rtol=1e-9)
    culprit = lr.names.index("conv2")
    assert chart.ticklabels[culprit].get_color() == "red" and chart.ticklabels[0].get_color() != "red"
    assert chart.highlight.get_visible() and chart.highlight.get_y() == culprit - 0.5
    assert chart.ax.get_xscale() == "log" and "first failing layer: conv2" in chart.title.get_text()


def test_orbit_data_is_numpy_and_remembered(probe):
    res = probe("so2", bright=(3,))
    data = orbit_data(res)
    assert orbit_data(res) is data and orbit_data(data) is data
    np.testing.assert_array_equal(data.values, _np(res.values()))
    assert data.n_nonfinite == res.n_nonfinite and data.worst_sample() == res.worst()[0]
    assert data.values.dtype == np.float64 and data.layout.kind == "circle"
    with pytest.raises(ValueError, match="`which`"):
        orbit_data(res, which="loss")


def test_cached_figures_never_import_pyplot_and_load_matplotlib_lazily():
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        import eqmonitor.plots.figures, eqmonitor.plots.worker
        assert "matplotlib" not in sys.modules, "importing the cached figures imported matplotlib"
        from eqmonitor.plots.figures import FigureCache
        from eqmonitor.plots.payload import Layout, OrbitData
        layout = Layout("circle", np.linspace(0, 6, 8), None, np.zeros(8, dtype=np.int64), ("",), (("-", "o", 3),),
                        "angle", "linear", None, "so2", "SO2()")
        data = OrbitData("rot", "relative error", np.random.default_rng(0).random((5, 8)), None, None, 0, layout)
        cache = FigureCache()
        assert all(img.ndim == 3 for img in (cache.aggregate([(0, data)]), cache.individual(data),
                                             cache.dimension_reduction(data)))
        assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported"
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
