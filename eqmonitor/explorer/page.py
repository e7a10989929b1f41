"""The NERO explorer: one self-contained HTML page (Bokeh, resources inline) of one run, or two side by side.

NERO's five linked views per run, over the checks of one symmetry:

1. **aggregate**: the mean error over the probe at each element, one curve per class (and all samples), with a
   slider over the training checks; a heat map for 2-D translations (of the class chosen in the menu);
2. **dimension reduction**: each sample's orbit profile reduced to 2-D by PCA, coloured by its mean or variance;
3. **individual**: the selected sample's error along its orbit;
4. **input**: the stored probe input moved by the selected element (image inputs);
5. **detail**: the class probabilities at that element, beside the *consensus* (the orbit average of the
   probabilities, NERO's proxy for ground truth when there are no labels).

Runs monitored with ``reference="consensus"`` also show their errors against the consensus: a grey curve on the
aggregate (all samples) and individual plots, and its value in the line above the plots.

Clicking a scatter point selects a sample, clicking an element on the aggregate or individual plot selects the
transform; the selection is shared by both runs. The callbacks only index the embedded arrays and set the plots'
data (Bokeh draws); nothing is fetched, so the page works from ``file://`` without a network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

from eqmonitor.compare.runs import CompareError, Run
from eqmonitor.compare.stats import same_probe
from eqmonitor.explorer.data import RunView, circle_xy, nice_max, run_view

__all__ = ["build_page", "write_explorer"]

_JS = (Path(__file__).parent / "update.js").read_text(encoding="utf-8")
_PALETTE = "Viridis256"
_SIZE = 330


def _parts(view: RunView) -> list[list[int]]:
    """Element indices of each sub-curve, in drawing order (by angle or abscissa)."""
    return [
        [int(i) for i in sorted(np.flatnonzero(view.part == p), key=lambda i: (view.ex[i], i))]
        for p in np.unique(view.part)
    ]


def _orbit_figure(view: RunView, title: str, name: str, radius: float, mapper: Any) -> tuple[Any, dict]:
    """A figure for a curve over the elements (polar, heat map or line) and its data sources."""
    from bokeh.models import ColumnDataSource, HoverTool, TapTool
    from bokeh.plotting import figure

    lines = ColumnDataSource({"xs": [], "ys": [], "color": [], "width": [], "name": []}, name=f"{name}_lines")
    points = ColumnDataSource({"x": [], "y": [], "v": [], "k": [], "element": []}, name=f"{name}_pts")
    tools = "pan,wheel_zoom,reset,save"
    hover = HoverTool(tooltips=[("element", "@element"), ("value", "@v{0.0000}")])
    if view.layout == "circle":
        r = 1.25 * radius
        fig = figure(title=title, width=_SIZE, height=_SIZE, tools=tools, name=f"{name}_fig", x_range=(-r, r),
                     y_range=(-r, r))  # fmt: skip
        fig.axis.visible = False
        fig.grid.visible = False
        for frac in (0.25, 0.5, 0.75, 1.0):
            fig.circle(0, 0, radius=frac * radius, fill_color=None, line_color="#cccccc")
            fig.text([frac * radius * 0.72], [frac * radius * 0.72], [f"{frac * radius:.3g}"], text_font_size="8pt",
                     text_color="#888888")  # fmt: skip
        cx, cy = circle_xy(view.ex)
        fig.text(list(1.12 * radius * cx), list(1.12 * radius * cy), [n for n in view.element_names],
                 text_font_size="7pt", text_align="center", text_baseline="middle", text_color="#666666")  # fmt: skip
    elif view.layout == "plane":
        pad = 0.6 * (np.diff(np.unique(view.ex)).min() if np.unique(view.ex).size > 1 else 1.0)
        fig = figure(title=title, width=_SIZE, height=_SIZE, tools=tools, name=f"{name}_fig",
                     x_range=(view.ex.min() - pad, view.ex.max() + pad),
                     y_range=(view.ey.min() - pad, view.ey.max() + pad))  # fmt: skip
        fig.xaxis.axis_label, fig.yaxis.axis_label = "dx (pixels)", "dy (pixels)"
    else:
        span = max(float(view.ex.max() - view.ex.min()), 1e-9)
        x_range = (view.ex.min() - 0.05 * span, view.ex.max() + 0.05 * span)
        fig = figure(title=title, width=_SIZE + 80, height=_SIZE, tools=tools, name=f"{name}_fig", x_range=x_range,
                     y_range=(0, 1.05 * radius))  # fmt: skip
        fig.xaxis.axis_label = view.xlabel
        fig.yaxis.axis_label = "error"
    if view.layout == "plane":
        step = np.diff(np.unique(view.ex)).min() if np.unique(view.ex).size > 1 else 1.0
        glyph = fig.rect("x", "y", width=step, height=step, source=points, line_color=None,
                         fill_color={"field": "v", "transform": mapper})  # fmt: skip
    else:
        fig.multi_line("xs", "ys", line_color="color", line_width="width", source=lines)
        glyph = fig.scatter("x", "y", source=points, size=9, color="#333333", selection_color="#d62728",
                            nonselection_alpha=0.6)  # fmt: skip
    fig.add_tools(TapTool(renderers=[glyph]), hover)
    hover.renderers = [glyph]
    return fig, {"lines": lines, "pts": points}


def _classes(view: RunView) -> list[int]:
    return [] if view.labels is None else sorted(int(c) for c in np.unique(view.labels))


def _radii(view: RunView) -> tuple[float, float]:
    """The radii the aggregate (per-class means) and the individual (any sample) polar plots of ``view`` need."""
    classes = _classes(view)
    with np.errstate(all="ignore"):
        means = [np.nanmean(view.errors, 1)] + [np.nanmean(view.errors[:, view.labels == c], 1) for c in classes]
    errors = view.errors if view.consensus_errors is None else np.stack([view.errors, view.consensus_errors])
    return nice_max(np.stack(means)), nice_max(errors)


def _run_column(view: RunView, index: int, radii: tuple[float, float]) -> tuple[Any, dict]:
    """The five views of one run, and what the page's callback needs of them (``radii``: of its polar plots, the
    same for every run on the page, so that runs side by side compare by eye)."""
    from bokeh.layouts import column, row
    from bokeh.models import ColorBar, ColumnDataSource, Div, HoverTool, LinearColorMapper, TapTool
    from bokeh.plotting import figure

    tag = f"{index}"
    classes = _classes(view)
    agg_radius, ind_radius = radii
    agg_map = LinearColorMapper(palette=_PALETTE, low=0, high=agg_radius)
    ind_map = LinearColorMapper(palette=_PALETTE, low=0, high=ind_radius)
    agg_fig, agg = _orbit_figure(view, "aggregate: mean error per class", f"agg_{tag}", agg_radius, agg_map)
    ind_fig, ind = _orbit_figure(view, "individual: the selected sample", f"ind_{tag}", ind_radius, ind_map)

    scatter = ColumnDataSource({"x": [], "y": [], "c": [], "n": [], "label": []}, name=f"dr_{tag}")
    dr_map = LinearColorMapper(palette=_PALETTE, low=0, high=1, name=f"dr_map_{tag}")
    lo, hi = np.nanmin(view.pca, (0, 1)), np.nanmax(view.pca, (0, 1))
    pad = 0.08 * np.maximum(hi - lo, 1e-9)
    dr_fig = figure(title="PCA of the samples' orbit errors", width=_SIZE + 60, height=_SIZE, name=f"dr_fig_{tag}",
                    tools="pan,wheel_zoom,reset,save", x_range=(lo[0] - pad[0], hi[0] + pad[0]),
                    y_range=(lo[1] - pad[1], hi[1] + pad[1]))  # fmt: skip
    dots = dr_fig.scatter("x", "y", source=scatter, size=8, fill_color={"field": "c", "transform": dr_map},
                          line_color="#333333", selection_line_color="#d62728", selection_line_width=3,
                          nonselection_fill_alpha=0.5)  # fmt: skip
    dr_fig.add_tools(TapTool(renderers=[dots]), HoverTool(renderers=[dots], tooltips=[("sample", "@n"),
                     ("class", "@label"), ("colour", "@c{0.0000}")]))  # fmt: skip
    dr_fig.add_layout(ColorBar(color_mapper=dr_map, width=8), "right")
    dr_fig.xaxis.axis_label, dr_fig.yaxis.axis_label = "PC 1", "PC 2"

    first = np.zeros((1, 1)) if view.images is None else np.flip(view.images[0, 0], 0).astype(np.float64)
    image = ColumnDataSource({"image": [first]}, name=f"img_{tag}")
    img_fig = figure(title="input at the selected element", width=_SIZE - 60, height=_SIZE - 60, tools="save",
                     x_range=(0, 1), y_range=(0, 1), name=f"img_fig_{tag}")  # fmt: skip
    img_fig.axis.visible = False
    img_fig.grid.visible = False
    if view.images is not None:
        img_fig.image("image", x=0, y=0, dw=1, dh=1, source=image, palette="Greys256")
    else:
        img_fig.title.text = "input: not an image (or not recorded)"

    bars = ColumnDataSource({"cls": [], "p": [], "cons": [], "color": []}, name=f"probs_{tag}")
    prob_fig = figure(title="class probabilities at the element (grey: consensus)", width=_SIZE + 60,
                      height=_SIZE - 60, y_range=(0, 1), x_range=(-0.6, max(view.c, 1) - 0.4), tools="save",
                      name=f"probs_fig_{tag}")  # fmt: skip
    prob_fig.vbar(x="cls", top="cons", width=0.8, source=bars, color="#bbbbbb", legend_label="consensus")
    prob_fig.vbar(x="cls", top="p", width=0.45, source=bars, color="color", legend_label="at the element")
    prob_fig.legend.location = "top_right"
    prob_fig.legend.label_text_font_size = "8pt"
    prob_fig.xaxis.axis_label = "class (red: true class)"
    if view.probs is None:
        prob_fig.title.text = "class probabilities: not in these records"

    info = Div(text="", width=2 * _SIZE + 100, name=f"info_{tag}")
    heading = Div(text=f"<h3 style='margin:4px 0'>{_escape(view.name)}</h3>", width=2 * _SIZE)
    layout = column(heading, info, row(agg_fig, dr_fig), row(ind_fig, img_fig), prob_fig)
    flat = lambda a: None if a is None else ColumnDataSource({"v": np.ascontiguousarray(a).reshape(-1)})  # noqa: E731
    cx, cy = circle_xy(view.ex)
    args = {
        "name": view.name, "T": len(view.steps), "N": view.n, "K": view.k, "C": view.c,
        "steps": view.steps, "epochs": view.epochs, "layout": view.layout, "parts": _parts(view),
        "ex": view.ex.tolist(), "ey": [] if view.ey is None else view.ey.tolist(), "cx": cx.tolist(),
        "cy": cy.tolist(), "names": view.element_names, "classes": classes,
        "labels": [] if view.labels is None else view.labels.tolist(),
        "err": flat(view.errors), "cerr": flat(view.consensus_errors), "pca": flat(view.pca),
        "probs": flat(view.probs), "cons": flat(view.consensus),
        "Tp": 0 if view.probs is None else int(view.probs.shape[0]),
        "img": flat(np.flip(view.images, -2) if view.images is not None else None),
        "H": 0 if view.images is None else int(view.images.shape[-2]),
        "W": 0 if view.images is None else int(view.images.shape[-1]),
        "agg": agg, "ind": ind, "dr": scatter, "dr_map": dr_map, "image": image, "bars": bars, "info": info,
        "agg_map": agg_map, "ind_map": ind_map,
    }  # fmt: skip
    return layout, args


def _escape(text: str) -> str:
    import html

    return html.escape(str(text))


def _check_linkable(runs: Sequence[Run], symmetry: str) -> None:
    """Two runs side by side share the selection (sample ``i``, element ``k``): refuse runs whose probes or elements
    differ, where sample ``i`` of one run is not sample ``i`` of the other (records without a probe fingerprint,
    written by older versions, are let through)."""
    if len(runs) < 2 or any(run.fingerprint is None for run in runs):
        return
    why = same_probe(runs, symmetry)
    if why is not None:
        raise CompareError(
            f"{why}; the explorer links sample i and element k of one run to those of the other, so two runs must "
            "share their probe: train them with the same monitor `seed`, `n_samples` and validation data, or write "
            "one page per run."
        )


def build_page(runs: Sequence[Run], symmetry: str, title: str = "eqmonitor · NERO explorer") -> str:
    """The explorer of ``runs`` (one or two) on ``symmetry``, as one standalone HTML document (inline resources)."""
    from bokeh.embed import file_html
    from bokeh.layouts import column, row
    from bokeh.models import ColumnDataSource, CustomJS, Div, RadioButtonGroup, Select, Slider
    from bokeh.resources import INLINE

    _check_linkable(runs, symmetry)
    views = [run_view(run, symmetry) for run in runs]
    radii = tuple(max(r) for r in zip(*(_radii(view) for view in views)))
    columns, data = zip(*(_run_column(view, i, radii) for i, view in enumerate(views)))
    state = ColumnDataSource({"sample": [0], "element": [0]}, name="state")
    most = max(len(v.steps) for v in views)
    slider = Slider(start=0, end=max(most - 1, 1), value=most - 1, step=1, title="training check", width=420,
                    name="check_slider", disabled=most < 2)  # fmt: skip
    color = RadioButtonGroup(labels=["colour: mean", "colour: variance"], active=0, name="color_by")
    classes = sorted({c for d in data for c in d["classes"]})
    pick = Select(title="heat map / class", value="all", options=["all"] + [str(c) for c in classes], width=160,
                  name="class_pick")  # fmt: skip
    shared = {"runs": list(data), "state": state, "slider": slider, "color": color, "pick": pick}
    refresh = CustomJS(args={**shared, "src": None, "what": "refresh"}, code=_JS)
    slider.js_on_change("value", refresh)
    color.js_on_change("active", refresh)
    pick.js_on_change("value", refresh)
    for d in data:
        d["dr"].selected.js_on_change("indices", CustomJS(args={**shared, "src": d["dr"], "what": "sample"}, code=_JS))
        for view in ("agg", "ind"):
            src = d[view]["pts"]
            src.selected.js_on_change("indices", CustomJS(args={**shared, "src": src, "what": "element"}, code=_JS))
    from bokeh.document import Document

    header = Div(
        text=f"<h2 style='margin:4px 0'>{_escape(symmetry)}: {' vs '.join(_escape(v.name) for v in views)}</h2>"
        "<p style='margin:2px 0;color:#555'>Click a point of the PCA scatter to select a sample, an element on the "
        "aggregate or individual plot to select a transform; the slider moves through the training checks.</p>",
        width=1200,
    )
    layout = column(header, row(slider, color, pick), row(*columns))
    doc = Document()
    doc.add_root(layout)
    doc.js_on_event("document_ready", refresh)
    doc.title = title
    return file_html(doc, INLINE, title)


def write_explorer(runs: Sequence[Run], symmetry: str, out: Union[str, Path], progress: bool = False) -> Path:
    """Write :func:`build_page` to ``out`` (an ``.html`` file; its folder is created); returns the path."""
    from eqmonitor.progress import progress_bar

    out = Path(out)
    with progress_bar(1, "eqmonitor report", enabled=progress, unit="page") as bar:
        text = build_page(runs, symmetry)
        bar.update(1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out
