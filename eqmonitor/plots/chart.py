"""The cached figures' rendering in cached layers, and the numbers their panels share (means, bands, nice scales).

Text is most of what matplotlib spends drawing a figure, and most of a NERO figure's text never changes between
checks (angle labels, axis labels, captions) or changes seldom (titles, tick labels of a scale). A :class:`Chart`
therefore renders a stack of layers, each cached as a bitmap:

- the *base*: every artist that never changes after the figure is built (drawn once);
- *keyed layers*, bottom to top, each a list of artists with a key function (the state of those artists: a title's
  text, a scale's ticks): a layer is redrawn, over the cached layer below it, only when its key or a lower one
  changed; put what changes least at the bottom;
- the *dynamic* artists (curves, points, labels of steps): drawn over the top layer at every render.

A fresh figure goes through the same steps, so a cached figure renders exactly what a fresh one would.
Torch-free: the figure worker process uses it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

__all__ = ["Chart", "Series", "nice_range", "summary"]


def _zsorted(artists: Sequence[Any]) -> list:
    return sorted((a for a in artists if a is not None), key=lambda a: a.get_zorder())


class Chart:
    """A figure built for one layout and updated in place, rendered in cached layers (see the module docstring).

    Subclasses call :meth:`freeze` once built, with their dynamic artists and their keyed layers.

    Attributes:
        fig: the :class:`matplotlib.figure.Figure`.
        layer_draws: how often the base, each keyed layer and the dynamic artists were drawn.
    """

    def __init__(self, fig: Any) -> None:
        self.fig = fig
        self.dynamic: list = []
        self.layers: list[tuple[list, Callable[[], Any]]] = []
        self._cache: list = []  # [(bitmap, key)] of the base and of each keyed layer
        self.layer_draws: list[int] = []

    def freeze(self, dynamic: Sequence[Any], *layers: tuple[Sequence[Any], Callable[[], Any]]) -> None:
        """Declare the artists drawn at every render and the keyed layers ``(artists, key)``, bottom to top; the
        artists of each are drawn in zorder. Everything else is the base."""
        self.dynamic = _zsorted(dynamic)
        self.layers = [(_zsorted(artists), key) for artists, key in layers]
        for a in self.dynamic + [a for artists, _ in self.layers for a in artists]:
            a.set_animated(True)  # skipped by a full draw: that draws the base only
        self._cache = []
        self.layer_draws = [0] * (len(self.layers) + 2)

    def render(self) -> np.ndarray:
        """The figure as ``[H, W, 3]`` ``uint8``."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        canvas = self.fig.canvas if isinstance(self.fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(self.fig)
        if not self._cache:
            canvas.draw()  # everything but the keyed layers and the dynamic (animated) artists
            self._cache = [(canvas.copy_from_bbox(self.fig.bbox), None)]
            self.layer_draws[0] += 1
        renderer = canvas.get_renderer()
        keys = [key() for _, key in self.layers]
        # the first keyed layer whose key (or a lower one's) changed; the layers below it are cached as they are
        stale = next((i for i, k in enumerate(keys) if i + 1 >= len(self._cache) or self._cache[i + 1][1] != k), None)
        if stale is None:
            canvas.restore_region(self._cache[-1][0])
        else:
            del self._cache[stale + 1 :]
            canvas.restore_region(self._cache[-1][0])
            for i in range(stale, len(self.layers)):
                for artist in self.layers[i][0]:
                    artist.draw(renderer)
                self._cache.append((canvas.copy_from_bbox(self.fig.bbox), keys[i]))
                self.layer_draws[i + 1] += 1
        for artist in self.dynamic:
            artist.draw(renderer)
        self.layer_draws[-1] += 1
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()


@dataclass
class Series:
    """One curve: ``center [K]`` (and its band ``lo, hi [K]``, or ``None``), its legend label and colour."""

    center: np.ndarray
    lo: Optional[np.ndarray] = None
    hi: Optional[np.ndarray] = None
    label: Optional[str] = None
    color: Any = "C0"


def nanquantile(values: np.ndarray, q: float) -> np.ndarray:
    """``np.nanquantile(values, q, axis=0)`` (linear interpolation) without its per-column Python loop."""
    s = np.sort(values, axis=0)  # NaN sort last
    n = np.isfinite(values).sum(0)
    pos = q * np.maximum(n - 1, 0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
    cols = np.arange(values.shape[1])
    frac = pos - lo
    with np.errstate(invalid="ignore"):
        out = s[lo, cols] * (1 - frac) + s[hi, cols] * frac
    return np.where(n > 0, out, np.nan)


def summary(values: np.ndarray, spread: Optional[str]) -> tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
    """Mean over samples of ``values [N, K]`` and its band (``"iqr"``: 25–75 %, ``"std"``: ±1 std), NaN-aware."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
        mean = np.nanmean(values, 0)
        if spread == "iqr":
            return mean, nanquantile(values, 0.25), nanquantile(values, 0.75)
        if spread == "std":
            std = np.sqrt(np.nanmean((values - mean) ** 2, 0))
            return mean, mean - std, mean + std
    return mean, None, None


def nice_range(
    values: Sequence[Optional[np.ndarray]], bounds: Optional[tuple] = None, zero: bool = True, nbins: int = 4
) -> np.ndarray:
    """Nice ticks ``[t0, ..., top]`` (at most ``nbins`` steps) spanning the finite values (from 0 when none is
    negative and ``zero``), or ``bounds``. A pure function of the values: a cached figure looks as a fresh one."""
    from matplotlib.ticker import MaxNLocator

    if bounds is not None:
        lo, hi = bounds
    else:
        v = np.concatenate([np.ravel(a) for a in values if a is not None] + [np.zeros(0)])
        v = v[np.isfinite(v)]
        lo = float(v.min()) if v.size else 0.0
        lo = min(0.0, lo) if zero else lo
        hi = float(v.max()) if v.size else 1.0
        if not hi > lo:
            hi = lo + (abs(lo) if lo else 1.0)
    ticks = MaxNLocator(nbins=nbins).tick_values(lo, hi)
    first = ticks[ticks <= lo + 1e-12 * (hi - lo)].max(initial=ticks[0])
    last = ticks[ticks >= hi - 1e-12 * (hi - lo)].min(initial=ticks[-1])
    return ticks[(ticks >= first) & (ticks <= last)]


def fmt(v: float) -> str:
    """A tick value, short: ``0``, ``0.15``, ``1.5e-05``."""
    return "0" if v == 0 else f"{v:.3g}"


def _runs(ok: np.ndarray) -> list[slice]:
    """Maximal runs of ``True`` in ``ok`` (at least 2 long: a band needs two points)."""
    edges = np.diff(np.r_[0, ok.astype(np.int8), 0])
    starts, stops = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    return [slice(a, b) for a, b in zip(starts, stops) if b - a >= 2]


def band(x_hi: np.ndarray, y_hi: np.ndarray, x_lo: np.ndarray, y_lo: np.ndarray) -> list[np.ndarray]:
    """Polygons between two curves (the upper forwards, the lower backwards), one per run of finite points."""
    ok = np.isfinite(y_hi) & np.isfinite(y_lo) & np.isfinite(x_hi) & np.isfinite(x_lo)
    return [np.column_stack([np.r_[x_hi[s], x_lo[s][::-1]], np.r_[y_hi[s], y_lo[s][::-1]]]) for s in _runs(ok)]
