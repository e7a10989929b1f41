"""What a NERO figure needs from a check's results, as small picklable numpy data that is free of torch.

The figure worker process unpickles these without importing torch (or any eqmonitor module that does), so a
check's results cross the process boundary as a few tens of kB of float64 arrays. The converters
(:func:`orbit_data`, :func:`layer_data`) run in the training process, where torch is already loaded; they import
it lazily so that this module itself stays torch-free.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

__all__ = ["LayerData", "Layout", "OrbitData", "layer_data", "orbit_data"]

_SO3_AXES = ("about x", "about y", "about z")
_SO3_STYLES = ("-", "--", ":", "-.", (0, (1, 1)), (0, (5, 1)))


@dataclass(frozen=True)
class Layout:
    """How a curve over the group's elements is laid out, decided from the group in the training process.

    Attributes:
        kind: ``"circle"`` (polar chart over an angle), ``"cartesian"`` (a line over ``x``), ``"finite"`` (points
            over the element index) or ``"plane"`` (heat map over the shifts ``(x, y)``).
        x: ``[K]`` float64 position of each element: angle in radians (circle), abscissa (cartesian), index
            (finite), shift ``dx`` (plane).
        y: ``[K]`` shift ``dy`` of each element (plane only), else ``None``.
        part: ``[K]`` int64 sub-curve of each element (dihedral: unflipped/flipped; SO3 grid: rotation axis).
        part_names: legend name of each part (``""`` for a single part).
        part_styles: ``(linestyle, marker, markersize)`` of each part.
        xlabel: label of the element axis; ``xscale``: ``"linear"`` or ``"log"``.
        ticks: tick labels of the elements (finite groups of at most 12 elements), else ``None``.
        group: the group's name; ``group_repr``: its ``repr``.
    """

    kind: str
    x: np.ndarray
    y: Optional[np.ndarray]
    part: np.ndarray
    part_names: tuple
    part_styles: tuple
    xlabel: str
    xscale: str
    ticks: Optional[tuple]
    group: str
    group_repr: str

    def signature(self) -> tuple:
        """Everything the figure's layout depends on (a cached figure is rebuilt when it changes)."""
        y = None if self.y is None else self.y.tobytes()
        return (self.kind, self.x.tobytes(), y, self.part.tobytes(), self.part_names, self.part_styles, self.xlabel,
                self.xscale, self.ticks)  # fmt: skip


@dataclass(frozen=True)
class OrbitData:
    """One check's orbit table for plotting (from :class:`~eqmonitor.results.OrbitErrors`).

    Attributes:
        symmetry: the symmetry's name; ``metric``: what ``values`` measure (``"relative error"``).
        values: ``[N, K]`` float64, NaN where the output was non-finite.
        confidence: ``[N, K]`` float64 true-class confidence (NaN where non-finite), or ``None``.
        confidence_ref: ``[N]`` float64 confidence at the untransformed input, or ``None``.
        n_nonfinite: how many entries were non-finite; ``layout``: the group's :class:`Layout`.
        bounds: fixed value range (``(0, 1)`` for rates), else ``None`` (from the data).
    """

    symmetry: str
    metric: str
    values: np.ndarray
    confidence: Optional[np.ndarray]
    confidence_ref: Optional[np.ndarray]
    n_nonfinite: int
    layout: Layout
    bounds: Optional[tuple] = None

    @property
    def n_samples(self) -> int:
        return self.values.shape[0]

    def worst_sample(self) -> int:
        """The sample holding the largest finite value (the first such; 0 if none), as ``OrbitErrors.worst``."""
        v = np.nan_to_num(self.values, nan=-math.inf)
        return int(np.argmax(v)) // max(v.shape[1], 1) if v.size else 0

    def finite_rows(self) -> np.ndarray:
        """``bool [N]``: samples whose whole orbit is finite (those a 2-D reduction can use)."""
        return np.isfinite(self.values).all(1)


@dataclass(frozen=True)
class LayerData:
    """Layer-wise errors for plotting (from :class:`~eqmonitor.results.LayerErrors`).

    Attributes:
        names, types: layer names and module class names, forward order.
        isolated, cumulative: ``[L, M]`` float64 errors over the (sample, element) pairs, NaN where not measured.
        tolerance, first_failing, mode, symmetry: as in ``LayerErrors``.
    """

    symmetry: str
    names: tuple
    types: tuple
    isolated: np.ndarray
    cumulative: np.ndarray
    tolerance: float
    first_failing: Optional[str]
    mode: str


# ==================================================================================================== converters
_CONVERTED: dict = {}  # (id(result), which) -> (weakref to result, OrbitData): overlays resubmit the same results
_MAX_CONVERTED = 64


def _host(t: Any) -> np.ndarray:
    """A host numpy view (or copy) of a tensor or array, without torch ops where it can be avoided."""
    if hasattr(t, "detach"):
        t = t.detach().cpu()
        try:
            return t.numpy()
        except TypeError:  # bfloat16 and friends have no numpy dtype
            return t.double().numpy()
    return np.asarray(t)


def _numpy(t: Any, nonfinite: Optional[np.ndarray] = None) -> np.ndarray:
    """A float64 host copy with non-finite entries (and those ``nonfinite`` flags) as NaN."""
    a = np.array(_host(t), dtype=np.float64)
    a[~np.isfinite(a)] = np.nan
    if nonfinite is not None:
        a[nonfinite] = np.nan
    return a


