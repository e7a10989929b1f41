"""Cached NERO figures: one live figure per (symmetry, kind), updated in place at every check and rendered to RGB.

Building a matplotlib figure (axes, ticks, legend, polar grid) costs more than drawing it, and the monitor draws the
same four figures at every check: so each is built once for its layout and later checks only set its artists' data.
A figure is rebuilt only when its layout must change (another group or element grid, more overlaid checks than it
was built for, other layers). Axes are placed by hand (no layout engine), polar curves are drawn on ordinary axes
(:mod:`eqmonitor.plots.panels`), legends and tick labels are plain texts (:mod:`eqmonitor.plots.marks`), and what
does not change is drawn once and cached as a bitmap (:class:`eqmonitor.plots.chart.Chart`).

The information is that of :mod:`eqmonitor.plots.nero`'s one-shot plots: the aggregate (the last checks overlaid,
coloured oldest to newest, with the interquartile band), the worst sample's orbit with its confidence, the PCA of
orbit profiles (colour bar, outliers labelled) and the layer table.

Torch-free: inputs are :mod:`eqmonitor.plots.payload` data, which the figure worker process receives.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from eqmonitor.plots.canvas import _colors, _legend_labels, new_figure, pca_2d
from eqmonitor.plots.chart import Chart, Series, fmt, nice_range, summary
from eqmonitor.plots.layers_chart import LayerChart
from eqmonitor.plots.marks import LegendColumn, Ticks
from eqmonitor.plots.panels import CartesianPanel, CirclePanel, HeatPanel
from eqmonitor.plots.payload import LayerData, Layout, OrbitData, layer_data, orbit_data

__all__ = ["KINDS", "FigureCache"]

KINDS = ("nero_aggregate", "nero_individual", "nero_dr", "layers")
OVERLAY = 6  # curves an aggregate figure is built for (the monitor overlays the last 6 checks)
_BAND = {"iqr": "band: interquartile range", "std": "band: ±1 std", None: ""}


def _rect(fig: Any, left: float, bottom: float, width: float, height: float) -> list:
    """An axes rectangle given in inches, as figure fractions."""
    w, h = fig.get_size_inches()
    return [left / w, bottom / h, width / w, height / h]


def _title(fig: Any, y_inches: float = 0.08) -> Any:
    return fig.text(0.5, 1 - y_inches / fig.get_size_inches()[1], "", ha="center", va="top", fontsize="medium")


def _note(n_nonfinite: int) -> str:
    return f"{n_nonfinite} non-finite entries masked" if n_nonfinite else ""


def _lines(*parts: str) -> str:
    return "\n".join(p for p in parts if p)


def _panel(fig: Any, rect: list, layout: Layout, capacity: int, ylabel: str) -> Any:
    ax = fig.add_axes(rect)
    if layout.kind == "circle":
        return CirclePanel(ax, layout, capacity)
    return CartesianPanel(ax, layout, capacity, ylabel)


def _panel_rect(fig: Any, layout: Layout, left: float, width: float) -> list:
    """The axes rectangle of a panel ``width`` inches wide starting ``left`` inches from the figure's left edge."""
    h = fig.get_size_inches()[1]
    if layout.kind == "circle":
        side = min(width - 0.2, h - 0.75)
        return _rect(fig, left + (width - side) / 2, 0.1, side, side)
    bottom = 0.95 if layout.ticks is not None else 0.6
    return _rect(fig, left + 0.8, bottom, width - 1.1, h - bottom - 0.85)


def _heat_limits(rows: Sequence[np.ndarray], bounds: Optional[tuple]) -> tuple[float, float]:
    finite = np.concatenate([r[np.isfinite(r)] for r in rows] + [np.zeros(0)])
    lo, hi = bounds or ((float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0))
    return lo, hi if hi > lo else lo + 1.0


