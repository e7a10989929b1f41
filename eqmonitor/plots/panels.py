"""Panels of the cached NERO figures: a panel owns its artists, made once for up to ``capacity`` curves, and an
update only sets their data, colours and visibility (no new artists, no layout engine).

A polar curve is drawn on ordinary axes at ``(r cos θ, r sin θ)`` inside grid circles (matplotlib's polar projection
costs several times more to redraw); the radius is normalised to the outer circle and the ring labels are
rewritten when the scale changes. Torch-free: the figure worker process uses it.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np

from eqmonitor.plots.chart import Series, band, fmt, nice_range
from eqmonitor.plots.payload import Layout

__all__ = ["CartesianPanel", "CirclePanel", "HeatPanel"]

_GRID, _INK = "0.82", "0.3"
_RINGS = 7  # at most this many grid circles (MaxNLocator(4) gives at most 6)
_EDGE = 1.2  # half-width of a circle panel's axes, in units of the outer circle's radius


class _Panel:
    """Per (curve slot, part) line and band artists and the element order of each part."""

    def __init__(self, ax: Any, layout: Layout, capacity: int) -> None:
        from matplotlib.collections import PolyCollection

        self.ax, self.layout, self.capacity = ax, layout, capacity
        self.orders = []
        for p in range(len(layout.part_names)):
            idx = np.nonzero(layout.part == p)[0]
            self.orders.append(idx[np.argsort(layout.x[idx], kind="stable")])
        self.lines, self.bands = [], []
        for _ in range(capacity):
            row, brow = [], []
            for ls, marker, ms in layout.part_styles:
                row.append(ax.plot([], [], linestyle=ls, marker=marker or None, markersize=ms)[0])
                brow.append(PolyCollection([], alpha=0.15, linewidths=0))
                ax.add_collection(brow[-1], autolim=False)
            self.lines.append(row)
            self.bands.append(brow)

    def colors(self, series: Sequence[Series]) -> list[list]:
        """Colour of each (curve, part): the curve's, or ``C<part>`` when one curve has several parts."""
        split = len(series) == 1 and len(self.layout.part_names) > 1
        return [[f"C{p}" if split else s.color for p in range(len(self.orders))] for s in series]

    def _restyle(self, series: Sequence[Series]) -> None:
        from matplotlib.collections import LineCollection

        if len(series) > self.capacity:
            raise ValueError(f"Expected at most {self.capacity} curves for this panel, but got {len(series)}.")
        colors = self.colors(series)
        for i, (row, brow) in enumerate(zip(self.lines, self.bands)):
            for p, (line, poly) in enumerate(zip(row, brow)):
                line.set_visible(i < len(series))
                poly.set_visible(i < len(series) and series[i].lo is not None)
                if i < len(series):
                    line.set_color(colors[i][p])
                    (poly.set_color if isinstance(poly, LineCollection) else poly.set_facecolor)(colors[i][p])

    def dynamic(self) -> list:
        """The artists an update changes every time (curves, bands, the reference)."""
        return [a for row in self.lines + self.bands for a in row] + [self.reference]

    def scale_artists(self) -> list:
        """The artists that change with the value scale only (a keyed layer of the chart)."""
        return []

    def scale_key(self) -> tuple:
        """The state of the value scale."""
        return ()

    def legend_entries(self, series: Sequence[Series]) -> list[tuple[dict, str]]:
        """``(line style, label)`` pairs: one per labelled curve (its colour) when there are several, one per part."""
        parts, styles = self.layout.part_names, self.layout.part_styles
        colors, out = self.colors(series), []
        if len(series) > 1:
            ls, marker, ms = styles[0]
            style = "-" if len(parts) > 1 or ls == "none" else ls
            out += [(dict(color=c[0], linestyle=style, marker=marker or "None", markersize=ms), s.label)
                    for s, c in zip(series, colors) if s.label]  # fmt: skip
        if len(parts) > 1:
            for p, (name, (ls, marker, ms)) in enumerate(zip(parts, styles)):
                color = colors[0][p] if len(series) == 1 else _INK
                out.append((dict(color=color, linestyle=ls, marker=marker or "None", markersize=ms), name))
        return out


