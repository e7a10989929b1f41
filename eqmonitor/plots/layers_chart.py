"""The cached layer table: each layer's mean isolated and cumulative error as bars on a log axis, the worst value
as a marker, the tolerance line and the first failing layer highlighted; built once per set of layers.

The bars, markers, words and highlight are updated in place at each check (see :mod:`eqmonitor.plots.figures`).
Torch-free.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from eqmonitor.plots.canvas import new_figure
from eqmonitor.plots.chart import Chart
from eqmonitor.plots.payload import LayerData

__all__ = ["LayerChart", "layer_stats"]

_KINDS = (("isolated", "C0"), ("cumulative", "C1"))
_H = 0.38  # bar height


def layer_stats(data: LayerData) -> tuple[dict, float]:
    """``({kind: (mean [L], worst [L])}, floor)``: NaN where not measured; the log axis' floor is a decade below
    the smallest positive value (or the tolerance)."""
    stats = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for kind, _ in _KINDS:
            t = getattr(data, kind)
            mean = np.nanmean(t, 1) if t.shape[1] else np.full(t.shape[0], np.nan)
            worst = np.nanmax(t, 1) if t.shape[1] else np.full(t.shape[0], np.nan)
            stats[kind] = (mean, worst)
    every = np.concatenate([v for pair in stats.values() for v in pair] + [np.array([data.tolerance])])
    positive = every[np.isfinite(every) & (every > 0)]
    floor = 10.0 ** (math.floor(math.log10(positive.min())) - 1) if positive.size else 1e-12
    return stats, floor


class LayerChart(Chart):
    """A layer table kept alive for one list of layers (names and types)."""

    @staticmethod
    def key(data: LayerData) -> tuple:
        return data.names, data.types

    def __init__(self, data: LayerData, dpi: float) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        n = len(data.names)
        height = max(2.5, 0.45 * n + 1.5)
        super().__init__(new_figure((8.5, height), dpi, layout=None))
        fig = self.fig
        labels = [f"{nm} ({tp})" for nm, tp in zip(data.names, data.types)]
        renderer = FigureCanvasAgg(fig).get_renderer()
        probe = fig.text(0, 0, max(labels, key=len, default=""), fontsize="medium")
        left = probe.get_window_extent(renderer).width / dpi + 0.25
        probe.remove()
        width = 8.5 - left - 2.0
        self.ax = ax = fig.add_axes([left / 8.5, 0.6 / height, width / 8.5, (height - 1.1) / height])
        y = np.arange(n)
        self.y = y
        self.bars, self.worst, self.words, handles = {}, {}, {}, []
        for offset, (kind, color) in zip((-_H / 2, _H / 2), _KINDS):
            bars = ax.barh(y + offset, np.ones(n), left=np.ones(n), height=_H, color=color)
            self.bars[kind] = bars.patches
            self.worst[kind] = ax.plot(y * np.nan, y + offset, linestyle="none", marker="d", markersize=4,
                                       color="black")[0]  # fmt: skip
            self.words[kind] = [ax.text(1, yi + offset, "", va="center", fontsize="x-small") for yi in y]
            handles.append((bars, f"{kind} (mean)"))
        handles.append((self.worst["isolated"], "worst"))
        self.tolerance = ax.axvline(data.tolerance, color="red", linestyle="--")
        handles.append((self.tolerance, "tolerance"))
        self.highlight = ax.axhspan(-0.5, 0.5, color="red", alpha=0.12, zorder=0)
        ax.set_xscale("log")
        ax.set_yticks(y, labels)
        ax.set_ylim(n - 0.5, -0.5)  # forward order, top to bottom
        self.ticklabels = ax.get_yticklabels()
        self.ink = self.ticklabels[0].get_color() if n else "black"
        ax.set_xlabel("relative error (log axis)")
        self.legend = ax.legend(*zip(*handles), fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
        self.title = fig.text(0.5, 1 - 0.08 / height, "", ha="center", va="top", fontsize="medium")
        self._index: Any = None
        words = [*self.words["isolated"], *self.words["cumulative"]]
        self.freeze(
            [*self.bars["isolated"], *self.bars["cumulative"], *self.worst.values(), self.tolerance],
            ([ax.yaxis, self.highlight, self.legend, self.title], self._names_key),
            ([ax.xaxis, *words], self._scale_key),
        )

    def _names_key(self) -> tuple:
        return self._index, self.legend.get_texts()[-1].get_text(), self.title.get_text()

    def _scale_key(self) -> tuple:
        words = [*self.words["isolated"], *self.words["cumulative"]]
        return self.ax.get_xlim(), tuple((t.get_visible(), t.get_text(), t.get_position()) for t in words)

    def update(self, data: LayerData) -> None:
        stats, floor = layer_stats(data)
        top = floor * 10
        for kind, _ in _KINDS:
            mean, worst = stats[kind]
            shown = np.where(mean > floor, mean, np.where(mean >= 0, floor, np.nan))
            for bar, value in zip(self.bars[kind], shown):
                bar.set_x(floor)
                bar.set_width(0.0 if not np.isfinite(value) else value - floor)
            self.worst[kind].set_xdata(np.where(worst > floor, worst, np.nan))
            for text, m in zip(self.words[kind], mean):
                bad = not m > floor  # exact zeros and unmeasured layers get a word instead of a bar
                text.set_visible(bad)
                text.set_x(floor * 1.3)
                text.set_text(("n/a" if np.isnan(m) else "0") if bad else "")
            finite = np.r_[mean[np.isfinite(mean)], worst[np.isfinite(worst)]]
            top = max(top, float(finite.max()) if finite.size else top)
        top = max(top, data.tolerance)
        self.ax.set_xlim(floor, 10.0 ** (math.ceil(2 * math.log10(top) + 0.2) / 2))  # half decades: seldom changes
        self.tolerance.set_xdata([data.tolerance, data.tolerance])
        self.legend.get_texts()[-1].set_text(f"tolerance {data.tolerance:.1e}")
        failing = data.first_failing
        index = self._index = data.names.index(failing) if failing in data.names else None
        self.highlight.set_visible(index is not None)
        if index is not None:
            self.highlight.set_y(index - 0.5)
        for i, label in enumerate(self.ticklabels):
            label.set_color("red" if i == index else self.ink)
            label.set_fontweight("bold" if i == index else "normal")
        self.title.set_text(
            f"{data.symmetry}: layer-wise errors ({data.mode} mode), first failing layer: {failing or 'none'}"
        )
