"""NERO plots: a model's error (or confidence) along the orbit of its inputs, laid out by the group.

Pure functions of result objects (:class:`~eqmonitor.results.OrbitErrors`, :class:`~eqmonitor.results.LayerErrors`)
that return a :class:`matplotlib.figure.Figure` (never pyplot; render with
:func:`~eqmonitor.plots.render.figure_to_array`). The layout follows the group:

- ``SO2``, ``Cyclic(n)``: a polar curve over the rotation angle; ``Dihedral(n)``: two polar curves (unflipped,
  flipped);
- 2-D translations: a heat map over the shifts ``(dx, dy)`` (one panel per result);
- ``Scale``: a line over the scale factor, log axis; ``SO3``/``O3``: one curve per rotation axis over the angle when
  the elements are the group's plot grid, else a line over the element index;
- other finite groups (``Flip``, ``Permutation``, ...): points over the element index with their spread.

Non-finite entries (NaN/Inf outputs) are masked, never plotted and never averaged; titles count them.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from eqmonitor.plots.canvas import _colors, _legend_labels, new_figure, pca_2d
from eqmonitor.plots.render import _Curve, _draw, _layout, _reference, _root
from eqmonitor.results import LayerErrors, OrbitErrors

__all__ = ["aggregate", "dimension_reduction", "individual", "layer_table", "pca_2d"]

_WHICH = ("errors", "abs_errors", "rel_errors", "confidence", "flips")
_SPREADS = ("iqr", "std", None)
_DISTANCE_LABELS = {
    "relative": "relative error",
    "max_abs": "max-abs error",
    "rms": "RMS error",
    "symmetric_relative": "symmetric relative error",
    "kl": "KL divergence",
    "flip": "top-1 flip",
    "confidence": "confidence",
}


# ==================================================================================================== data
def _as_list(results: Union[OrbitErrors, Sequence[OrbitErrors]]) -> list[OrbitErrors]:
    items = [results] if isinstance(results, OrbitErrors) else list(results)
    if not items:
        raise ValueError("Expected `results` to hold at least one OrbitErrors, but got an empty sequence.")
    for r in items:
        if not isinstance(r, OrbitErrors):
            raise TypeError(f"Expected `results` to be OrbitErrors or a sequence of them, but got {type(r).__name__}.")
    names = {r.group.name for r in items}
    if len(names) > 1:
        raise ValueError(f"Expected results of one group to overlay, but got groups {sorted(names)}.")
    return items


def _table(res: OrbitErrors, which: str) -> Tensor:
    """``[N, K]`` float64 CPU values of one metric, NaN where the output was non-finite (or the value is)."""
    if which not in _WHICH:
        raise ValueError(f"Expected `which` to be one of {_WHICH}, but got {which!r}.")
    if which in ("confidence", "flips"):
        v = getattr(res, which)
        if v is None:
            raise ValueError(f"These results have no `{which}` (it needs labels / class-score outputs); use `errors`.")
        v = (v if v.dtype.is_floating_point else v.double()).masked_fill(res.nonfinite, float("nan"))
    else:
        v = res.values(which)
    v = v.detach().to("cpu", torch.float64)
    return v.masked_fill(~torch.isfinite(v), float("nan"))


def _metric_label(res: OrbitErrors, which: str) -> str:
    if which == "errors":
        return _DISTANCE_LABELS.get(res.distance, f"{res.distance} error")
    return {"abs_errors": "max-abs error", "rel_errors": "relative error", "flips": "flip rate"}.get(which, which)


def _summary(v: Tensor, spread: Optional[str]) -> tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
    """Mean over samples of ``v [N, K]`` and its band (interquartile or ±std), NaN-aware, as numpy ``[K]``."""
    mean = v.nanmean(0)
    if spread == "iqr":
        lo, hi = torch.nanquantile(v, 0.25, dim=0), torch.nanquantile(v, 0.75, dim=0)
    elif spread == "std":
        std = ((v - mean).square().nanmean(0)).sqrt()
        lo, hi = mean - std, mean + std
    else:
        return mean.numpy(), None, None
    return mean.numpy(), lo.numpy(), hi.numpy()


def _nonfinite_note(items: Sequence[OrbitErrors]) -> str:
    n = sum(r.n_nonfinite for r in items)
    return f"\n{n} non-finite entries masked" if n else ""


def _validate_labels(labels: Optional[Sequence[str]], n: int) -> list[Optional[str]]:
    if labels is None:
        return [None] if n == 1 else [f"#{i}" for i in range(n)]
    labels = [str(lab) for lab in labels]
    if len(labels) != n:
        raise ValueError(f"Expected one label per result ({n}), but got {len(labels)} labels.")
    return labels


# ==================================================================================================== plots
def aggregate(
    results: Union[OrbitErrors, Sequence[OrbitErrors]],
    *,
    labels: Optional[Sequence[str]] = None,
    which: str = "errors",
    classes: Optional[Tensor] = None,
    spread: Optional[str] = "iqr",
    ax: Any = None,
) -> Any:
    """Aggregate NERO plot: the mean over samples of ``which`` along the orbit, with its spread band.

    Several results (the same probe at several epochs, or several runs) are overlaid, coloured along viridis in
    the given order (epoch as colour). With ``classes``, one result is split into one curve per class.

    Args:
        results: one :class:`~eqmonitor.results.OrbitErrors` or several of the same group (``errors [N, K]``).
        labels: legend labels, one per result (epochs, steps or run names).
        which: ``"errors"``, ``"abs_errors"``, ``"rel_errors"``, ``"confidence"`` or ``"flips"``.
        classes: ``[N]`` class of each sample (one result only): one curve per class.
        spread: ``"iqr"`` (25–75 % band), ``"std"`` (±1 std) or ``None``; drawn for every curve when there are at
            most 3, else for the last one only.
        ax: draw into this matplotlib Axes (polar for rotation groups, else Cartesian) instead of a new figure.

    Returns:
        The :class:`matplotlib.figure.Figure`.

    Raises:
        ValueError: no results, results of different groups, a bad ``which``/``spread``/``labels``/``classes``.
        TypeError: ``results`` are not OrbitErrors.

    Example:
        >>> import torch, eqmonitor as eqm
        >>> sym = eqm.Symmetry.from_spec(name="rotation", group="so2")
        >>> res = eqm.functional.orbit_errors(eqm.demos.SmallCNN(size=12, width=4), torch.randn(4, 1, 12, 12),
        ...                                   sym, sym.group.grid(8), max_batch=32)
        >>> fig = aggregate(res)
        >>> fig.axes[0].name, len(fig.axes[0].lines[0].get_ydata())  # closed around the circle
        ('polar', 9)
    """
    items = _as_list(results)
    if spread not in _SPREADS:
        raise ValueError(f"Expected `spread` to be one of {_SPREADS}, but got {spread!r}.")
    names = _validate_labels(labels, len(items))
    tables = [_table(r, which) for r in items]
    if classes is not None:
        if len(items) != 1:
            raise ValueError("Expected one result with `classes` (one curve per class), but got several results.")
        classes = torch.as_tensor(classes).reshape(-1).cpu()
        if classes.shape[0] != items[0].n_samples:
            raise ValueError(f"Expected `classes` of shape [{items[0].n_samples}], but got {tuple(classes.shape)}.")
        kinds = classes.unique().tolist()
        tables = [tables[0][classes == k] for k in kinds]
        items, names = items * len(kinds), [f"class {k}" for k in kinds]
    colors = _colors(len(tables), "tab10" if classes is not None and len(tables) <= 10 else "viridis")
    shown = _legend_labels([n or "" for n in names]) if len(names) > 1 else names
    curves = []
    for i, (r, v) in enumerate(zip(items, tables)):
        band = spread if len(tables) <= 3 or i == len(tables) - 1 else None
        curves.append(_Curve(r.elements.detach().cpu().numpy(), *_summary(v, band), shown[i], colors[i]))
    plane = _layout(items[0].group) == "plane"
    fig = (new_figure((4.0 * len(curves) + 1, 4.0) if plane else (6.5, 5.0))) if ax is None else _root(ax)
    metric = _metric_label(items[0], which)
    bounds = (0.0, 1.0) if which in ("confidence", "flips") else None
    axes = _draw(fig if ax is None else ax.get_figure(), ax, items[0].group, curves, f"mean {metric}", bounds)
    band = {"iqr": " (band: interquartile range)", "std": " (band: ±1 std)", None: ""}[None if plane else spread]
    r = items[-1]
    title = f"{r.symmetry} ({r.group.name}): mean {metric} over {r.n_samples} samples{band}{_nonfinite_note(items)}"
    (fig.suptitle if len(axes) > 1 else axes[0].set_title)(title, fontsize="medium")
    return fig


def individual(
    results: Union[OrbitErrors, Sequence[OrbitErrors]],
    sample: int,
    *,
    labels: Optional[Sequence[str]] = None,
    which: str = "errors",
    confidence: bool = True,
    ax: Any = None,
) -> Any:
    """Individual NERO plot: one sample's ``which`` along its orbit (and its true-class confidence, if measured).

    Args:
        results: one :class:`~eqmonitor.results.OrbitErrors`, or several (the same probe over training) overlaid.
        sample: index of the sample (``0 <= sample < N``; negative counts from the end).
        labels: legend labels, one per result.
        which: as for :func:`aggregate`.
        confidence: also draw ``results.confidence`` (NERO's curve) in a second panel, with the confidence at the
            untransformed input as a dotted reference, when the results have it and no ``ax`` is given.
        ax: draw the metric into this Axes (then no confidence panel).

    Returns:
        The :class:`matplotlib.figure.Figure`.

    Raises:
        ValueError: ``sample`` out of range, or as for :func:`aggregate`.

    Example:
        >>> import torch, eqmonitor as eqm
        >>> sym = eqm.Symmetry.from_spec(name="c4", group="c4")
        >>> res = eqm.functional.orbit_errors(eqm.demos.SmallCNN(size=12, width=4), torch.randn(4, 1, 12, 12),
        ...                                   sym, sym.group.all_elements(), max_batch=32)
        >>> fig = individual(res, sample=2)
        >>> len(fig.axes[0].lines[0].get_ydata())  # 4 elements, closed around the circle
        5
    """
    items = _as_list(results)
    n = items[0].n_samples
    if isinstance(sample, bool) or not isinstance(sample, (int, np.integer)) or not -n <= sample < n:
        raise ValueError(f"Expected `sample` to be an integer in [{-n}, {n}), but got {sample!r}.")
    names = _validate_labels(labels, len(items))
    names = _legend_labels([m or "" for m in names]) if len(items) > 1 else names
    colors, group = _colors(len(items)), items[0].group
    metric = _metric_label(items[0], which)
    with_conf = confidence and ax is None and which != "confidence" and all(r.confidence is not None for r in items)
    fig = new_figure((11.0, 5.0) if with_conf else (6.5, 5.0)) if ax is None else _root(ax)
    panels = fig.subfigures(1, 2) if with_conf else [fig if ax is None else ax.get_figure()]
    for panel, kind in zip(panels, [which, "confidence"]):
        label = _metric_label(items[0], kind)
        curves = [
            _Curve(r.elements.detach().cpu().numpy(), _table(r, kind)[sample].numpy(), None, None, nm, col)
            for r, nm, col in zip(items, names, colors)
        ]
        bounds = (0.0, 1.0) if kind in ("confidence", "flips") else None
        axes = _draw(panel, ax if kind == which else None, group, curves, label, bounds)
        if kind == "confidence" and _layout(group) != "plane":
            for r, col in zip(items, colors):
                _reference(axes[0], None if r.confidence_ref is None else float(r.confidence_ref[sample]), col)
        if with_conf and len(axes) == 1:
            axes[0].set_title(label, fontsize="medium")
    r = items[-1]
    title = f"{r.symmetry} ({r.group.name}): sample {sample % n}, {metric} along its orbit{_nonfinite_note(items)}"
    (fig.suptitle if with_conf or len(axes) > 1 else axes[0].set_title)(title, fontsize="medium")
    return fig


def dimension_reduction(
    results: OrbitErrors,
    *,
    which: str = "errors",
    method: Union[str, Callable[[np.ndarray], np.ndarray]] = "pca",
    color_by: str = "mean",
    n_outliers: int = 3,
    ax: Any = None,
) -> Any:
    """NERO dimension-reduction scatter: each sample's orbit profile ``[K]`` reduced to 2-D, coloured by its mean or
    variance, the ``n_outliers`` highest labelled with their sample index.

    Samples with any non-finite entry are left out (PCA needs complete rows); the title says how many.

    Args:
        results: one :class:`~eqmonitor.results.OrbitErrors` (``errors [N, K]``).
        which: as for :func:`aggregate`.
        method: ``"pca"`` (SVD of the centred profiles, :func:`pca_2d`), or a callable ``[n, K] -> [n, 2]`` (e.g.
            a UMAP or t-SNE ``fit_transform``).
        color_by: ``"mean"`` or ``"variance"`` of each profile.
        n_outliers: how many samples with the highest colour value to label.
        ax: draw into this Axes instead of a new figure.

    Returns:
        The :class:`matplotlib.figure.Figure`.

    Raises:
        ValueError: fewer than 3 samples with finite profiles, or a bad ``method``/``color_by``/``n_outliers``.

    Example:
        >>> import torch, eqmonitor as eqm
        >>> sym = eqm.Symmetry.from_spec(name="rotation", group="so2")
        >>> res = eqm.functional.orbit_errors(eqm.demos.SmallCNN(size=12, width=4), torch.randn(6, 1, 12, 12),
        ...                                   sym, sym.group.grid(8), max_batch=32)
        >>> fig = dimension_reduction(res, color_by="variance", n_outliers=2)
        >>> fig.axes[0].collections[0].get_offsets().shape, len(fig.axes[0].texts)
        ((6, 2), 2)
    """
    if not isinstance(results, OrbitErrors):
        raise TypeError(f"Expected `results` to be one OrbitErrors, but got {type(results).__name__}.")
    if color_by not in ("mean", "variance"):
        raise ValueError(f"Expected `color_by` to be 'mean' or 'variance', but got {color_by!r}.")
    if not (isinstance(n_outliers, int) and n_outliers >= 0):
        raise ValueError(f"Expected `n_outliers` to be a non-negative integer, but got {n_outliers!r}.")
    if not (method == "pca" or callable(method)):
        raise ValueError(f"Expected `method` to be 'pca' or a callable [n, K] -> [n, 2], but got {method!r}.")
    values = _table(results, which).numpy()
    keep = np.isfinite(values).all(1)
    index = np.nonzero(keep)[0]
    if index.size < 3:
        raise ValueError(
            f"Expected at least 3 samples with finite orbit profiles for a 2-D reduction, but got {index.size} "
            f"(of {values.shape[0]}; {int((~keep).sum())} non-finite). Probe more samples."
        )
    rows = values[keep]
    if method == "pca":
        coords, explained = pca_2d(rows)
        axis_labels = [f"PC{i + 1} ({100 * e:.0f}% of variance)" for i, e in enumerate(explained)]
        name = "PCA"
    else:
        coords = np.asarray(method(rows), dtype=np.float64)
        if coords.shape != (rows.shape[0], 2):
            raise ValueError(f"Expected `method` to return shape {(rows.shape[0], 2)}, but got {coords.shape}.")
        axis_labels, name = ["dimension 1", "dimension 2"], getattr(method, "__name__", "custom")
    color = rows.mean(1) if color_by == "mean" else rows.var(1)
    metric = _metric_label(results, which)
    fig = new_figure((6.5, 5.0)) if ax is None else _root(ax)
    ax = fig.add_subplot() if ax is None else ax
    points = ax.scatter(coords[:, 0], coords[:, 1], c=color, cmap="viridis", s=24)
    ax.get_figure().colorbar(points, ax=ax, label=f"{color_by} of {metric} over the orbit")
    for i in np.argsort(-color, kind="stable")[:n_outliers]:
        ax.annotate(str(int(index[i])), (coords[i, 0], coords[i, 1]), xytext=(4, 4), textcoords="offset points",
                    fontsize="small")  # fmt: skip
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    dropped = np.nonzero(~keep)[0].tolist()
    note = ""
    if dropped:
        shown = ", ".join(map(str, dropped[:5])) + (", …" if len(dropped) > 5 else "")
        note = f"\n{len(dropped)} samples with non-finite outputs excluded ({shown})"
    ax.set_title(
        f"{results.symmetry} ({results.group.name}): orbit profiles of {index.size} samples ({metric}), {name}{note}",
        fontsize="medium",
    )
    return fig


def layer_table(layer_results: LayerErrors, *, ax: Any = None) -> Any:
    """Layer-wise bar chart: each layer's mean isolated and cumulative error (log axis), the worst value as a
    marker, the tolerance line, and the first failing layer highlighted.

    Exact zeros are drawn down to the axis floor (a decade below the smallest positive value or the tolerance);
    layers whose isolated error was not measured (NaN) get no bar.

    Args:
        layer_results: :class:`~eqmonitor.results.LayerErrors` (``[L, N, K]`` tables).
        ax: draw into this Axes instead of a new figure.

    Returns:
        The :class:`matplotlib.figure.Figure`.

    Example:
        >>> import torch, eqmonitor as eqm
        >>> sym = eqm.Symmetry.from_spec(name="c4", group="c4")
        >>> lr = eqm.functional.layer_errors(eqm.demos.SmallCNN(size=12, width=4), torch.randn(3, 1, 12, 12), sym,
        ...                                  sym.group.all_elements())
        >>> fig = layer_table(lr)
        >>> fig.axes[0].get_xscale(), [len(bars) for bars in fig.axes[0].containers] == [len(lr.names)] * 2
        ('log', True)
    """
    if not isinstance(layer_results, LayerErrors):
        raise TypeError(f"Expected `layer_results` to be LayerErrors, but got {type(layer_results).__name__}.")
    lr = layer_results
    n = len(lr.names)
    stats = {}
    for kind in ("isolated", "cumulative"):
        t = getattr(lr, kind).detach().to("cpu", torch.float64).flatten(1)
        t = t.masked_fill(~torch.isfinite(t), float("nan"))
        worst = t.nan_to_num(nan=-math.inf).amax(1) if t.shape[1] else t.new_full((n,), math.nan)
        stats[kind] = (t.nanmean(1).numpy(), worst.masked_fill(worst == -math.inf, math.nan).numpy())
    every = np.concatenate([v for pair in stats.values() for v in pair] + [np.array([lr.tolerance])])
    positive = every[np.isfinite(every) & (every > 0)]
    floor = 10.0 ** (math.floor(math.log10(positive.min())) - 1) if positive.size else 1e-12
    fig = new_figure((8.5, max(2.5, 0.45 * n + 1.5))) if ax is None else _root(ax)
    ax = fig.add_subplot() if ax is None else ax
    y, h = np.arange(n), 0.38
    for offset, kind, color in ((-h / 2, "isolated", "C0"), (h / 2, "cumulative", "C1")):
        mean, worst = stats[kind]
        shown = np.where(mean > floor, mean, np.where(mean >= 0, floor, np.nan))
        ax.barh(y + offset, shown - floor, left=floor, height=h, color=color, label=f"{kind} (mean)")
        ax.plot(np.where(worst > floor, worst, np.nan), y + offset, linestyle="none", marker="d", markersize=4,
                color="black", label="worst" if kind == "isolated" else None)  # fmt: skip
        for i in np.nonzero(~(mean > floor))[0]:  # exact zeros and unmeasured layers get a word instead of a bar
            word = "n/a" if np.isnan(mean[i]) else "0"
            ax.text(floor * 1.3, y[i] + offset, word, va="center", fontsize="x-small")
    ax.axvline(lr.tolerance, color="red", linestyle="--", label=f"tolerance {lr.tolerance:.1e}")
    ax.set_xscale("log")
    ax.set_yticks(y, [f"{nm} ({tp})" for nm, tp in zip(lr.names, lr.types)])
    ax.invert_yaxis()  # forward order, top to bottom
    if lr.first_failing is not None:
        i = lr.names.index(lr.first_failing)
        ax.axhspan(i - 0.5, i + 0.5, color="red", alpha=0.12, zorder=0)
        ax.get_yticklabels()[i].set_color("red")
        ax.get_yticklabels()[i].set_fontweight("bold")
    ax.set_xlabel("relative error (log axis)")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    failing = lr.first_failing or "none"
    ax.set_title(
        f"{lr.symmetry}: layer-wise errors ({lr.mode} mode), first failing layer: {failing}", fontsize="medium"
    )
    return fig
