"""EquivarianceError: a torchmetrics Metric that accumulates orbit errors over batches and processes.

The orbit elements are fixed when the metric is built, so every update (and every rank) measures the same ``K``
elements and the states are per element: sums, sums of squares, counts, maxima and non-finite counts, all reduced
exactly across processes by torchmetrics.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from eqmonitor.audit import default_elements
from eqmonitor.functional._metric_stats import _STATS, _orbit_stats_compute, _orbit_stats_default, _orbit_stats_update
from eqmonitor.functional.orbit import orbit_errors
from eqmonitor.groups import _as_elements
from eqmonitor.results import OrbitErrors
from eqmonitor.symmetry import OutputKey, Symmetry

__all__ = ["EquivarianceError"]

_MATPLOTLIB_AVAILABLE = importlib.util.find_spec("matplotlib") is not None  # only `plot` needs it

#: the ``plot`` example needs matplotlib (honoured by the project's conftest, as by pytest-doctestplus)
__doctest_requires__ = {("EquivarianceError.plot",): ["matplotlib"]}

_WHICH = ("errors", "abs_errors", "rel_errors")
_BOUNDED = ("symmetric_relative", "flip")  # distances in [0, 1]


class EquivarianceError(Metric):
    """Orbit error of a model under a symmetry, accumulated over batches and reduced across processes.

    For samples ``x_n`` and the fixed elements ``g_k``, ``e(x_n, g_k) = d(h(φ(g_k, x_n)), φ̃(g_k, h(x_n)))``
    (see :func:`~eqmonitor.functional.orbit_errors`). Over all finite pairs seen:

    .. math:: \\text{mean} = \\frac{\\sum_{n,k} e(x_n, g_k)}{\\#\\{(n, k)\\}}, \\qquad
              \\text{per\\_element\\_mean}_k = \\frac{\\sum_n e(x_n, g_k)}{\\#\\{n\\}}

    ``update(model, x [N, ...], labels [N])`` or ``update(errors: OrbitErrors)`` → ``compute()``: a dict with
    ``mean``, ``max``, ``std`` (scalars), ``per_element_mean``, ``per_element_max``, ``per_element_std`` ``[K]``,
    ``nonfinite`` (count of pairs with NaN/Inf, left out of everything else), ``flip_rate`` (class-score outputs
    only: the fraction of pairs with finite outputs whose top-1 class changed, NaN if none), ``elements [K, p]``
    and, with ``keep_samples``, ``samples [N_total, K]``. The same statistics of one result:
    :meth:`OrbitErrors.statistics <eqmonitor.results.OrbitErrors.statistics>`.

    Args:
        symmetry: a :class:`~eqmonitor.symmetry.Symmetry`, or a dict of
            :meth:`Symmetry.from_spec <eqmonitor.symmetry.Symmetry.from_spec>` arguments (YAML-friendly).
        elements: ``[K, p]`` elements; default :func:`~eqmonitor.audit.default_elements` (every element of a finite
            group of order ≤ ``n_elements``, the plot grid of a one-parameter group, else seeded Haar samples).
        n_elements: how many elements when ``elements`` is not given.
        seed: seed of the dedicated generator for sampled elements (the global RNG is not touched).
        which: the table to accumulate: ``"errors"`` (the symmetry's distance), ``"rel_errors"`` or ``"abs_errors"``.
        max_batch: see :func:`~eqmonitor.functional.orbit_errors`.
        keep_samples: also keep every per-sample row ``[N, K]`` (a ``"cat"`` state: memory grows with the data).
        validate_args: check arguments here and tensors on every update.
        output_key: which part of the model's output to compare (a key, an index or a callable; see
            :class:`~eqmonitor.symmetry.Symmetry`), replacing the symmetry's own when given.
        kwargs: passed to :class:`torchmetrics.Metric` (``sync_on_compute``, ``process_group``, ...).

    Raises:
        TypeError: ``symmetry`` is neither a Symmetry nor a dict.
        ValueError: a bad ``which``, ``n_elements``, ``max_batch`` or empty ``elements``.

    Example:
        >>> import torch
        >>> from eqmonitor.metric import EquivarianceError
        >>> spec = {"name": "c4", "group": "c4", "input": "image", "output": "invariant", "error": "max_abs"}
        >>> metric = EquivarianceError(spec)
        >>> x = torch.arange(1.0, 17.0).reshape(1, 1, 4, 4)
        >>> metric.update(lambda x: x[:, :, 0, 0], x)  # the top-left pixel: not invariant to quarter turns
        >>> out = metric.compute()
        >>> out["per_element_mean"].tolist(), out["mean"].item(), int(out["nonfinite"])
        ([0.0, 12.0, 15.0, 3.0], 7.5, 0)
        >>> metric.reset()
        >>> metric.update(torch.nn.Sequential(torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten()), x)  # invariant
        >>> metric.compute()["max"].item()
        0.0
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    plot_lower_bound = 0.0

    sum: Tensor
    sum_sq: Tensor
    count: Tensor
    max: Tensor
    nonfinite: Tensor
    flips: Tensor
    flip_count: Tensor
    flip_pairs: Tensor
    samples: list

    def __init__(
        self,
        symmetry: Union[Symmetry, dict],
        *,
        elements: Optional[Union[Tensor, Sequence]] = None,
        n_elements: int = 36,
        seed: int = 0,
        which: str = "errors",
        max_batch: Union[int, str] = "auto",
        keep_samples: bool = False,
        validate_args: bool = True,
        output_key: OutputKey = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(symmetry, dict):
            symmetry = Symmetry.from_spec(**symmetry)
        if validate_args:
            self._validate(symmetry, n_elements, which, max_batch, keep_samples)
        symmetry = symmetry.with_output_key(output_key)
        self.symmetry, self.which, self.max_batch = symmetry, which, max_batch
        self.keep_samples, self.validate_args = keep_samples, validate_args
        if elements is None:
            elements = default_elements(symmetry.group, n_elements, torch.Generator().manual_seed(seed))
        # a plain CPU attribute (not a buffer): `.half()` / `.to()` must never alter the elements
        self.elements = _as_elements(elements, symmetry.group, "cpu")
        if self.elements.shape[0] == 0:
            raise ValueError("Expected at least one element in `elements`, but got none.")
        # bounded distances plot on [0, 1] (torchmetrics makes `plot_upper_bound` a class constant)
        self._plot_upper_bound = 1.0 if which == "errors" and symmetry.error_name in _BOUNDED else None
        for name, default in _orbit_stats_default(self.elements.shape[0]).items():
            self.add_state(name, default, dist_reduce_fx=_STATS[name])
        if keep_samples:
            self.add_state("samples", [], dist_reduce_fx="cat")

    @staticmethod
    def _validate(symmetry: Any, n_elements: int, which: str, max_batch: Any, keep_samples: Any) -> None:
        if not isinstance(symmetry, Symmetry):
            raise TypeError(
                f"Expected `symmetry` to be an eqmonitor Symmetry or a dict of `Symmetry.from_spec` arguments, but "
                f"got {type(symmetry).__name__}."
            )
        if not isinstance(n_elements, int) or isinstance(n_elements, bool) or n_elements < 1:
            raise ValueError(f"Expected `n_elements` to be a positive integer, but got {n_elements!r}.")
        if which not in _WHICH:
            raise ValueError(f"Expected `which` to be one of {_WHICH}, but got {which!r}.")
        if not (
            max_batch == "auto" or (isinstance(max_batch, int) and not isinstance(max_batch, bool) and max_batch > 0)
        ):
            raise ValueError(f"Expected `max_batch` to be 'auto' or a positive integer, but got {max_batch!r}.")
        if not isinstance(keep_samples, bool):
            raise TypeError(f"Expected `keep_samples` to be a bool, but got {keep_samples!r}.")

    def update(
        self, model: Union[Callable, OrbitErrors], x: Optional[Tensor] = None, labels: Optional[Tensor] = None
    ) -> None:
        """Measure ``model`` on ``x [N, ...]`` (``labels [N]`` if the distance needs them) at the metric's elements,
        or accumulate a precomputed :class:`~eqmonitor.results.OrbitErrors` passed as the only argument.

        Raises:
            TypeError: a result together with ``x``, or a model without ``x``.
            ValueError: a result of another group, distance or element set than the metric's.
        """
        res = self._orbit(model, x, labels)
        values = res.values(self.which)
        for name, stat in _orbit_stats_update(values, res.nonfinite, res.flips).items():
            stat = stat.to(self.device)
            setattr(self, name, torch.maximum(self.max, stat) if name == "max" else getattr(self, name) + stat)
        if self.keep_samples:
            self.samples.append(values.detach().to(self.device, torch.float64))

    def compute(self) -> dict[str, Tensor]:
        """The summary dict (see the class docstring); NaN where no finite pair was seen."""
        state = {name: getattr(self, name) for name in _STATS}
        out = _orbit_stats_compute(**state)
        out["elements"] = self.elements.to(self.device)
        if self.keep_samples:
            out["samples"] = dim_zero_cat(self.samples) if len(self.samples) else self.max.new_zeros(0, len(self.max))
        return out

    def merge_state(self, incoming_state: Union[dict, Metric]) -> None:
        """Add another metric's (or state dict's) statistics to these; the elements must be the same."""
        if isinstance(incoming_state, EquivarianceError):
            self._check_elements(incoming_state.elements, "the incoming metric")
        super().merge_state(incoming_state)

    # ----------------------------------------------------------------------------------------------- helpers
    def _orbit(self, model: Any, x: Optional[Tensor], labels: Optional[Tensor]) -> OrbitErrors:
        if isinstance(model, OrbitErrors):
            if x is not None or labels is not None:
                raise TypeError(
                    "Expected either `update(errors)` with an OrbitErrors, or `update(model, x)`, not both."
                )
            if self.validate_args:
                self._check_result(model)
            return model
        if x is None:
            raise TypeError(f"Expected `update(model, x[, labels])` or `update(errors)`, but got no `x` for a "
                            f"{type(model).__name__}.")  # fmt: skip
        return orbit_errors(model, x, self.symmetry, self.elements, labels=labels, max_batch=self.max_batch,
                            validate_args=self.validate_args)  # fmt: skip

    def _check_result(self, res: OrbitErrors) -> None:
        if repr(res.group) != repr(self.symmetry.group):
            raise ValueError(f"Expected errors of the metric's group {self.symmetry.group!r}, but got {res.group!r}.")
        if self.which == "errors" and res.distance != self.symmetry.error_name:
            raise ValueError(
                f"Expected errors measured with the metric's distance {self.symmetry.error_name!r}, but got "
                f"{res.distance!r}; pass `which='rel_errors'` (or 'abs_errors') to accumulate a common measure."
            )
        self._check_elements(res.elements, "the errors")

    def _check_elements(self, elements: Tensor, what: str) -> None:
        mine = self.elements
        other = elements.detach().to("cpu", mine.dtype)
        if other.shape != mine.shape or not bool(self.symmetry.group.equal(other, mine).all()):
            raise ValueError(
                f"Expected {what} to have the metric's {mine.shape[0]} elements {tuple(mine.shape)}, but got "
                f"{tuple(other.shape)} elements that differ; measure with `elements=metric.elements` so that "
                "every update has the same orbit."
            )

    def plot(self, val: Optional[Union[dict, Sequence[dict]]] = None, ax: Any = None) -> tuple[Any, Any]:
        """Draw the aggregate curve: the mean error at each element (angle for rotations, else the element's
        parameter or index), with a ±1 std band and the overall mean dashed; several values (e.g. one per epoch)
        are overlaid, coloured along viridis in order.

        Args:
            val: a ``compute()`` dict or a sequence of them; default ``self.compute()``.
            ax: a matplotlib Axes to draw into; default a new :class:`matplotlib.figure.Figure` (never pyplot).

        Returns:
            ``(fig, ax)``.

        Raises:
            ModuleNotFoundError: matplotlib is not installed.

        Example:
            >>> import torch
            >>> metric = EquivarianceError({"group": "c4", "output": "invariant", "error": "max_abs"})
            >>> metric.update(lambda x: x[:, :, 0, 0], torch.arange(1.0, 17.0).reshape(1, 1, 4, 4))
            >>> fig, ax = metric.plot()
            >>> type(fig).__name__, ax.lines[0].get_ydata().tolist()
            ('Figure', [0.0, 12.0, 15.0, 3.0])
        """
        if not _MATPLOTLIB_AVAILABLE:
            raise ModuleNotFoundError(
                "`EquivarianceError.plot` needs matplotlib; install it with `pip install matplotlib`."
            )
        from matplotlib import colormaps
        from matplotlib.figure import Figure

        vals = [self.compute()] if val is None else ([val] if isinstance(val, dict) else list(val))
        if ax is None:
            fig = Figure(figsize=(6.0, 4.0), layout="constrained")
            ax = fig.add_subplot()
        else:
            fig = ax.get_figure()
        polar = getattr(ax, "name", "") == "polar"
        xs, label = self._plot_axis(polar)
        order = torch.argsort(xs)
        xs = xs[order].numpy()
        colors = colormaps["viridis"](torch.linspace(0.0, 0.9, len(vals)).numpy()) if len(vals) > 1 else ["C0"]
        for i, v in enumerate(vals):
            mean = v["per_element_mean"].detach().cpu()[order].numpy()
            ax.plot(xs, mean, marker="o", ms=3, color=colors[i], label=f"#{i}" if len(vals) > 1 else None)
            if i == len(vals) - 1:
                std = v["per_element_std"].detach().cpu()[order].numpy() if "per_element_std" in v else None
                if std is not None and not polar:
                    ax.fill_between(xs, (mean - std).clip(min=0.0), mean + std, color=colors[i], alpha=0.2, lw=0)
                if not polar:
                    ax.axhline(float(v["mean"]), color=colors[i], ls="--", lw=1, label="mean over all pairs")
        if not polar:
            ax.set_xlabel(label)
            ax.set_ylim(bottom=self.plot_lower_bound, top=self._plot_upper_bound)
        ax.set_ylabel(f"mean {self.symmetry.error_name if self.which == 'errors' else self.which}")
        last = vals[-1]
        note = f", {int(last['nonfinite'])} non-finite pairs left out" if int(last["nonfinite"]) else ""
        ax.set_title(f"{self.symmetry.name} ({self.symmetry.group.name}){note}", fontsize="medium")
        if len(vals) > 1 or not polar:
            ax.legend(fontsize="small")
        return fig, ax

    def _plot_axis(self, polar: bool) -> tuple[Tensor, str]:
        """``[K]`` float64 x positions of the elements and the axis label."""
        group, e = self.symmetry.group, self.elements
        angle = getattr(group, "angle", None)
        if group.layout == "circle" and group.param_dim == 1:
            rad = angle(e) if callable(angle) else e[:, 0].to(torch.float64)
            return (rad, "angle (rad)") if polar else (torch.rad2deg(rad), "angle (degrees)")
        if group.param_dim == 1:
            return e[:, 0].to(torch.float64), group.param_names[0]
        return torch.arange(e.shape[0], dtype=torch.float64), "element index"
