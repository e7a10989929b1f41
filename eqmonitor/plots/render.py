"""Render: curves drawn in their group's layout for the one-shot NERO plots of :mod:`eqmonitor.plots.nero`.

This module holds *how* things are drawn (:mod:`eqmonitor.plots.nero` decides *what*): a curve over the group's
elements goes on a polar axis for planar rotations, a heat map for 2-D shifts, a log axis for scalings, one curve
per coordinate axis for the ``SO3`` grid, points for other finite groups. Figures and their Agg rendering to RGB
(:func:`new_figure`, :func:`figure_to_array`) live in :mod:`eqmonitor.plots.canvas` and are re-exported here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from eqmonitor.groups import SO2, SO3, Cyclic, Dihedral, Group, Scale, Translation
from eqmonitor.plots.canvas import _plane_grid, figure_to_array, new_figure

__all__ = ["figure_to_array", "new_figure"]

_SO3_AXES = ("about x", "about y", "about z")
_SO3_STYLES = ("-", "--", ":", "-.", (0, (1, 1)), (0, (5, 1)))


# ==================================================================================================== curves
@dataclass
class _Curve:
    """One curve to draw: ``center [K]`` (and optional band ``lo, hi [K]``) over ``elements [K, p]``."""

    elements: np.ndarray
    center: np.ndarray
    lo: Optional[np.ndarray]
    hi: Optional[np.ndarray]
    label: Optional[str]
    color: Any


# ==================================================================================================== layouts
def _layout(group: Group) -> str:
    if isinstance(group, Dihedral):
        return "dihedral"
    if isinstance(group, (SO2, Cyclic)) or (group.layout == "circle" and group.param_dim == 1):
        return "circle"
    if isinstance(group, Translation) and group.param_dim == 2:
        return "plane"
    if isinstance(group, Scale):
        return "scale"
    if isinstance(group, SO3):
        return "so3"
    return "line" if group.param_dim == 1 and group.continuous else "finite"


def _angles(group: Group, elements: np.ndarray) -> np.ndarray:
    if isinstance(group, (Cyclic, Dihedral)):
        return elements[:, 0] * (2 * math.pi / group.n)
    return np.remainder(elements[:, 0].astype(np.float64), 2 * math.pi)


def _line(ax: Any, x: np.ndarray, c: _Curve, *, closed: bool = False, label: Any = "", **style: Any) -> None:
    """Plot ``c`` over ``x`` sorted (closed around the circle if ``closed``), with its band if it has one."""
    order = np.argsort(x, kind="stable")
    x, y = x[order], c.center[order]
    lo, hi = (None, None) if c.lo is None else (c.lo[order], c.hi[order])
    if closed and x.size:
        x, y = np.r_[x, x[0] + 2 * math.pi], np.r_[y, y[0]]
        lo, hi = (None, None) if lo is None else (np.r_[lo, lo[0]], np.r_[hi, hi[0]])
    ax.plot(x, y, color=c.color, label=c.label if label == "" else label, **style)
    if lo is not None:
        ax.fill_between(x, lo, hi, color=c.color, alpha=0.15, linewidth=0)


def _part(c: _Curve, sel: Any, color: Any) -> _Curve:
    """The sub-curve of ``c`` at the elements ``sel`` selects, drawn in ``color``."""
    lo, hi = (None, None) if c.lo is None else (c.lo[sel], c.hi[sel])
    return _Curve(c.elements[sel], c.center[sel], lo, hi, c.label, color)


def _sub_label(c: _Curve, part: str, n_curves: int) -> Optional[str]:
    """Legend label of one part of a curve: the part alone for one curve, else prefixed (None: not in the legend)."""
    if n_curves == 1:
        return part
    return f"{c.label} · {part}" if c.label else None


def _draw_circle(ax: Any, group: Group, curves: list[_Curve], ylabel: str) -> None:
    polar = ax.name == "polar"
    for c in curves:
        theta = _angles(group, c.elements)
        _line(ax, theta if polar else np.degrees(theta), c, closed=polar, marker="o", markersize=3)
    ax.set_xlabel("" if polar else "angle (degrees)")
    ax.set_ylabel("" if polar else ylabel)


def _draw_dihedral(ax: Any, group: Dihedral, curves: list[_Curve], ylabel: str) -> None:
    polar = ax.name == "polar"
    for c in curves:
        for flip, style in ((0, dict(linestyle="-", marker="o")), (1, dict(linestyle="--", marker="s"))):
            part = _part(c, c.elements[:, 1] == flip, f"C{flip}" if len(curves) == 1 else c.color)
            suffix = "flipped" if flip else "unflipped"
            theta = _angles(group, part.elements)
            label = _sub_label(c, suffix, len(curves))
            _line(ax, theta if polar else np.degrees(theta), part, closed=polar, label=label, markersize=4, **style)
    ax.set_xlabel("" if polar else "rotation angle (degrees)")
    ax.set_ylabel("" if polar else ylabel)


def _draw_scale(ax: Any, group: Group, curves: list[_Curve], ylabel: str) -> None:
    for c in curves:
        _line(ax, np.exp(c.elements[:, 0]), c, marker="o", markersize=4)
    ax.set_xscale("log")
    ax.set_xlabel("scale factor (log axis)")
    ax.set_ylabel(ylabel)


def _so3_planes(group: SO3, elements: np.ndarray) -> int:
    """Number of angles per axis if ``elements`` are ``group.grid(n)`` (rotations about x, y, z), else 0."""
    blocks = 6 if group.grid(1).shape[0] == 6 else 3
    k = elements.shape[0]
    if k == 0 or k % blocks:
        return 0
    grid = group.grid(k // blocks).numpy()
    return k // blocks if grid.shape == elements.shape and np.allclose(grid, elements, atol=1e-9) else 0


def _draw_so3(ax: Any, group: SO3, curves: list[_Curve], ylabel: str) -> None:
    for c in curves:
        n = _so3_planes(group, c.elements)
        if not n:
            _line(ax, np.arange(len(c.center), dtype=np.float64), c, marker="o", markersize=3)
            ax.set_xlabel(f"element index ({group.name.upper()} elements, not the axis grid)")
            continue
        angle = np.arange(n) * 360.0 / n
        for b in range(c.elements.shape[0] // n):
            part = _part(c, slice(b * n, (b + 1) * n), f"C{b}" if len(curves) == 1 else c.color)
            axis = _SO3_AXES[b % 3] if b < 3 else f"inversion ∘ {_SO3_AXES[b % 3]}"
            _line(ax, angle, part, label=_sub_label(c, axis, len(curves)), linestyle=_SO3_STYLES[b])
        ax.set_xlabel("rotation angle about each coordinate axis (degrees)")
    ax.set_ylabel(ylabel)


def _draw_line(ax: Any, group: Group, curves: list[_Curve], ylabel: str) -> None:
    for c in curves:
        _line(ax, c.elements[:, 0].astype(np.float64), c, marker="o", markersize=3)
    ax.set_xlabel(group.param_names[0])
    ax.set_ylabel(ylabel)


def _draw_finite(ax: Any, group: Group, curves: list[_Curve], ylabel: str) -> None:
    width = 0.5 / max(len(curves), 1)
    for i, c in enumerate(curves):
        x = np.arange(len(c.center)) + (i - (len(curves) - 1) / 2) * width
        ax.plot(x, c.center, linestyle="none", marker="o", color=c.color, label=c.label)
        if c.lo is not None:
            ax.vlines(x, c.lo, c.hi, color=c.color, alpha=0.5)
    els = curves[0].elements
    if len(els) <= 12:
        ax.set_xticks(np.arange(len(els)), [group.describe(torch.as_tensor(e)) for e in els], rotation=30, ha="right")
    ax.set_xlabel(f"element of {group!r}")
    ax.set_ylabel(ylabel)


def _draw_plane(container: Any, ax: Any, curves: list[_Curve], ylabel: str) -> list:
    if ax is not None and len(curves) > 1:
        raise ValueError("A translation heat map shows one result per panel: pass one result with `ax`, or no `ax`.")
    axes = [ax] if ax is not None else list(np.atleast_1d(container.subplots(1, len(curves), squeeze=False)[0]))
    finite = np.concatenate([c.center[np.isfinite(c.center)] for c in curves] + [np.zeros(0)])
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    mappable = None
    for a, c in zip(axes, curves):
        grid = _plane_grid(c.elements, c.center)
        if grid is None:
            mappable = a.scatter(c.elements[:, 0], c.elements[:, 1], c=np.ma.masked_invalid(c.center), vmin=vmin,
                                 vmax=vmax, cmap="viridis", marker="s")  # fmt: skip
        else:
            xs, ys, values = grid
            mappable = a.pcolormesh(xs, ys, np.ma.masked_invalid(values), shading="nearest", vmin=vmin, vmax=vmax,
                                    cmap="viridis")  # fmt: skip
        a.set_aspect("equal")
        a.invert_yaxis()  # the image frame: dy > 0 moves down
        a.set_xlabel("dx (pixels)")
        a.set_ylabel("dy (pixels, down)")
        if c.label:
            a.set_title(c.label, fontsize="medium")
    axes[0].get_figure().colorbar(mappable, ax=axes, label=ylabel, shrink=0.85)
    return axes


_DRAW = {"circle": _draw_circle, "dihedral": _draw_dihedral, "scale": _draw_scale, "so3": _draw_so3,
         "line": _draw_line, "finite": _draw_finite}  # fmt: skip


def _draw(
    container: Any, ax: Any, group: Group, curves: list[_Curve], ylabel: str, bounds: Optional[tuple] = None
) -> list:
    """Draw ``curves`` in the group's layout into ``ax`` (or new axes of ``container``); returns the axes used.

    ``bounds`` fixes the value axis (``(0, 1)`` for confidences and rates, so that checks compare at a glance).
    """
    kind = _layout(group)
    if kind == "plane":
        return _draw_plane(container, ax, curves, ylabel)
    if ax is None:
        ax = container.add_subplot(projection="polar" if kind in ("circle", "dihedral") else None)
    _DRAW[kind](ax, group, curves, ylabel)
    values = np.concatenate([c.center for c in curves] + [c.lo for c in curves if c.lo is not None])
    if bounds is not None:
        ax.set_ylim(*bounds)
    elif np.isfinite(values).any() and np.nanmin(values) >= 0 and ax.get_yscale() == "linear":
        ax.set_ylim(bottom=0)
    if any(line.get_label() and not line.get_label().startswith("_") for line in ax.lines):
        outside = dict(loc="upper left", bbox_to_anchor=(1.08, 1.0)) if ax.name == "polar" else dict(loc="best")
        ax.legend(fontsize="small", **outside)
    return [ax]


def _root(ax: Any) -> Any:
    fig = ax.get_figure()
    while getattr(fig, "figure", fig) is not fig:  # a SubFigure's parent chain ends at the Figure
        fig = fig.figure
    return fig


def _reference(ax: Any, value: Optional[float], color: Any) -> None:
    """A dotted circle (polar) or horizontal line at the value for the untransformed input."""
    if value is None or not math.isfinite(value):
        return
    if ax.name == "polar":
        t = np.linspace(0, 2 * math.pi, 181)
        ax.plot(t, np.full_like(t, value), linestyle=":", color=color, label="_at identity")
    else:
        ax.axhline(value, linestyle=":", color=color, label="_at identity")