class CirclePanel(_Panel):
    """A polar chart on ordinary axes: grid circles at nice radii, spokes every 45° labelled in degrees."""

    def __init__(self, ax: Any, layout: Layout, capacity: int = 1) -> None:
        from matplotlib.collections import LineCollection

        ax.set_xlim(-_EDGE, _EDGE)
        ax.set_ylim(-_EDGE, _EDGE)
        ax.set_axis_off()
        t = np.linspace(0.0, 2 * math.pi, 241)
        self._ring = np.column_stack([np.cos(t), np.sin(t)])
        spokes = [[(0.0, 0.0), (math.cos(a), math.sin(a))] for a in np.radians(np.arange(0, 360, 45))]
        ax.add_collection(LineCollection(spokes, colors=_GRID, linewidths=0.6, zorder=0), autolim=False)
        ax.plot(self._ring[:, 0], self._ring[:, 1], color="0.25", linewidth=0.9, zorder=0.5)  # the outer circle
        for deg in range(0, 360, 45):
            a = math.radians(deg)
            ax.text(1.1 * math.cos(a), 1.1 * math.sin(a), f"{deg}°", ha="center", va="center", fontsize="small")
        self.rings = [ax.plot([], [], color=_GRID, linewidth=0.6, zorder=0)[0] for _ in range(_RINGS)]
        self.ring_labels = [ax.text(0, 0, "", fontsize="small", color=_INK, ha="left", va="bottom")
                            for _ in range(_RINGS)]  # fmt: skip
        self._label_dir = (math.cos(math.radians(22.5)), math.sin(math.radians(22.5)))
        self.reference = ax.plot([], [], linestyle=":", color="C0", zorder=1)[0]
        super().__init__(ax, layout, capacity)
        self._trig = []
        for order in self.orders:
            theta = np.r_[layout.x[order], layout.x[order][:1]]  # closed around the circle
            self._trig.append((np.cos(theta), np.sin(theta)))
        self._lo, self._scale, self._ticks = 0.0, 1.0, ()

    def scale_artists(self) -> list:
        return self.rings + self.ring_labels

    def scale_key(self) -> tuple:
        return self._ticks

    def _radius(self, r: Any) -> np.ndarray:
        return np.clip((np.asarray(r, dtype=np.float64) - self._lo) * self._scale, 0.0, None)

    def update(self, series: Sequence[Series], bounds: Optional[tuple] = None) -> None:
        """Set the curves and the radial scale (nice rings from 0, or ``bounds``); hides the reference."""
        self._restyle(series)
        ticks = nice_range([v for sr in series for v in (sr.center, sr.lo, sr.hi)], bounds)
        self._ticks = tuple(ticks.tolist())
        self._lo, top = float(ticks[0]), float(ticks[-1])
        self._scale = 1.0 / (top - self._lo)
        for i, (ring, label) in enumerate(zip(self.rings, self.ring_labels)):
            ring.set_visible(0 < i < len(ticks) - 1)  # none at the centre; the outer circle is drawn already
            label.set_visible(i < len(ticks) and (i > 0 or self._lo != 0))
            if i < len(ticks):
                r = float(self._radius(ticks[i]))
                ring.set_data(r * self._ring[:, 0], r * self._ring[:, 1])
                label.set_position((r * self._label_dir[0] + 0.01, r * self._label_dir[1] + 0.01))
                label.set_text(fmt(float(ticks[i])))
        for sr, row, brow in zip(series, self.lines, self.bands):
            for order, (cos, sin), line, poly in zip(self.orders, self._trig, row, brow):
                r = self._radius(np.r_[sr.center[order], sr.center[order][:1]])
                line.set_data(r * cos, r * sin)
                if sr.lo is not None:
                    lo = self._radius(np.r_[sr.lo[order], sr.lo[order][:1]])
                    hi = self._radius(np.r_[sr.hi[order], sr.hi[order][:1]])
                    poly.set_verts(band(hi * cos, hi * sin, lo * cos, lo * sin))
        self.reference.set_visible(False)

    def set_reference(self, value: Optional[float], color: Any = "C0") -> None:
        """A dotted circle at ``value`` (the value at the untransformed input); ``None`` hides it."""
        ok = value is not None and math.isfinite(value)
        self.reference.set_visible(ok)
        if ok:
            r = float(self._radius(value))
            self.reference.set_data(r * self._ring[:, 0], r * self._ring[:, 1])
            self.reference.set_color(color)


