"""EquivarianceError: a torchmetrics Metric that accumulates orbit errors over batches and processes.

The orbit elements are fixed when the metric is built, so every update (and every rank) measures the same ``K``
elements and the states are per element: sums, sums of squares, counts, maxima, non-finite counts and which elements
are exact, all reduced exactly across processes by torchmetrics. Every number comes from
:func:`eqmonitor.summary._summary_compute`, as the monitor's logged scalars do.
"""

from __future__ import annotations

import importlib.util
import warnings
from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from eqmonitor.functional._chunking import check_chunking
from eqmonitor.functional.consensus import check_reference, orbit_errors_with_consensus
from eqmonitor.functional.distances import BOUNDED_DISTANCES
from eqmonitor.functional.orbit import orbit_errors
from eqmonitor.groups.base import as_elements as _as_elements
from eqmonitor.results import OrbitErrors
from eqmonitor.summary import (
    _STATE_REDUCE,
    REDUCTIONS,
    OrbitSummary,
    _summary_compute,
    _summary_default,
    _summary_update,
)
from eqmonitor.symmetry import OutputKey, Symmetry

__all__ = ["EquivarianceError"]

_MATPLOTLIB_AVAILABLE = importlib.util.find_spec("matplotlib") is not None  # only `plot` needs it

#: the ``plot`` example needs matplotlib (honoured by the project's conftest, as by pytest-doctestplus)
__doctest_requires__ = {("EquivarianceError.plot",): ["matplotlib"]}

_WHICH = ("errors", "abs_errors", "rel_errors")
_PER_ELEMENT = ("mean", "max", "std")


