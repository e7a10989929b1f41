"""Figures without pyplot and their Agg rendering to RGB ``uint8``; torch-free, so the figure worker can use it.

Figures are plain :class:`matplotlib.figure.Figure` objects: they are never registered with pyplot, so nothing has
to close them and no global state is touched. ``wandb.Image(fig)`` would need pyplot, so each figure is rendered once
with the Agg canvas and the array goes to every sink (TensorBoard ``add_image(..., dataformats="HWC")``,
``wandb.Image``). matplotlib is imported on first use only, so importing this module does not need it.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

__all__ = ["figure_to_array", "new_figure", "render_rgb"]

_PIP_LINE = "pip install matplotlib"
_MAX_LEGEND = 8


def _require_matplotlib() -> Any:
    """The ``matplotlib`` module, or a ``ModuleNotFoundError`` that says how to install it."""
    try:
        import matplotlib
        import matplotlib.figure  # noqa: F401
        from matplotlib.backends import backend_agg  # noqa: F401
    except ImportError as err:
        raise ModuleNotFoundError(
            f"eqmonitor's plots need matplotlib, which is not installed. Install it with `{_PIP_LINE}`."
        ) from err
    return matplotlib


def new_figure(
    figsize: tuple[float, float] = (6.0, 4.5), dpi: float = 100, layout: Optional[str] = "constrained"
) -> Any:
    """A fresh :class:`matplotlib.figure.Figure` (constrained layout by default), outside pyplot's registry.

    Args:
        figsize: width and height in inches.
        dpi: dots per inch.
        layout: matplotlib layout engine (``"constrained"``), or ``None`` for axes placed by hand (cheaper to draw).

    Returns:
        The figure (no axes yet).

    Raises:
        ModuleNotFoundError: matplotlib is not installed.

    Example:
        >>> fig = new_figure((4, 3))
        >>> type(fig).__name__, len(fig.axes)
        ('Figure', 0)
    """
    _require_matplotlib()
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, dpi=dpi, layout=layout)


def figure_to_array(fig: Any, dpi: Optional[float] = 100) -> np.ndarray:
    """Render ``fig`` once with the Agg canvas to an RGB image ``[H, W, 3]`` ``uint8``.

    ``H, W = round(height · dpi), round(width · dpi)`` for a figure of ``width × height`` inches. The figure's own
    dpi is restored afterwards; the figure is left otherwise unchanged (and is not registered anywhere).

    Args:
        fig: a :class:`matplotlib.figure.Figure`.
        dpi: dots per inch to render at; ``None`` keeps the figure's own.

    Returns:
        ``[H, W, 3]`` ``uint8`` array (a copy, independent of the canvas buffer).

    Raises:
        TypeError: ``fig`` is not a matplotlib Figure.
        ModuleNotFoundError: matplotlib is not installed.

    Example:
        >>> fig = new_figure((2, 1))
        >>> _ = fig.add_subplot().plot([0, 1], [1, 0])
        >>> img = figure_to_array(fig, dpi=50)
        >>> img.shape, img.dtype
        ((50, 100, 3), dtype('uint8'))
    """
    _require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not isinstance(fig, Figure):
        raise TypeError(f"Expected `fig` to be a matplotlib.figure.Figure, but got {type(fig).__name__}.")
    old_dpi = fig.dpi
    try:
        if dpi is not None:
            fig.set_dpi(dpi)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()
    finally:
        fig.set_dpi(old_dpi)


def render_rgb(fig: Any) -> np.ndarray:
    """Render a figure kept for reuse: its Agg canvas (and renderer) is attached once and reused at every call.

    Returns:
        ``[H, W, 3]`` ``uint8`` copy at the figure's own dpi.

    Example:
        >>> fig = new_figure((2, 1), dpi=50)
        >>> render_rgb(fig).shape == render_rgb(fig).shape == (50, 100, 3)
        True
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


# ==================================================================================================== helpers
def _colors(n: int, cmap: str = "viridis") -> list:
    """``n`` colours: ``C0`` for one curve, else evenly spaced along ``cmap`` (0 to 0.9: the last stays visible)."""
    if n == 1:
        return ["C0"]
    import matplotlib

    return [matplotlib.colormaps[cmap](t) for t in np.linspace(0.0, 0.9, n)]


def _legend_labels(labels: list[str]) -> list[Optional[str]]:
    """At most ``_MAX_LEGEND`` labels (first, last and evenly spaced); the others are left out of the legend."""
    keep = set(np.linspace(0, len(labels) - 1, min(len(labels), _MAX_LEGEND)).round().astype(int).tolist())
    return [lab if i in keep else None for i, lab in enumerate(labels)]


def _plane_grid(elements: np.ndarray, values: np.ndarray) -> Optional[tuple]:
    """``(dx [nx], dy [ny], grid [ny, nx])`` averaging repeated shifts (NaN where none), or ``None`` if too sparse."""
    xs, xi = np.unique(elements[:, 0], return_inverse=True)
    ys, yi = np.unique(elements[:, 1], return_inverse=True)
    if xs.size * ys.size > 4 * max(len(values), 1):
        return None
    total, count = np.zeros((ys.size, xs.size)), np.zeros((ys.size, xs.size))
    ok = np.isfinite(values)
    np.add.at(total, (yi[ok], xi[ok]), values[ok])
    np.add.at(count, (yi[ok], xi[ok]), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return xs, ys, np.where(count > 0, total / np.maximum(count, 1), np.nan)


def pca_2d(profiles: Any) -> tuple[np.ndarray, np.ndarray]:
    """First two principal components of the rows of ``profiles [n, K]`` (SVD of the centred data, in float64).

    Each component's sign is fixed so that its loading of largest magnitude is positive (a deterministic layout).
    Accepts a numpy array or a CPU/GPU tensor (copied to the host).

    Returns:
        ``coords [n, 2]`` and ``explained [2]`` (fraction of the variance of each component; zeros if none).

    Example:
        >>> coords, explained = pca_2d(np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]))
        >>> coords[:, 0].round(3).tolist(), explained.round(3).tolist()
        ([-1.414, 0.0, 1.414], [1.0, 0.0])
    """
    if hasattr(profiles, "detach"):  # a torch tensor, without importing torch here
        profiles = profiles.detach().cpu().double().numpy()
    x = np.asarray(profiles, dtype=np.float64)
    centred = x - x.mean(0, keepdims=True)
    _, s, vh = np.linalg.svd(centred, full_matrices=False)
    vh = vh[:2]
    if vh.size:
        vh = vh * np.sign(np.take_along_axis(vh, np.abs(vh).argmax(1)[:, None], 1))
    coords = centred @ vh.T
    var = s**2
    explained = var[:2] / var.sum() if float(var.sum()) > 0 else np.zeros(min(2, len(s)))
    pad = 2 - coords.shape[1]
    return np.pad(coords, ((0, 0), (0, pad)))[:, :2], np.pad(explained, (0, 2 - explained.shape[0]))[:2]
