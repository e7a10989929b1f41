"""Batch coupling: does a model's output for one sample depend on the rest of its batch?

:func:`~eqmonitor.functional.orbit_errors` stacks (sample × element) pairs of many samples and elements into each
forward (``chunking="mixed"``). A model coupled across its batch is then measured on a batch it never sees in use:
a radius graph built over the whole batch, batch statistics, attention across samples. Measured: e3nn's
``gate_points_2102`` network on 3 clouds of 8 points measures 1e-15 in e3nn's own test and 0.56 in mixed chunks of
96 pairs (768 points), because ``torch.cdist`` switches to its matrix-product path above 25 points, whose rounding
puts self-distances above 0, and the network's ``r > 0`` test then adds self-loops.

The test is cheap: a few pairs of the first chunk are pushed through the model again in other, smaller batches, in
reverse order; an uncoupled model gives the same outputs within :func:`coupling_tolerance`. It runs once per (model,
input signature, chunk size), costs two forwards of two pairs (at most three of one), and warns at most once per
model and signature, with a :class:`BatchCouplingWarning` that names the likely causes and the chunkings that never
mix samples.
"""

from __future__ import annotations

import warnings
import weakref
from typing import Callable, Hashable, Optional

import torch
from torch import Tensor

from eqmonitor._verdicts import verdict_bands

__all__ = ["BatchCouplingWarning", "clear_cache", "regrouped_gap", "warn_if_coupled"]

_SUBSET = 4  # pairs of the first chunk that are run again
_WARNED = "warned"
_seen: "weakref.WeakKeyDictionary[object, dict[Hashable, set]]" = weakref.WeakKeyDictionary()


class BatchCouplingWarning(UserWarning):
    """A model's outputs for the same inputs changed when eqmonitor batched them differently: its output for one
    sample depends on the rest of its batch, so mixed (sample × element) chunks measure it on batches it never sees.
    Measure it with ``chunking="per_sample"`` or ``chunking="per_element"``."""


def regrouped_gap(forward: Callable[[Tensor], Tensor], xs: Tensor, out: Tensor) -> Optional[Tensor]:
    """How much ``forward`` changes a few rows of the batch ``xs`` when they are run in other batches.

    Up to four rows spread over ``xs [C, ...]`` are run again in reverse order, two per forward (one when ``C < 4``,
    so that every new batch differs from ``xs``), and compared with their rows of ``out = forward(xs)``:

    .. math:: \\text{gap} = \\max_i \\lVert f_{\\text{regrouped}}(x_i) - \\text{out}_i \\rVert \\,/\\,
              \\max_i \\lVert \\text{out}_i \\rVert

    over the rows whose outputs are finite (relative to the largest output, so that a near-zero row's rounding does
    not count). ``None`` when ``C < 2`` (nothing to regroup) or no row is finite.

    Example:
        >>> x = torch.arange(8.0).reshape(4, 2)
        >>> float(regrouped_gap(lambda t: 2 * t, x, 2 * x))  # uncoupled
        0.0
        >>> centred = lambda t: t - t.mean(0)  # subtracts the batch mean
        >>> float(regrouped_gap(centred, x, centred(x))) > 0.1
        True
    """
    c = xs.shape[0]
    if c < 2:
        return None
    rows = torch.linspace(0, c - 1, min(_SUBSET, c)).round().long().unique().flip(0).to(xs.device)
    group = 2 if c >= 4 else 1
    again = torch.cat([forward(xs.index_select(0, rows[i : i + group])) for i in range(0, rows.shape[0], group)])
    a, b = again.detach().flatten(1).double(), out.detach().index_select(0, rows).flatten(1).double()
    if a.shape != b.shape:
        return a.new_tensor(float("inf"))  # the output's shape depends on the batch
    finite = torch.isfinite(a).all(1) & torch.isfinite(b).all(1)
    if not bool(finite.any()):
        return None
    a, b = a[finite], b[finite]
    scale = b.norm(dim=1).max()
    return (a - b).norm(dim=1).max() / torch.where(scale > 0, scale, torch.ones_like(scale))


def _message(model: object, gap: float, dtype: torch.dtype, tol: float) -> str:
    name = type(model).__name__
    return (
        f"eqmonitor: {name}'s outputs for the same inputs changed by {gap:.2e} (relative; the tolerance for {dtype} "
        f"is {tol:.0e}) when they were run in other batches: its output for one sample depends on the rest of its "
        "batch. With the default chunking='mixed', each forward holds (sample × element) pairs of many samples and "
        "elements, so the model is measured on batches it never sees in use, and the errors can be far off. Likely "
        "causes: a graph built over the whole batch (a radius or k-NN graph without a per-sample batch index; "
        "torch.cdist on more than 25 points rounds self-distances above 0, which creates self-loops), batch "
        "statistics (BatchNorm with track_running_stats=False, normalising by batch means), attention across "
        "samples, or randomness left on in eval mode. Pass chunking='per_sample' (each (sample, element) pair alone "
        "in its forward) or chunking='per_element' (blocks of max_batch samples moved by one element per forward, "
        "as one batch; set max_batch to the batch size the model is used with) to orbit_errors, audit, "
        "assert_equivariant, EquivarianceError or EquivarianceMonitor."
    )


def warn_if_coupled(
    model: object,
    key: Hashable,
    chunk: int,
    forward: Callable[[Tensor], Tensor],
    xs: Tensor,
    out: Tensor,
    dtype: torch.dtype,
) -> Optional[float]:
    """Test ``model`` for batch coupling on its first chunk ``xs`` (outputs ``out``) unless this (model, ``key``,
    ``chunk``) was tested before; warn with :class:`BatchCouplingWarning` if the regrouped outputs move by more than
    :func:`coupling_tolerance` of the dtype, at most once per (model, ``key``).

    Returns the measured gap, or ``None`` when nothing was measured (already tested, a chunk of one pair, or a model
    that cannot run on the smaller batches: then there is no verdict, and no warning).
    """
    try:
        per_model = _seen.setdefault(model, {})
    except TypeError:  # not weak-referenceable: test every time (Python's warning filter still shows it once)
        per_model = {}
    seen = per_model.setdefault(key, set())
    if _WARNED in seen or chunk in seen:
        return None
    seen.add(chunk)
    try:
        gap = regrouped_gap(forward, xs, out)
    except (RuntimeError, ValueError, IndexError):  # e.g. a model that needs more than two samples per batch
        return None
    if gap is None:
        return None
    value, tol = float(gap), coupling_tolerance(dtype)  # one host transfer, once per model and signature
    if not value <= tol:
        seen.add(_WARNED)
        warnings.warn(_message(model, value, dtype, tol), BatchCouplingWarning, stacklevel=4)
    return value


def coupling_tolerance(dtype: torch.dtype) -> float:
    """The regrouping gap above which a model counts as coupled: the geometric middle of the dtype's "approximate"
    band (1e-3 for float32, 3e-6 for float64). Its "excellent" top alone (1e-4 for float32) is too tight: an ordinary
    float32 CNN's outputs move by up to 3.4e-4 between batch sizes (other convolution algorithms), while coupled
    models move by 1e-2 and more."""
    _, excellent, approximate = verdict_bands(dtype)
    return (excellent * approximate) ** 0.5


def clear_cache() -> None:
    """Forget which models were tested (the next probe of each tests it again)."""
    _seen.clear()