class EquivarianceError(Metric):
    """Orbit error of a model under a symmetry, accumulated over batches and reduced across processes.

    For samples ``x_n`` and the fixed elements ``g_k``, ``e(x_n, g_k) = d(h(φ(g_k, x_n)), φ̃(g_k, h(x_n)))``
    (see :func:`~eqmonitor.functional.orbit_errors`). Over all finite pairs seen:

    .. math:: \\text{mean} = \\frac{\\sum_{n,k} e(x_n, g_k)}{\\#\\{(n, k)\\}}, \\qquad
              \\text{per\\_element\\_mean}_k = \\frac{\\sum_n e(x_n, g_k)}{\\#\\{n\\}}

    ``update(model, x [N, ...], labels [N])`` or ``update(errors: OrbitErrors)``, then:

    - ``compute()``: one scalar, chosen by ``reduction``: ``"mean"`` (``error_mean``, the default), ``"max"``
      (``error_max``) or ``"p95"`` (``error_p95``; keeps every per-pair value). So ``self.log("eq", metric)``
      works in a ``LightningModule``, and :class:`torchmetrics.MetricCollection` logs several reductions at once.
    - :meth:`per_element`: the ``[K]`` curve (mean, max or std at each element).
    - :meth:`summary`: every statistic as an :class:`~eqmonitor.summary.OrbitSummary`, under the names the
      monitor logs (``error_mean``, ``error_max``, ``error_p95``, ``nonfinite``, ``exact_error``, ``interp_error``,
      ``flip_rate``); ``self.log_dict(metric.summary().scalars())`` logs them all.

    The functional twin is :func:`eqmonitor.functional.equivariance_error`. Non-finite pairs (NaN/Inf outputs) are
    left out of every statistic and counted (``summary().nonfinite`` is their fraction).

    Args:
        symmetry: a :class:`~eqmonitor.symmetry.Symmetry`, or a dict of
            :meth:`Symmetry.from_spec <eqmonitor.symmetry.Symmetry.from_spec>` arguments (YAML-friendly).
        elements: ``[K, p]`` elements; default :func:`~eqmonitor.audit.default_elements` (every element of a finite
            group of order ≤ ``n_elements``, the plot grid of a one-parameter group, else seeded Haar samples).
        n_elements: how many elements when ``elements`` is not given.
        seed: seed of the dedicated generator for sampled elements (the global RNG is not touched).
        which: the table to accumulate: ``"errors"`` (the symmetry's distance), ``"rel_errors"`` or ``"abs_errors"``.
        reduction: what ``compute()`` returns: ``"mean"``, ``"max"`` or ``"p95"``. ``None`` (deprecated) returns the
            dict of earlier releases.
        max_batch, chunking: see :func:`~eqmonitor.functional.orbit_errors`.
        keep_samples: also keep every per-pair value ``[N, K]`` (a ``"cat"`` state: memory grows with the data),
            which ``error_p95`` needs; on by itself for ``reduction="p95"``.
        validate_args: check arguments here and tensors on every update.
        output_key: which part of the model's output to compare (a key, an index or a callable; see
            :class:`~eqmonitor.symmetry.Symmetry`), replacing the symmetry's own when given.
        reference: what each output ``h(φ(g_k, x_n))`` is compared with: ``"identity"`` (default), ``φ̃(g_k, h(x_n))``;
            ``"consensus"``, ``φ̃(g_k, c(x_n))`` with ``c`` the orbit's consensus (for unlabelled data; see
            :func:`~eqmonitor.functional.orbit_errors_with_consensus`). Precomputed updates must match it.
        kwargs: passed to :class:`torchmetrics.Metric` (``sync_on_compute``, ``process_group``, ...).

    Raises:
        TypeError: ``symmetry`` is neither a Symmetry nor a dict.
        ValueError: a bad ``which``, ``reduction``, ``n_elements``, ``max_batch``, ``chunking``, ``reference`` or empty
            ``elements``.

    Example:
        >>> import torch
        >>> from eqmonitor.metric import EquivarianceError
        >>> spec = {"name": "c4", "group": "c4", "input": "image", "output": "invariant", "error": "max_abs"}
        >>> metric = EquivarianceError(spec)
        >>> x = torch.arange(1.0, 17.0).reshape(1, 1, 4, 4)
        >>> metric.update(lambda x: x[:, :, 0, 0], x)  # the top-left pixel: not invariant to quarter turns
        >>> metric.compute()
        tensor(7.5000, dtype=torch.float64)
        >>> metric.per_element().tolist(), metric.summary().to_floats()["error_max"]
        ([0.0, 12.0, 15.0, 3.0], 15.0)
        >>> metric.reset()
        >>> metric.update(torch.nn.Sequential(torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten()), x)  # invariant
        >>> metric.compute().item()
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
    exact: Tensor
    samples: list

    def __init__(
        self,
        symmetry: Union[Symmetry, dict],
        *,
        elements: Optional[Union[Tensor, Sequence]] = None,
        n_elements: int = 36,
        seed: int = 0,
        which: str = "errors",
        reduction: Optional[str] = "mean",
        max_batch: Union[int, str] = "auto",
        keep_samples: bool = False,
        validate_args: bool = True,
        output_key: OutputKey = None,
        chunking: str = "mixed",
        reference: str = "identity",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(symmetry, dict):
            symmetry = Symmetry.from_spec(**symmetry)
        if validate_args:
            self._validate(symmetry, n_elements, which, reduction, max_batch, keep_samples)
            check_chunking(chunking)
            check_reference(reference)
        if reduction is None:
            warnings.warn(
                "`EquivarianceError(reduction=None)` (compute() returning a dict) is deprecated and will be removed "
                "in the next release; use `compute()` for one scalar, `per_element()` for the curve and `summary()` "
                "for every statistic.",
                DeprecationWarning,
                stacklevel=2,
            )
        symmetry = symmetry.with_output_key(output_key)
        self.symmetry, self.which, self.reduction, self.max_batch = symmetry, which, reduction, max_batch
        self.chunking, self.reference = chunking, reference
        self.keep_samples, self.validate_args = keep_samples or reduction == "p95", validate_args
        if elements is None:
            elements = symmetry.group.default_elements(n_elements, torch.Generator().manual_seed(seed))
        # a plain CPU attribute (not a buffer): `.half()` / `.to()` must never alter the elements
        self.elements = _as_elements(elements, symmetry.group, "cpu")
        if self.elements.shape[0] == 0:
            raise ValueError("Expected at least one element in `elements`, but got none.")
        # bounded distances plot on [0, 1] (torchmetrics makes `plot_upper_bound` a class constant)
        self._plot_upper_bound = 1.0 if which == "errors" and symmetry.error_name in BOUNDED_DISTANCES else None
        k = self.elements.shape[0]
        for name, default in _summary_default(k).items():
            self.add_state(name, default, dist_reduce_fx=_STATE_REDUCE[name])
        # which elements are exact: 1 until an update shows otherwise (the input's shape decides it)
        self.add_state("exact", torch.ones(k, dtype=torch.long), dist_reduce_fx="min")
        if self.keep_samples:
            self.add_state("samples", [], dist_reduce_fx="cat")

    @staticmethod
    def _validate(
        symmetry: Any, n_elements: int, which: str, reduction: Any, max_batch: Any, keep_samples: Any
    ) -> None:
        if not isinstance(symmetry, Symmetry):
            raise TypeError(
                f"Expected `symmetry` to be an eqmonitor Symmetry or a dict of `Symmetry.from_spec` arguments, but "
                f"got {type(symmetry).__name__}."
            )
        if not isinstance(n_elements, int) or isinstance(n_elements, bool) or n_elements < 1:
            raise ValueError(f"Expected `n_elements` to be a positive integer, but got {n_elements!r}.")
        if which not in _WHICH:
            raise ValueError(f"Expected `which` to be one of {_WHICH}, but got {which!r}.")
        if reduction is not None and reduction not in REDUCTIONS:
            raise ValueError(f"Expected `reduction` to be one of {tuple(REDUCTIONS)}, but got {reduction!r}.")
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
        for name, stat in _summary_update(values, res.nonfinite, res.flips).items():
            stat = stat.to(self.device)
            setattr(self, name, torch.maximum(self.max, stat) if name == "max" else getattr(self, name) + stat)
        self.exact = torch.minimum(self.exact, res.exact.to(self.device, torch.long))
        if self.keep_samples:
            self.samples.append(values.detach().to(self.device, torch.float64))

    def compute(self) -> Union[Tensor, dict[str, Tensor]]:
        """The ``reduction`` of every finite pair seen (0-d float64; NaN when there was none)."""
        if self.reduction is None:
            return self._legacy_dict(self._summary())
        return self._summary().reduce(self.reduction)

    def summary(self) -> OrbitSummary:
        """Every statistic of the pairs seen, under the monitor's logged names (synced across processes as
        ``compute()`` is); ``error_p95`` is ``None`` unless the metric keeps its samples."""
        with self.sync_context(
            dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync, should_unsync=self._should_unsync
        ):
            return self._summary()

    def per_element(self, stat: str = "mean") -> Tensor:
        """The ``[K]`` curve over the elements: ``"mean"`` (the aggregate NERO curve), ``"max"`` or ``"std"``."""
        if stat not in _PER_ELEMENT:
            raise ValueError(f"Expected `stat` to be one of {_PER_ELEMENT}, but got {stat!r}.")
        return getattr(self.summary(), f"per_element_{stat}")

    def _summary(self) -> OrbitSummary:
        stats = {name: getattr(self, name) for name in _STATE_REDUCE}
        samples = None
        if self.keep_samples:
            samples = dim_zero_cat(self.samples) if len(self.samples) else self.max.new_zeros(0, len(self.max))
        return _summary_compute(stats, self.exact.bool(), samples)

    def _legacy_dict(self, s: OrbitSummary) -> dict[str, Tensor]:
        """The ``compute()`` dict of earlier releases (``nonfinite``: the count)."""
        out = {"mean": s.error_mean, "max": s.error_max, "std": s.error_std, "per_element_mean": s.per_element_mean,
               "per_element_max": s.per_element_max, "per_element_std": s.per_element_std,
               "nonfinite": s.nonfinite_count}  # fmt: skip
        if s.flip_rate is not None:
            out["flip_rate"] = s.flip_rate
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
        probe = orbit_errors if self.reference == "identity" else orbit_errors_with_consensus
        res = probe(model, x, self.symmetry, self.elements, labels=labels, max_batch=self.max_batch,
                    chunking=self.chunking, validate_args=self.validate_args)  # fmt: skip
        return res if self.reference == "identity" else res[1]

    def _check_result(self, res: OrbitErrors) -> None:
        if res.reference != self.reference:
            raise ValueError(f"Expected errors against the metric's reference {self.reference!r}, but got errors "
                             f"against {res.reference!r}; measure with the same `reference`.")  # fmt: skip
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

    def plot(
        self, val: Optional[Union[OrbitSummary, dict, Sequence[Union[OrbitSummary, dict]]]] = None, ax: Any = None
    ) -> tuple[Any, Any]:
        """Draw the aggregate curve: the mean error at each element (angle for rotations, else the element's
        parameter or index), with a ±1 std band and the overall mean dashed; several values (e.g. one per epoch)
        are overlaid, coloured along viridis in order.

        Args:
            val: a :meth:`summary` or a sequence of them (or the dicts of ``reduction=None``); default
                ``self.summary()``.
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

        if val is None:
            val = self.summary()
        vals = [_as_summary(v) for v in ([val] if isinstance(val, (dict, OrbitSummary)) else list(val))]
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
            mean = v.per_element_mean.detach().cpu()[order].numpy()
            ax.plot(xs, mean, marker="o", ms=3, color=colors[i], label=f"#{i}" if len(vals) > 1 else None)
            if i == len(vals) - 1 and not polar:
                std = v.per_element_std.detach().cpu()[order].numpy()
                ax.fill_between(xs, (mean - std).clip(min=0.0), mean + std, color=colors[i], alpha=0.2, lw=0)
                ax.axhline(float(v.error_mean), color=colors[i], ls="--", lw=1, label="mean over all pairs")
        if not polar:
            ax.set_xlabel(label)
            ax.set_ylim(bottom=self.plot_lower_bound, top=self._plot_upper_bound)
        ax.set_ylabel(f"mean {self.symmetry.error_name if self.which == 'errors' else self.which}")
        last = vals[-1]
        n_bad = int(last.nonfinite_count)
        note = f", {n_bad} non-finite pairs left out" if n_bad else ""
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


def _as_summary(value: Union[OrbitSummary, dict]) -> OrbitSummary:
    """A summary, or the ``reduction=None`` dict of earlier releases read as one (for :meth:`plot`)."""
    if isinstance(value, OrbitSummary):
        return value
    nan = torch.full_like(value["mean"], float("nan"))
    per_mean = value["per_element_mean"]
    return OrbitSummary(
        error_mean=value["mean"], error_max=value["max"], error_std=value.get("std", nan), error_p95=None,
        nonfinite=nan, nonfinite_count=value["nonfinite"], exact_error=None, interp_error=None,
        flip_rate=value.get("flip_rate"), per_element_mean=per_mean,
        per_element_max=value.get("per_element_max", per_mean),
        per_element_std=value.get("per_element_std", torch.zeros_like(per_mean)),
        exact=torch.ones_like(per_mean, dtype=torch.bool),
    )  # fmt: skip
