"""Figure jobs: what goes to the figure process (:class:`FigureJob`), what comes back (:class:`RenderedFigures`), and
the rendering itself (:func:`render_job`), which the worker process runs and a caller may run in its own process.

Torch-free, as everything the figure process imports: numpy and matplotlib only.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Optional

from eqmonitor.plots.figures import KINDS, FigureCache
from eqmonitor.plots.payload import LayerData, OrbitData, layer_data, orbit_data
from eqmonitor.plots.png import encode_png

__all__ = ["FigureJob", "RenderedFigures", "render_job"]


@dataclass
class FigureJob:
    """The figures of one check of one symmetry.

    Attributes:
        symmetry: the symmetry's name (images are keyed ``equivariance/<symmetry>/<kind>``).
        step: the global step the check belongs to.
        overlay: ``(step, results)`` of the last checks, oldest first, the last one being this check's; results are
            :class:`~eqmonitor.results.OrbitErrors` (any device) or :class:`~eqmonitor.plots.payload.OrbitData`.
        layers: the check's :class:`~eqmonitor.results.LayerErrors` (or ``LayerData``), or ``None``.
        kinds: the figure kinds to draw (default: every kind that applies).
    """

    symmetry: str
    step: int
    overlay: list
    layers: Optional[Any] = None
    kinds: Optional[tuple] = None


@dataclass
class RenderedFigures:
    """What came back for one job: ``images`` (key → :class:`~eqmonitor.plots.png.EncodedImage`, the PNG of an
    RGB ``[H, W, 3]`` ``uint8`` figure; ``np.asarray`` decodes it), render ``seconds`` per kind (drawing and
    rasterising), ``encode_seconds`` per kind (PNG encoding), and the ``error`` text (tracebacks) of the figures that
    failed, if any; the others are still in ``images``."""

    symmetry: str
    step: int
    images: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    error: Optional[str] = None
    encode_seconds: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Payload:
    """A job in torch-free form (what crosses the process boundary)."""

    symmetry: str
    step: int
    overlay: tuple
    layers: Optional[LayerData]
    kinds: Optional[tuple]


def _payload(job: FigureJob) -> _Payload:
    if not job.overlay:
        raise ValueError("Expected `overlay` to hold at least this check's (step, results), but it is empty.")
    overlay = tuple((int(s), orbit_data(r)) for s, r in job.overlay)
    layers = None if job.layers is None else layer_data(job.layers)
    return _Payload(job.symmetry, int(job.step), overlay, layers, None if job.kinds is None else tuple(job.kinds))


def _render(p: _Payload, cache: FigureCache) -> RenderedFigures:
    """Draw every figure of ``p`` that applies; a figure that fails is reported in ``error``, not raised."""
    latest: OrbitData = p.overlay[-1][1]
    plan = [(KINDS[0], lambda: cache.aggregate(p.overlay)), (KINDS[1], lambda: cache.individual(latest))]
    if int(latest.finite_rows().sum()) >= 3:  # PCA needs 3 samples with finite orbits
        plan.append((KINDS[2], lambda: cache.dimension_reduction(latest)))
    if p.layers is not None:
        plan.append((KINDS[3], lambda: cache.layers(p.layers)))
    out, errors = RenderedFigures(p.symmetry, p.step), []
    for kind, draw in plan:
        if p.kinds is not None and kind not in p.kinds:
            continue
        started = time.perf_counter()
        try:
            rgb = draw()
        except Exception:
            errors.append(f"{kind}: {traceback.format_exc()}")
            cache.discard(p.symmetry, kind)  # it may be half-updated
            out.seconds[kind] = time.perf_counter() - started
            continue
        drawn = time.perf_counter()
        out.seconds[kind] = drawn - started
        try:
            out.images[f"equivariance/{p.symmetry}/{kind}"] = encode_png(rgb)
        except Exception:
            errors.append(f"{kind}: {traceback.format_exc()}")
        out.encode_seconds[kind] = time.perf_counter() - drawn
    out.error = "\n".join(errors) or None
    return out


def render_job(job: FigureJob, cache: Optional[FigureCache] = None) -> RenderedFigures:
    """Render ``job`` in this process (what the worker process does), reusing ``cache``'s figures if given.

    Never raises for a figure that fails to draw: its traceback is in ``error``.
    """
    try:
        payload = _payload(job)
    except Exception:
        return RenderedFigures(job.symmetry, job.step, error=traceback.format_exc())
    return _render(payload, FigureCache() if cache is None else cache)
