"""What the explorer page shows of one run, computed in Python once: per check the orbit tables, their PCA, the
class probabilities and the consensus (and the errors against it, for runs monitored with ``reference="consensus"``);
the probe inputs moved by every element; the layout of the group's elements.

Everything is flat ``float32`` / ``int32`` arrays that the page's callbacks index as ``[check][sample][element]``.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from eqmonitor.compare.runs import CompareError, Run, epochs_done

__all__ = ["MAX_PROB_VALUES", "RunView", "image_action", "run_view"]

MAX_PROB_VALUES = 4_000_000  # probabilities embedded in a page, over all checks (past it: the last check only)


@dataclass
class RunView:
    """One run's data for the page (see the module docstring); ``layout`` is the element layout's kind."""

    name: str
    steps: list
    epochs: list
    n: int
    k: int
    c: int
    errors: np.ndarray  # [T, N, K]
    probs: Optional[np.ndarray]  # [T', N, K, C] (T' = T, or 1: the last check only)
    consensus: Optional[np.ndarray]  # [T', N, C]: the orbit average of the probabilities
    consensus_errors: Optional[np.ndarray]  # [T, N, K] errors against the consensus (reference="consensus"), or None
    pca: np.ndarray  # [T, N, 2]
    labels: Optional[np.ndarray]  # [N]
    images: Optional[np.ndarray]  # [N, K, H, W] uint8, the probe input at each element
    layout: str  # "circle", "plane", "cartesian" or "finite"
    ex: np.ndarray  # [K] element positions (angle, dx, abscissa or index)
    ey: Optional[np.ndarray]  # [K] dy for plane layouts
    part: np.ndarray  # [K] sub-curve (dihedral flips, SO3 axes)
    element_names: list
    xlabel: str


def _pca(v: np.ndarray) -> np.ndarray:
    """``[N, 2]`` principal components of the rows of ``v [N, K]`` (NaN treated as the column mean)."""
    v = np.where(np.isfinite(v), v, np.nanmean(np.where(np.isfinite(v), v, np.nan), 0, keepdims=True))
    v = np.nan_to_num(v - v.mean(0, keepdims=True))
    if v.shape[1] < 2 or not v.any():
        return np.zeros((v.shape[0], 2))
    u, s, _ = np.linalg.svd(v, full_matrices=False)
    out = u[:, :2] * s[:2]
    return np.pad(out, ((0, 0), (0, 2 - out.shape[1])))


def image_action(spec: str) -> Any:
    """The :class:`~eqmonitor.actions.ImageAction` a records spec (its ``repr``) names, or ``None``: parsed with
    ``ast`` (literal keyword arguments only), never evaluated."""
    from eqmonitor.actions import ImageAction

    try:
        call = ast.parse(spec, mode="eval").body
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "ImageAction"):
            return None
        return ImageAction(**{kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg})
    except (SyntaxError, ValueError, TypeError):
        return None


def _images(run: Run, symmetry: str, elements: np.ndarray) -> Optional[np.ndarray]:
    """The stored probe inputs moved by every element, as grey ``uint8 [N, K, H, W]`` (image inputs only)."""
    import torch

    probe, spec, group = run.probe(), run.symmetry_spec(symmetry), run.group(symmetry)
    if probe is None or group is None or probe["x"].ndim != 4:
        return None
    action = image_action(str(spec.get("input", "")))
    if action is None:
        return None
    x = torch.from_numpy(np.asarray(probe["x"], dtype=np.float32))
    n, k = x.shape[0], elements.shape[0]
    el = torch.from_numpy(elements).to(torch.float32 if group.continuous else torch.long)
    with torch.no_grad():
        moved = action(group, el.repeat(n, 1), x.repeat_interleave(k, 0)).mean(1).numpy()  # [N·K, H, W]
    lo, hi = float(moved.min()), float(moved.max())
    scaled = (moved - lo) / (hi - lo if hi > lo else 1.0)
    return np.round(scaled * 255).astype(np.uint8).reshape(n, k, *moved.shape[1:])


def _layout(run: Run, symmetry: str, elements: np.ndarray) -> tuple:
    from eqmonitor.compare.figures import _layout as figure_layout

    lay = figure_layout(run, symmetry, elements)
    group = run.group(symmetry)
    names = list(lay.ticks) if lay.ticks else []
    if not names and group is not None:
        import torch

        names = [group.describe(torch.as_tensor(e)) for e in elements]
    names = names or [f"element {i}" for i in range(elements.shape[0])]
    kind = lay.kind if lay.kind in ("circle", "plane", "cartesian") else "finite"
    if kind == "circle":  # "90°", "90° flipped"
        names = [f"{math.degrees(a):.0f}°" + ("" if len(lay.part_names) == 1 else f" {lay.part_names[p]}")
                 for a, p in zip(lay.x, lay.part)]  # fmt: skip
    x = lay.x if kind != "cartesian" or lay.xscale == "linear" else np.log(lay.x)
    xlabel = lay.xlabel if lay.xscale == "linear" else f"log {lay.xlabel.replace(' (log axis)', '')}"
    return kind, np.asarray(x, dtype=np.float64), lay.y, np.asarray(lay.part), names, xlabel


def run_view(run: Run, symmetry: str) -> RunView:
    """The page data of ``run`` on ``symmetry`` (its checks with arrays, in step order).

    Raises:
        CompareError: the run has no arrays for ``symmetry``.
    """
    checks = [r for r in run.checks(symmetry) if r.get("arrays")]
    if not checks:
        raise CompareError(f"{run.name} has no orbit tables for {symmetry!r} (written with records=False?).")
    arrays = [run.arrays(r) for r in checks]
    errors = np.stack([np.asarray(a["errors"], dtype=np.float32) for a in arrays])
    t, n, k = errors.shape
    has_probs = all("probs" in a and "probs_classes" not in a for a in arrays)
    probs = consensus = None
    c = 0
    if has_probs:
        c = int(arrays[-1]["probs"].shape[-1])
        chosen = arrays if t * n * k * c <= MAX_PROB_VALUES else arrays[-1:]
        probs = np.stack([np.asarray(a["probs"], dtype=np.float32) for a in chosen])
        with np.errstate(all="ignore"):
            consensus = np.nanmean(probs, 2)  # class scores are invariant: the orbit average of the probabilities
    cons_errors = None
    if any("consensus_errors" in a for a in arrays):  # NaN at checks recorded without them
        cons_errors = np.stack([np.asarray(a["consensus_errors"], dtype=np.float32) if "consensus_errors" in a
                                else np.full((n, k), np.nan, dtype=np.float32) for a in arrays])  # fmt: skip
    elements = np.asarray(arrays[-1]["elements"], dtype=np.float64).reshape(k, -1)
    kind, ex, ey, part, names, xlabel = _layout(run, symmetry, elements)
    labels = run.labels()
    return RunView(
        name=run.name,
        steps=[r["global_step"] for r in checks],
        epochs=[epochs_done(r) for r in checks],
        n=n,
        k=k,
        c=c,
        errors=errors,
        probs=probs,
        consensus=consensus,
        consensus_errors=cons_errors,
        pca=np.stack([_pca(e.astype(np.float64)) for e in errors]).astype(np.float32),
        labels=None if labels is None or labels.shape[0] != n else labels,
        images=_images(run, symmetry, elements),
        layout=kind,
        ex=ex,
        ey=None if ey is None else np.asarray(ey, dtype=np.float64),
        part=part,
        element_names=names,
        xlabel=xlabel,
    )


def circle_xy(angle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit positions of angles on the page's polar plots: 0 to the right, positive angles clockwise (as images
    turn), so a curve's shape matches the turned inputs."""
    return np.cos(angle), -np.sin(angle)


def nice_max(values: np.ndarray) -> float:
    """A round upper bound for ``values`` (the radius of the polar plots)."""
    top = float(np.nanmax(values)) if np.isfinite(values).any() else 1.0
    if top <= 0:
        return 1.0
    step = 10 ** math.floor(math.log10(top))
    return math.ceil(top / step) * step
