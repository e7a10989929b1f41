"""Comparison figures (matplotlib, no pyplot state): aggregate NERO curves of several runs overlaid (one colour per
run, as in NERO's Fig. 4), per-class aggregates, and curves over training with one line per run.

The aggregate follows the group's layout (:func:`eqmonitor.plots.payload.layout_of`): a polar curve for SO(2) and
Cn, one heat map per run for 2-D translations, a line for scale and SO(3) axis grids, points over the element
index for other finite groups and for older records whose group is not known.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np

from eqmonitor.compare.runs import Run
from eqmonitor.compare.stats import aggregate_curve, curve, per_class

__all__ = ["aggregate_figure", "curves_figure", "per_class_figure", "run_colors"]


def _figure(size: tuple[float, float]) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=size, dpi=100, layout="constrained")


def run_colors(n: int) -> list:
    """One distinct colour per run (``tab10``, then ``tab20``)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _layout(run: Run, symmetry: str, elements: np.ndarray) -> Any:
    from eqmonitor.plots.payload import Layout, layout_of

    group = run.group(symmetry)
    if group is not None:
        try:
            return layout_of(group, elements)
        except (ValueError, TypeError, IndexError):
            pass
    k = elements.shape[0]
    return Layout("finite", np.arange(k, dtype=np.float64), None, np.zeros(k, dtype=np.int64), ("",),
                  (("none", "o", 6),), "element index", "linear", None, "?", "?")  # fmt: skip


def aggregate_figure(runs: Sequence[Run], symmetry: str, check: int = -1, which: str = "errors") -> Any:
    """The aggregate NERO curve (mean over the probe of ``which`` at each element, interquartile band) of each
    run's ``check``-th check of ``symmetry``, overlaid."""
    curves = [aggregate_curve(run, symmetry, check, which) for run in runs]
    layout = _layout(runs[0], symmetry, curves[0]["elements"])
    colors = run_colors(len(runs))
    label = {"errors": "mean error", "confidence": "mean true-class confidence", "flips": "flip rate"}[which]
    title = f"{symmetry}: {label} over the probe at each element"
    if layout.kind == "plane":
        fig = _figure((3.6 * len(runs) + 0.8, 3.6))
        axes = fig.subplots(1, len(runs), squeeze=False)[0]
        top = np.nanmax([np.nanmax(c["mean"]) for c in curves])
        for ax, run, c in zip(axes, runs, curves):
            el = c["elements"]
            art = ax.scatter(el[:, 0], el[:, 1], c=c["mean"], cmap="viridis", vmin=0, vmax=top, marker="s", s=120)
            ax.set_title(run.name, fontsize="medium")
            ax.set_xlabel("dx (pixels)")
            ax.set_ylabel("dy (pixels)")
            ax.set_aspect("equal")
        fig.colorbar(art, ax=list(axes), label=label)
        fig.suptitle(title, fontsize="medium")
        return fig
    fig = _figure((6.5, 5.2))
    if layout.kind == "circle":
        ax = fig.add_subplot(projection="polar")
        ax.set_theta_zero_location("E")
        ax.set_theta_direction(-1)  # positive angles turn +x towards +y: clockwise as images are drawn
    else:
        ax = fig.add_subplot()
        ax.set_xscale(layout.xscale)
        ax.set_xlabel(layout.xlabel)
    for run, c, color in zip(runs, curves, colors):
        lay = _layout(run, symmetry, c["elements"])
        for part in np.unique(lay.part):
            sel = np.flatnonzero(lay.part == part)
            sel = sel[np.argsort(lay.x[sel], kind="stable")]
            x, m, lo, hi = lay.x[sel], c["mean"][sel], c["q25"][sel], c["q75"][sel]
            if layout.kind == "circle" and x.size > 1:
                x, m, lo, hi = (np.append(a, a[0] + (2 * math.pi if a is x else 0)) for a in (x, m, lo, hi))
            style, marker, size = lay.part_styles[int(part)]
            name = run.name if len(lay.part_names) == 1 else f"{run.name}, {lay.part_names[int(part)]}"
            ax.plot(x, m, linestyle="-" if style == "none" and x.size > 1 else style, marker=marker or "o",
                    markersize=size or 3, color=color, label=name)  # fmt: skip
            ax.fill_between(x, lo, hi, color=color, alpha=0.15, linewidth=0)
    if layout.kind != "circle":
        ax.set_ylabel(label)
        if layout.ticks:
            ax.set_xticks(layout.x, layout.ticks, rotation=30, fontsize="small")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0) if layout.kind == "circle" else None, fontsize="small")
    ax.set_title(f"{title}\n(band: interquartile range)", fontsize="medium")
    return fig


def per_class_figure(runs: Sequence[Run], symmetry: str, check: int = -1) -> Any:
    """Mean error per class at one check: grouped bars, one colour per run."""
    tables = [per_class(run, symmetry, check) for run in runs]
    classes = sorted(set().union(*tables))
    fig = _figure((max(5.0, 0.6 * len(classes) * max(1, len(runs)) / 2 + 2), 4.0))
    ax = fig.add_subplot()
    width = 0.8 / len(runs)
    for i, (run, table, color) in enumerate(zip(runs, tables, run_colors(len(runs)))):
        xs = np.arange(len(classes)) + (i - (len(runs) - 1) / 2) * width
        ax.bar(xs, [table.get(c, math.nan) for c in classes], width, color=color, label=run.name)
    ax.set_xticks(np.arange(len(classes)), [str(c) for c in classes])
    ax.set_xlabel("class")
    ax.set_ylabel("mean error over its samples and the elements")
    ax.set_title(f"{symmetry}: error per class", fontsize="medium")
    ax.legend(fontsize="small")
    return fig


def curves_figure(
    runs: Sequence[Run], symmetry: str, by: str = "epoch", metrics: Optional[Sequence[str]] = None
) -> Any:
    """Logged scalars over training, one line per run: ``error_mean`` and, where logged, ``flip_rate``."""
    if metrics is None:
        metrics = ["error_mean"] + [m for m in ("flip_rate",) if any(m in r["metrics"] for r in runs[0].records)]
    fig = _figure((5.0 * len(metrics) + 1.0, 4.0))
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        for run, color in zip(runs, run_colors(len(runs))):
            x, v = curve(run, symmetry, metric, by)
            ax.plot(x, v, marker="o", markersize=3, color=color, label=run.name)
        ax.set_xlabel("epoch" if by == "epoch" else "global step")
        ax.set_ylabel(metric)
        ax.set_ylim(bottom=0)
        ax.set_title(f"{symmetry}: {metric} over training", fontsize="medium")
    axes[0].legend(fontsize="small")
    return fig