# ==================================================================================================== aggregate
class _Aggregate(Chart):
    """The last checks' mean curves overlaid (viridis: oldest to newest), the band on the last one (or all ≤ 3).

    Built for up to :data:`OVERLAY` curves, so the figure is reused while the overlay fills up (heat maps, one
    panel per check, are rebuilt as it grows).
    """

    @staticmethod
    def key(overlay: Sequence[tuple[int, OrbitData]], spread: Optional[str]) -> tuple:
        last, n = overlay[-1][1], len(overlay)
        count = n if last.layout.kind == "plane" else max(OVERLAY, n)
        return last.layout.signature(), last.metric, count, spread

    def __init__(self, overlay: Sequence[tuple[int, OrbitData]], spread: Optional[str], dpi: float) -> None:
        last = overlay[-1][1]
        layout, metric = last.layout, last.metric
        count = self.key(overlay, spread)[2]
        self.plane = layout.kind == "plane"
        super().__init__(new_figure((4.0 * count + 1, 4.0) if self.plane else (6.5, 5.0), dpi, layout=None))
        self.title = _title(self.fig)
        if self.plane:
            from matplotlib.colors import Normalize

            self.norm = Normalize(0.0, 1.0)
            rects = [_rect(self.fig, 0.75 + 4.0 * i, 0.5, 3.0, 2.7) for i in range(count)]
            self.panels = [HeatPanel(self.fig.add_axes(r), layout, self.norm) for r in rects]
            cax = self.fig.add_axes(_rect(self.fig, 4.0 * count + 0.05, 0.5, 0.15, 2.7))
            self.fig.colorbar(self.panels[0].mappable, cax=cax, label=f"mean {metric}")
            self.freeze([a for p in self.panels for a in p.dynamic()] + [cax], ([self.title], self.title.get_text))
            return
        rect = _panel_rect(self.fig, layout, 0.0, 4.55 if layout.kind == "circle" else 4.6)
        self.panel = _panel(self.fig, rect, layout, count, f"mean {metric}")
        if layout.kind == "circle":
            self.fig.text(4.6 / 6.5, 0.12 / 5.0, f"radius: mean {metric}", fontsize="small", color="0.3")
        rows = min(count, 8) + (len(layout.part_names) if len(layout.part_names) > 1 else 0)
        self.legend = LegendColumn(self.fig, 4.6 / 6.5, 1 - 0.7 / 5.0, rows)
        self.freeze(
            self.panel.dynamic() + self.legend.artists(),
            ([self.title], self.title.get_text),
            (self.panel.scale_artists(), self.panel.scale_key),
        )

    def update(self, overlay: Sequence[tuple[int, OrbitData]], spread: Optional[str]) -> None:
        n, last = len(overlay), overlay[-1][1]
        labels = _legend_labels([f"step {s}" for s, _ in overlay]) if n > 1 else [None]
        series = []
        for i, ((_, d), color, label) in enumerate(zip(overlay, _colors(n), labels)):
            banded = spread is not None and (n <= 3 or i == n - 1)
            series.append(Series(*summary(d.values, spread if banded else None), label, color))
        if self.plane:
            self.norm.vmin, self.norm.vmax = _heat_limits([s.center for s in series], last.bounds)
            for panel, s, (step, _) in zip(self.panels, series, overlay):
                panel.update(s.center, f"step {step}" if n > 1 else None)
        else:
            self.panel.update(series, last.bounds)
            self.legend.set(self.panel.legend_entries(series))
        band = "" if self.plane else _BAND[spread]
        head = f"{last.symmetry} ({last.layout.group}): mean {last.metric} over {last.n_samples} samples"
        self.title.set_text(_lines(head, band, _note(sum(d.n_nonfinite for _, d in overlay))))