class CartesianPanel(_Panel):
    """Curves over the element axis (a line for continuous groups, points with error bars for finite ones)."""

    def __init__(self, ax: Any, layout: Layout, capacity: int = 1, ylabel: str = "") -> None:
        from matplotlib.collections import LineCollection

        self.finite = layout.kind == "finite"
        super().__init__(ax, layout, capacity)
        self.bars = []
        if self.finite:  # error bars instead of bands
            for row in self.bands:
                row[0].remove()
                self.bars.append(LineCollection([], alpha=0.5))
                ax.add_collection(self.bars[-1], autolim=False)
            self.bands = [[self.bars[i]] for i in range(capacity)]
        ax.set_xscale(layout.xscale)  # before the ticks: setting the scale resets them
        if self.finite and layout.ticks is not None:
            ax.set_xticks(np.arange(len(layout.ticks)), list(layout.ticks), rotation=30, ha="right")
        ax.set_xlabel(layout.xlabel)
        ax.set_ylabel(ylabel)
        x = layout.x
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 1.0)
        if layout.xscale == "log":
            pad = (hi / lo) ** 0.05 if hi > lo else 1.1
            ax.set_xlim(lo / pad, hi * pad)
        else:
            pad = 0.05 * (hi - lo) if hi > lo else 0.5
            ax.set_xlim(lo - pad - (0.5 if self.finite else 0), hi + pad + (0.5 if self.finite else 0))
        self.reference = ax.axhline(0.0, linestyle=":", color="C0", visible=False)

    def scale_artists(self) -> list:
        return [self.ax.yaxis]

    def scale_key(self) -> tuple:
        return self.ax.get_ylim()

    def update(self, series: Sequence[Series], bounds: Optional[tuple] = None) -> None:
        """Set the curves and the value axis (from 0, to a nice tick above the largest value; or ``bounds``)."""
        self._restyle(series)
        ticks = nice_range([v for sr in series for v in (sr.center, sr.lo, sr.hi)], bounds)
        self.ax.set_ylim(float(ticks[0]), float(ticks[-1]))
        width = 0.5 / max(len(series), 1)
        for s, (sr, row, brow) in enumerate(zip(series, self.lines, self.bands)):
            offset = (s - (len(series) - 1) / 2) * width if self.finite else 0.0
            for order, line, poly in zip(self.orders, row, brow):
                x = self.layout.x[order] + offset
                line.set_data(x, sr.center[order])
                if sr.lo is None:
                    continue
                if self.finite:
                    poly.set_segments([[(a, b), (a, c)] for a, b, c in zip(x, sr.lo[order], sr.hi[order])])
                else:
                    poly.set_verts(band(x, sr.hi[order], x, sr.lo[order]))
        self.reference.set_visible(False)

    def set_reference(self, value: Optional[float], color: Any = "C0") -> None:
        """A dotted horizontal line at ``value``; ``None`` hides it."""
        ok = value is not None and math.isfinite(value)
        self.reference.set_visible(ok)
        if ok:
            self.reference.set_ydata([value, value])
            self.reference.set_color(color)


class HeatPanel:
    """Heat map of one curve over 2-D shifts (a mesh when the shifts form a grid, else square markers)."""

    def __init__(self, ax: Any, layout: Layout, norm: Any) -> None:
        self.ax = ax
        xs, self._xi = np.unique(layout.x, return_inverse=True)
        ys, self._yi = np.unique(layout.y, return_inverse=True)
        self.shape = (ys.size, xs.size)
        self.dense = xs.size * ys.size <= 4 * max(layout.x.size, 1)
        if self.dense:
            empty = np.ma.masked_all(self.shape)
            self.mappable = ax.pcolormesh(xs, ys, empty, shading="nearest", norm=norm, cmap="viridis")
        else:
            self.mappable = ax.scatter(layout.x, layout.y, c=np.zeros(layout.x.size), norm=norm, cmap="viridis",
                                       marker="s")  # fmt: skip
        ax.set_aspect("equal")
        ax.invert_yaxis()  # the image frame: dy > 0 moves down
        ax.set_xlabel("dx (pixels)")
        ax.set_ylabel("dy (pixels, down)")
        self.title = ax.set_title("", fontsize="medium")

    def dynamic(self) -> list:
        return [self.mappable, self.title]

    def update(self, values: np.ndarray, title: Optional[str] = None) -> None:
        """Set the values ``[K]`` (repeated shifts averaged; NaN cells left blank)."""
        if self.dense:
            total, count = np.zeros(self.shape), np.zeros(self.shape)
            ok = np.isfinite(values)
            np.add.at(total, (self._yi[ok], self._xi[ok]), values[ok])
            np.add.at(count, (self._yi[ok], self._xi[ok]), 1)
            grid = np.where(count > 0, total / np.maximum(count, 1), np.nan)
            self.mappable.set_array(np.ma.masked_invalid(grid))
        else:
            self.mappable.set_array(np.ma.masked_invalid(values))
        self.title.set_text(title or "")