def layout_of(group: Any, elements: np.ndarray) -> Layout:
    """The :class:`Layout` of ``elements [K, p]`` of ``group`` (the same choices as the one-shot NERO plots)."""
    from eqmonitor.plots.render import _angles, _layout, _so3_planes

    el = np.asarray(elements, dtype=np.float64)
    k = el.shape[0]
    kind = _layout(group)
    one = np.zeros(k, dtype=np.int64)
    common = dict(y=None, ticks=None, xscale="linear", group=group.name, group_repr=repr(group))
    if kind == "circle":
        return Layout("circle", _angles(group, el), part=one, part_names=("",), part_styles=(("-", "o", 3),),
                      xlabel="angle (degrees)", **common)  # fmt: skip
    if kind == "dihedral":
        flip, styles = el[:, 1].astype(np.int64), (("-", "o", 4), ("--", "s", 4))
        return Layout("circle", _angles(group, el), part=flip, part_names=("unflipped", "flipped"), part_styles=styles,
                      xlabel="rotation angle (degrees)", **common)  # fmt: skip
    if kind == "plane":
        common.update(y=el[:, 1].copy())
        return Layout("plane", el[:, 0].copy(), part=one, part_names=("",), part_styles=(("-", "", 0),),
                      xlabel="dx (pixels)", **common)  # fmt: skip
    if kind == "scale":
        common.update(xscale="log")
        return Layout("cartesian", np.exp(el[:, 0]), part=one, part_names=("",), part_styles=(("-", "o", 4),),
                      xlabel="scale factor (log axis)", **common)  # fmt: skip
    if kind == "so3":
        n = _so3_planes(group, el)
        if not n:
            label = f"element index ({group.name.upper()} elements, not the axis grid)"
            return Layout("cartesian", np.arange(k, dtype=np.float64), part=one, part_names=("",),
                          part_styles=(("-", "o", 3),), xlabel=label, **common)  # fmt: skip
        blocks = k // n
        names = tuple(_SO3_AXES[b % 3] if b < 3 else f"inversion ∘ {_SO3_AXES[b % 3]}" for b in range(blocks))
        return Layout("cartesian", np.tile(np.arange(n) * 360.0 / n, blocks), part=np.repeat(np.arange(blocks), n),
                      part_names=names, part_styles=tuple((_SO3_STYLES[b], "", 0) for b in range(blocks)),
                      xlabel="rotation angle about each coordinate axis (degrees)", **common)  # fmt: skip
    if kind == "line":
        return Layout("cartesian", el[:, 0].copy(), part=one, part_names=("",), part_styles=(("-", "o", 3),),
                      xlabel=group.param_names[0], **common)  # fmt: skip
    if k <= 12:
        import torch

        common.update(ticks=tuple(group.describe(torch.as_tensor(e)) for e in elements))
    return Layout("finite", np.arange(k, dtype=np.float64), part=one, part_names=("",),
                  part_styles=(("none", "o", 6),), xlabel=f"element of {group!r}", **common)  # fmt: skip


def orbit_data(result: Any, which: str = "errors") -> OrbitData:
    """:class:`OrbitData` of an :class:`~eqmonitor.results.OrbitErrors` (on any device); an ``OrbitData`` is
    returned as is.

    Results are taken as immutable: a conversion is remembered (by identity, while the results are alive), since
    an overlay resubmits the same results at every check.

    Args:
        result: the orbit results.
        which: the metric to plot: ``"errors"`` (the symmetry's distance), ``"abs_errors"``, ``"rel_errors"`` or
            ``"flips"``.
    """
    if isinstance(result, OrbitData):
        return result
    if which not in ("errors", "abs_errors", "rel_errors", "flips"):
        raise ValueError(f"Expected `which` to be 'errors', 'abs_errors', 'rel_errors' or 'flips', got {which!r}.")
    key = (id(result), which)
    hit = _CONVERTED.get(key)
    if hit is not None and hit[0]() is result:
        return hit[1]
    from eqmonitor.plots.nero import _metric_label

    nonfinite = _host(result.nonfinite).astype(bool)
    table = getattr(result, which)
    if table is None:
        raise ValueError(f"These results have no `{which}` (it needs labels / class-score outputs); use `errors`.")
    data = OrbitData(
        symmetry=result.symmetry,
        metric=_metric_label(result, which),
        values=_numpy(table, nonfinite),
        confidence=None if result.confidence is None else _numpy(result.confidence, nonfinite),
        confidence_ref=None if result.confidence_ref is None else _numpy(result.confidence_ref),
        n_nonfinite=int(nonfinite.sum()),
        layout=layout_of(result.group, _host(result.elements)),
        bounds=(0.0, 1.0) if which == "flips" else None,
    )
    try:
        _CONVERTED[key] = (weakref.ref(result), data)
    except TypeError:  # not weak-referenceable: no caching
        return data
    while len(_CONVERTED) > _MAX_CONVERTED:
        del _CONVERTED[next(iter(_CONVERTED))]
    return data


def layer_data(layers: Any) -> LayerData:
    """:class:`LayerData` of a :class:`~eqmonitor.results.LayerErrors` (on any device); a ``LayerData`` is returned
    as is."""
    if isinstance(layers, LayerData):
        return layers
    n = len(layers.names)
    return LayerData(
        symmetry=layers.symmetry,
        names=tuple(str(nm) for nm in layers.names),
        types=tuple(str(tp) for tp in layers.types),
        isolated=_numpy(layers.isolated).reshape(n, -1),
        cumulative=_numpy(layers.cumulative).reshape(n, -1),
        tolerance=float(layers.tolerance),
        first_failing=layers.first_failing,
        mode=layers.mode,
    )