# ==================================================================================================== individual
class _Individual(Chart):
    """One sample's values along its orbit, and its true-class confidence (dotted: at the untransformed input)."""

    @staticmethod
    def key(data: OrbitData) -> tuple:
        conf = data.confidence is not None, data.confidence_ref is not None
        return data.layout.signature(), data.metric, conf, data.bounds

    def __init__(self, data: OrbitData, dpi: float) -> None:
        from matplotlib.colors import Normalize
        from matplotlib.lines import Line2D

        layout = data.layout
        self.kinds = [data.metric] + (["confidence"] if data.confidence is not None else [])
        n, plane = len(self.kinds), layout.kind == "plane"
        width = 5.5 if n > 1 or plane else 6.5
        super().__init__(new_figure((width * n, 5.0), dpi, layout=None))
        self.panels, dynamic, semi = [], [], []
        for i, kind in enumerate(self.kinds):
            if plane:
                panel = HeatPanel(self.fig.add_axes(_rect(self.fig, width * i + 0.8, 0.55, 3.9, 3.7)), layout,
                                  Normalize(0.0, 1.0))  # fmt: skip
                cax = self.fig.add_axes(_rect(self.fig, width * i + 4.85, 0.55, 0.15, 3.7))
                self.fig.colorbar(panel.mappable, cax=cax, label=kind)
                dynamic.append(cax)
            else:
                panel = _panel(self.fig, _panel_rect(self.fig, layout, width * i, width), layout, 1, kind)
                styles = panel.legend_entries([Series(np.zeros(0))])
                entries = [(Line2D([], [], **style), label) for style, label in styles]
                if entries:  # static legends: drawn once, with the base layer
                    panel.ax.add_artist(panel.ax.legend(*zip(*entries), loc="upper right", fontsize="small"))
                semi += panel.scale_artists()
            self.panels.append(panel)
            dynamic += panel.dynamic()
            x = (width * i + width / 2) / (width * n)
            ref = kind == "confidence" and data.confidence_ref is not None and not plane
            label = f"{kind} (dotted: at the untransformed input)" if ref else kind
            self.fig.text(x, 1 - 0.5 / 5.0, label, ha="center", va="top", fontsize="medium")
        self.title = _title(self.fig)
        scales = [p for p in self.panels if hasattr(p, "scale_key")]
        self.freeze(dynamic, ([self.title], self.title.get_text), (semi, lambda: tuple(p.scale_key() for p in scales)))

    def update(self, data: OrbitData, sample: int) -> None:
        rows = [data.values[sample]] + ([data.confidence[sample]] if data.confidence is not None else [])
        for kind, panel, row in zip(self.kinds, self.panels, rows):
            bounds = (0.0, 1.0) if kind == "confidence" else data.bounds
            if isinstance(panel, HeatPanel):
                norm = panel.mappable.norm
                norm.vmin, norm.vmax = _heat_limits([row], bounds)
                panel.update(row)
                continue
            panel.update([Series(row)], bounds)
            if kind == "confidence" and data.confidence_ref is not None:
                panel.set_reference(float(data.confidence_ref[sample]))
        head = f"{data.symmetry} ({data.layout.group}): sample {sample}, {data.metric} along its orbit"
        self.title.set_text(_lines(head, _note(data.n_nonfinite)))


