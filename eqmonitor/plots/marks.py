"""Legends and tick labels of the cached figures, drawn as plain lines and texts at fixed places.

matplotlib's ``Legend`` lays its boxes out again at every draw, and an ``Axis`` measures all its tick labels (and its
siblings') at every draw; together they cost more than the curves. These stand-ins draw the same marks with a
handful of ``Line2D`` and ``Text`` artists whose data an update sets. Torch-free.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

__all__ = ["LegendColumn", "Ticks"]


class LegendColumn:
    """Up to ``rows`` legend entries (a short line with its marker, then the label) stacked from ``(x, y)``, in
    figure fractions, without a frame."""

    def __init__(self, fig: Any, x: float, y: float, rows: int, fontsize: str = "small") -> None:
        from matplotlib.lines import Line2D

        w, h = fig.get_size_inches()
        step, handle = 0.21 / h, 0.32 / w
        self.handles, self.texts = [], []
        for i in range(rows):
            yi = y - (i + 0.5) * step
            line = Line2D([x, x + handle / 2, x + handle], [yi, yi, yi], markevery=[1], transform=fig.transFigure)
            fig.add_artist(line)
            self.handles.append(line)
            self.texts.append(fig.text(x + handle + 0.08 / w, yi, "", va="center", fontsize=fontsize))

    def artists(self) -> list:
        return self.handles + self.texts

    def set(self, entries: Sequence[tuple[dict, str]]) -> None:
        """Show ``entries`` (``({color, linestyle, marker, markersize}, label)``) and hide the other rows."""
        if len(entries) > len(self.texts):
            raise ValueError(f"Expected at most {len(self.texts)} legend entries, but got {len(entries)}.")
        for i, (line, text) in enumerate(zip(self.handles, self.texts)):
            shown = i < len(entries)
            line.set_visible(shown)
            text.set_visible(shown)
            if shown:
                style, label = entries[i]
                line.set(**style)
                text.set_text(label)


class Ticks:
    """Tick marks and labels along one side of an axes (``"bottom"``, ``"left"`` or ``"right"``), at data
    positions along that axis; matplotlib's own ticks on that side are turned off."""

    def __init__(self, ax: Any, side: str, capacity: int = 12, fontsize: str = "medium") -> None:
        from matplotlib.collections import LineCollection

        fig = ax.get_figure()
        w, h = fig.get_size_inches()
        box = ax.get_position()
        self.side = side
        vertical = side != "bottom"
        across = (box.width * w) if vertical else (box.height * h)  # inches of the axes across the ticks
        self.length, self.pad = 0.05 / across, 0.1 / across
        transform = ax.get_yaxis_transform() if vertical else ax.get_xaxis_transform()
        (ax.set_yticks if vertical else ax.set_xticks)([])
        self.marks = LineCollection([], colors="black", linewidths=0.8, transform=transform, clip_on=False)
        ax.add_collection(self.marks, autolim=False)
        align = {"bottom": dict(ha="center", va="top"), "left": dict(ha="right", va="center"),
                 "right": dict(ha="left", va="center")}[side]  # fmt: skip
        self.labels = [ax.text(0, 0, "", transform=transform, clip_on=False, fontsize=fontsize, **align)
                       for _ in range(capacity)]  # fmt: skip

    def artists(self) -> list:
        return [self.marks, *self.labels]

    def set(self, values: np.ndarray, labels: Optional[Sequence[str]] = None) -> None:
        """Ticks at ``values`` (data coordinates along the axis) labelled ``labels`` (default: the values)."""
        values = np.asarray(values, dtype=np.float64)[: len(self.labels)]
        labels = [_short(v) for v in values] if labels is None else list(labels)[: len(self.labels)]
        edge, out = (1.0, 1.0) if self.side == "right" else (0.0, -1.0)
        tip, at = edge + out * self.length, edge + out * (self.length + self.pad)
        if self.side == "bottom":
            self.marks.set_segments([[(v, edge), (v, tip)] for v in values])
        else:
            self.marks.set_segments([[(edge, v), (tip, v)] for v in values])
        for i, text in enumerate(self.labels):
            text.set_visible(i < len(values))
            if i < len(values):
                text.set_position((values[i], at) if self.side == "bottom" else (at, values[i]))
                text.set_text(labels[i])


def _short(v: float) -> str:
    """A tick value, short, with a true minus sign as matplotlib writes it: ``−0.2``, ``0``, ``0.35``, ``1e−05``."""
    return "0" if v == 0 else f"{v:.3g}".replace("-", "\N{MINUS SIGN}")
