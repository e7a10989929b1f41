"""NERO plots of results, drawn on ``matplotlib.figure.Figure`` (never pyplot) and rendered once to RGB arrays.

matplotlib is imported on first use, so ``import eqmonitor.plots`` does not need it.

- :mod:`~eqmonitor.plots.nero`: one-shot figures of results objects (``aggregate``, ``individual``,
  ``dimension_reduction``, ``layer_table``);
- :mod:`~eqmonitor.plots.figures`: ``FigureCache``, the same figures kept alive and updated in place (several times
  cheaper per check), from the torch-free data of :mod:`~eqmonitor.plots.payload`;
- :mod:`~eqmonitor.plots.worker`: ``FigureWorker``, which renders them in a child process (``FigureJob`` in,
  ``RenderedFigures`` of PNG-encoded images out, :mod:`~eqmonitor.plots.png`).
"""

from eqmonitor.plots import nero, render
from eqmonitor.plots.nero import aggregate, dimension_reduction, individual, layer_table, pca_2d
from eqmonitor.plots.render import figure_to_array, new_figure

__all__ = [
    "aggregate",
    "dimension_reduction",
    "figure_to_array",
    "individual",
    "layer_table",
    "nero",
    "new_figure",
    "pca_2d",
    "render",
]