# ==================================================================================================== PCA
class _Reduction(Chart):
    """Each sample's orbit profile reduced to 2-D by PCA, coloured by its mean; the highest labelled.

    Axis and colour limits are nice ticks around the data (a pure function of it), and the ticks are plain texts
    (:class:`~eqmonitor.plots.marks.Ticks`) redrawn only when those limits change; the colour bar is a fixed 0–1
    gradient whose tick labels give the colour scale. Text is most of the render cost, so the PCA axes (arbitrary
    units) get at most 4 ticks.
    """

    @staticmethod
    def key(data: OrbitData, n_outliers: int) -> tuple:
        return n_outliers, data.metric

    def __init__(self, data: OrbitData, n_outliers: int, dpi: float) -> None:
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        super().__init__(new_figure((6.5, 5.0), dpi, layout=None))
        self.ax = self.fig.add_axes(_rect(self.fig, 0.85, 0.6, 4.3, 3.8))
        self.points = self.ax.scatter(np.zeros(0), np.zeros(0), c=np.zeros(0), cmap="viridis", s=24)
        cax = self.fig.add_axes(_rect(self.fig, 5.3, 0.6, 0.18, 3.8))
        self.fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), "viridis"), cax=cax).set_ticks([])
        self.fig.text(6.05 / 6.5, (0.6 + 3.8 / 2) / 5.0, f"mean of {data.metric} over the orbit", rotation=90,
                      ha="left", va="center")  # fmt: skip
        self.ticks = [Ticks(self.ax, "bottom"), Ticks(self.ax, "left"), Ticks(cax, "right")]
        self.outliers = [self.ax.annotate("", (0, 0), xytext=(4, 4), textcoords="offset points", fontsize="small")
                         for _ in range(n_outliers)]  # fmt: skip
        self.xlabel = self.fig.text((0.85 + 4.3 / 2) / 6.5, 0.12 / 5.0, "", ha="center", va="bottom")
        self.ylabel = self.fig.text(0.08 / 6.5, (0.6 + 3.8 / 2) / 5.0, "", rotation=90, ha="left", va="center")
        self.title = _title(self.fig)
        # three keyed layers: the title, the tick labels (redrawn when the limits change) and, on top, the axis
        # labels, whose explained-variance shares change at almost every check (only those two texts are redrawn)
        self.freeze(
            [self.points, *self.outliers],
            ([self.title], self.title.get_text),
            (
                [a for t in self.ticks for a in t.artists()],
                lambda: (self.ax.get_xlim(), self.ax.get_ylim(), self.points.get_clim()),
            ),
            ([self.xlabel, self.ylabel], lambda: (self.xlabel.get_text(), self.ylabel.get_text())),
        )

    def update(self, data: OrbitData) -> None:
        keep = data.finite_rows()
        index = np.nonzero(keep)[0]
        rows = data.values[keep]
        coords, explained = pca_2d(rows)
        color = rows.mean(1)
        self.points.set_offsets(coords)
        self.points.set_array(color)
        ticks = nice_range([color], zero=False, nbins=5)
        lo, hi = float(ticks[0]), float(ticks[-1])
        self.points.set_clim(lo, hi)
        self.ticks[2].set((ticks - lo) / (hi - lo), [fmt(float(t)) for t in ticks])
        for axis, (set_lim, c) in enumerate(((self.ax.set_xlim, coords[:, 0]), (self.ax.set_ylim, coords[:, 1]))):
            pad = 0.04 * (float(c.max()) - float(c.min()))  # keep markers off the frame
            ticks = nice_range([c - pad, c + pad], zero=False, nbins=3)  # PCA units: a few ticks say enough
            set_lim(float(ticks[0]), float(ticks[-1]))
            self.ticks[axis].set(ticks)
        self.xlabel.set_text(f"PC1 ({100 * explained[0]:.0f}% of variance)")
        self.ylabel.set_text(f"PC2 ({100 * explained[1]:.0f}% of variance)")
        top = np.argsort(-color, kind="stable")[: len(self.outliers)]
        for j, text in enumerate(self.outliers):
            text.set_visible(j < top.size)
            if j < top.size:
                text.xy = (coords[top[j], 0], coords[top[j], 1])
                text.set_text(str(int(index[top[j]])))
        dropped = np.nonzero(~keep)[0].tolist()
        note = ""
        if dropped:
            shown = ", ".join(map(str, dropped[:5])) + (", …" if len(dropped) > 5 else "")
            note = f"{len(dropped)} samples with non-finite outputs excluded ({shown})"
        head = f"{data.symmetry} ({data.layout.group}): orbit profiles of {index.size} samples ({data.metric}), PCA"
        self.title.set_text(_lines(head, note))


