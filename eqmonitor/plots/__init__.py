"""NERO plots of results, drawn on ``matplotlib.figure.Figure`` (never pyplot) and rendered once to RGB arrays.

matplotlib is imported on first use, so ``import eqmonitor.plots`` does not need it.
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