# ==================================================================================================== cache
class FigureCache:
    """One live figure per ``(symmetry, kind)``: each call updates it in place (rebuilding it only when its layout
    must change) and returns the rendered ``[H, W, 3]`` ``uint8`` image.

    Inputs are :class:`~eqmonitor.plots.payload.OrbitData` / :class:`~eqmonitor.plots.payload.LayerData` (results
    objects are converted on the way in).

    Attributes:
        built: figures built so far (first use of a key, or a layout change); ``updated``: in-place updates.

    Example:
        >>> import numpy as np
        >>> from eqmonitor.plots.payload import Layout, OrbitData
        >>> theta = np.linspace(0, 2 * np.pi, 8, endpoint=False)
        >>> layout = Layout("circle", theta, None, np.zeros(8, dtype=np.int64), ("",), (("-", "o", 3),),
        ...                 "angle (degrees)", "linear", None, "so2", "SO2()")
        >>> data = OrbitData("rotation", "relative error", np.random.default_rng(0).random((5, 8)), None, None, 0,
        ...                  layout)
        >>> cache = FigureCache()
        >>> a = cache.aggregate([(0, data)]); b = cache.aggregate([(1, data)])
        >>> a.shape, a.dtype, cache.built, cache.updated
        ((500, 650, 3), dtype('uint8'), 1, 2)
    """

    def __init__(self, dpi: float = 100) -> None:
        self.dpi = dpi
        self.built = 0
        self.updated = 0
        self._charts: dict[tuple[str, str], tuple[tuple, Any]] = {}

    def _chart(self, symmetry: str, kind: str, key: tuple, build: Any) -> Any:
        entry = self._charts.get((symmetry, kind))
        if entry is None or entry[0] != key:
            entry = (key, build())
            self._charts[(symmetry, kind)] = entry
            self.built += 1
        self.updated += 1
        return entry[1]

    def aggregate(self, overlay: Sequence[tuple[int, Any]], spread: Optional[str] = "iqr") -> np.ndarray:
        """The aggregate NERO figure of ``overlay`` (``(step, results)`` pairs, oldest first)."""
        overlay = [(int(s), orbit_data(r)) for s, r in overlay]
        if not overlay:
            raise ValueError("Expected at least one (step, results) pair in `overlay`, but got none.")
        key = _Aggregate.key(overlay, spread)
        chart = self._chart(overlay[-1][1].symmetry, KINDS[0], key, lambda: _Aggregate(overlay, spread, self.dpi))
        chart.update(overlay, spread)
        return chart.render()

    def individual(self, data: Any, sample: Optional[int] = None) -> np.ndarray:
        """The individual NERO figure of one sample (default: the one with the worst error)."""
        data = orbit_data(data)
        sample = data.worst_sample() if sample is None else int(sample) % data.n_samples
        chart = self._chart(data.symmetry, KINDS[1], _Individual.key(data), lambda: _Individual(data, self.dpi))
        chart.update(data, sample)
        return chart.render()

    def dimension_reduction(self, data: Any, n_outliers: int = 3) -> np.ndarray:
        """The PCA scatter of the orbit profiles (needs at least 3 samples with finite orbits)."""
        data = orbit_data(data)
        n = int(data.finite_rows().sum())
        if n < 3:
            raise ValueError(f"Expected at least 3 samples with finite orbit profiles for a 2-D reduction, got {n}.")
        key = _Reduction.key(data, n_outliers)
        chart = self._chart(data.symmetry, KINDS[2], key, lambda: _Reduction(data, n_outliers, self.dpi))
        chart.update(data)
        return chart.render()

    def layers(self, data: Any) -> np.ndarray:
        """The layer table (isolated and cumulative error per layer, log axis, first failing layer highlighted)."""
        data: LayerData = layer_data(data)
        chart = self._chart(data.symmetry, KINDS[3], LayerChart.key(data), lambda: LayerChart(data, self.dpi))
        chart.update(data)
        return chart.render()

    def figure(self, symmetry: str, kind: str) -> Optional[Any]:
        """The live :class:`matplotlib.figure.Figure` of ``(symmetry, kind)``, or ``None``."""
        entry = self._charts.get((symmetry, kind))
        return None if entry is None else entry[1].fig

    def chart(self, symmetry: str, kind: str) -> Optional[Any]:
        """The live chart object of ``(symmetry, kind)`` (its artists, for inspection), or ``None``."""
        entry = self._charts.get((symmetry, kind))
        return None if entry is None else entry[1]

    def discard(self, symmetry: str, kind: Optional[str] = None) -> None:
        """Forget a figure (all of the symmetry's with ``kind=None``), e.g. after it failed mid-update."""
        for key in [k for k in self._charts if k[0] == symmetry and kind in (None, k[1])]:
            del self._charts[key]

    def __len__(self) -> int:
        return len(self._charts)
