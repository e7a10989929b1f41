"""One check: measure a model on a fixed probe under one symmetry, gathered across processes, summarised once.

A check is a function of ``(model, probe, symmetry, elements, options, gather)`` that returns a :class:`CheckResult`:
the orbit errors of every (sample × element) pair (gathered over ranks, so every rank holds the same table), their
:class:`~eqmonitor.summary.OrbitSummary` (:func:`eqmonitor.summary.summarize`: where every logged
``equivariance/<symmetry>/<name>`` scalar is computed), and the optional layer-wise and gradient results.
:class:`~eqmonitor.callbacks.EquivarianceMonitor` is a schedule around it; the records, sinks and figures only read
what it returns.

``gather(t)`` stacks a tensor over processes as ``[world, *t.shape]`` (every process must call it, with tensors of
the same shape); on one process it is ``t.unsqueeze(0)``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional, Union

import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor

from eqmonitor.functional import gradient_errors, layer_errors, orbit_errors, orbit_errors_with_consensus
from eqmonitor.results import GradientErrors, LayerErrors, OrbitErrors
from eqmonitor.summary import OrbitSummary
from eqmonitor.summary import summarize as summarize_orbit
from eqmonitor.symmetry import Symmetry

__all__ = [
    "CONSENSUS_PREFIX",
    "CheckOptions",
    "CheckResult",
    "Gather",
    "LOSSES",
    "gather_orbit",
    "dry_run",
    "layer_elements",
    "run_check",
    "single_process",
    "summarize",
]

Gather = Callable[[Tensor], Tensor]


def cross_entropy_sum(out: Tensor, y: Tensor) -> Tensor:
    return torch.nn.functional.cross_entropy(out, y, reduction="sum")


def mse_sum(out: Tensor, y: Tensor) -> Tensor:
    return torch.nn.functional.mse_loss(out, y, reduction="sum")


#: the gradient test's named losses (module-level functions, so that a monitor that uses one pickles)
INFERENCE_SKIP = "Gradient tests skipped under inference mode: use `Trainer(inference_mode=False)`."

#: the logged names of the errors against the consensus: ``equivariance/<symmetry>/consensus_error_mean``, ...
CONSENSUS_PREFIX = "consensus_"

LOSSES: dict[str, Callable[[Tensor, Optional[Tensor]], Tensor]] = {"cross_entropy": cross_entropy_sum, "mse": mse_sum}
#: the per-pair tables of an :class:`OrbitErrors` that are gathered across processes
_PAIR_TABLES = (
    *("errors", "abs_errors", "rel_errors", "nonfinite", "flips", "confidence", "confidence_ref"),
    *("top1", "probs"),
)


def single_process(t: Tensor) -> Tensor:
    """The :data:`Gather` of a run on one process."""
    return t.unsqueeze(0)


@dataclass(frozen=True)
class CheckOptions:
    """What one check measures besides the orbit errors (the monitor's arguments of the same names)."""

    layerwise: bool = False
    gradients: bool = False
    loss_fn: Callable[[Tensor, Optional[Tensor]], Tensor] = LOSSES["cross_entropy"]
    layer_samples: int = 16
    max_batch: Union[int, str] = "auto"
    keep_probs: bool = False  # keep the class probabilities of every pair (the records' detail view)
    chunking: str = "mixed"
    #: "identity" (the equivariance error only) or "consensus" (the errors against the consensus as well)
    reference: str = "identity"

    def in_grad_mode(self, warn: bool = True) -> "CheckOptions":
        """These options as they can run now: under ``torch.inference_mode`` (Lightning's default for validation
        hooks) no gradient exists, so the gradient test is dropped, with a warning when ``warn``; else ``self``."""
        if not (self.gradients and torch.is_inference_mode_enabled()):
            return self
        if warn:
            rank_zero_warn(INFERENCE_SKIP, stacklevel=5)
        return replace(self, gradients=False)


@dataclass
class CheckResult:
    """One symmetry's check.

    Attributes:
        symmetry: the symmetry's name (the logging namespace ``equivariance/<symmetry>/``).
        summary: :func:`eqmonitor.summary.summarize` of ``orbit``, the numbers logged under
            ``equivariance/<symmetry>/``.
        orbit: the gathered :class:`OrbitErrors` (all ranks' samples, rank order).
        scalars: ``summary.to_floats()`` (one host transfer): ``error_mean``, ``error_max``, ``error_p95``,
            ``nonfinite`` (fraction of pairs with NaN/Inf outputs), ``exact_error``, ``interp_error``, ``flip_rate``;
            each over finite pairs.
        layers, gradients: this process's layer-wise and gradient results (``None`` when not measured).
        layer_values: ``{layer: isolated error}``, the mean over samples, elements and processes.
        gradient_values: ``{"grad_input" | "grad_param/<param>": error}``, means over elements and processes.
        consensus: the gathered errors against the consensus (``reference="consensus"``), else ``None``; their
            summary is in ``scalars`` as ``consensus_<name>`` (``consensus_error_mean``, ...), so that the two
            references never share a logged name.
    """

    symmetry: str
    summary: OrbitSummary
    orbit: OrbitErrors
    layers: Optional[LayerErrors] = None
    gradients: Optional[GradientErrors] = None
    layer_values: dict[str, float] = field(default_factory=dict)
    gradient_values: dict[str, float] = field(default_factory=dict)
    consensus: Optional[OrbitErrors] = None
    scalars: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        self.scalars = self.summary.to_floats()
        if self.consensus is not None:
            floats = summarize_orbit(self.consensus).to_floats()
            self.scalars.update({f"{CONSENSUS_PREFIX}{k}": v for k, v in floats.items()})

    def logged(self) -> dict[str, float]:
        """Every scalar under its logged key: ``equivariance/<symmetry>/<name>``, ``…/layer/<layer>``, ``…/grad_*``."""
        ns = f"equivariance/{self.symmetry}"
        out = {f"{ns}/{k}": v for k, v in self.scalars.items()}
        out.update({f"{ns}/layer/{k}": v for k, v in self.layer_values.items()})
        out.update({f"{ns}/{k}": v for k, v in self.gradient_values.items()})
        return out

    def report_line(self) -> str:
        """One line for logs and the guard's report: the scalars, the first failing layer, asymmetric gradients."""
        text = f"{self.symmetry}: " + ", ".join(f"{k}={v:.4g}" for k, v in self.scalars.items())
        if self.layers is not None and self.layers.first_failing:
            text += f"; first failing layer: {self.layers.first_failing}"
        if self.gradients is not None:
            broken = self.gradients.broken_params()
            if broken:
                text += f"; parameters with asymmetric gradients: {', '.join(broken[:5])}"
        return text


def summarize(result: OrbitErrors) -> dict[str, float]:
    """Deprecated: use :func:`eqmonitor.summary.summarize` (``summarize(result).to_floats()`` is this dict)."""
    warnings.warn(
        "`eqmonitor.check.summarize` is deprecated and will be removed in the next release; use "
        "`eqmonitor.summary.summarize(result).to_floats()` (or `CheckResult.scalars`).",
        DeprecationWarning,
        stacklevel=2,
    )
    return summarize_orbit(result).to_floats()


def gather_orbit(result: OrbitErrors, gather: Gather) -> OrbitErrors:
    """Every process's ``[n, K]`` tables concatenated in rank order (the same on every process)."""
    changes = {}
    for name in _PAIR_TABLES:
        value = getattr(result, name)
        if value is not None:
            changes[name] = gather(value).flatten(0, 1)
    return replace(result, **changes)


def _gathered_means(values: Tensor, gather: Gather) -> list[float]:
    """Mean over processes (equal shares) of a 1-D tensor of per-process means; one host transfer."""
    return gather(values.double()).nanmean(0).cpu().tolist()


def layer_elements(result: OrbitErrors, elements: Tensor, most: int = 8) -> Tensor:
    """Elements for the costlier layer-wise and gradient tests: the exact ones (at most ``most``) if any, else
    ``most`` spread over ``elements``."""
    exact = result.exact.to(elements.device)
    chosen = elements[exact] if exact.any() else elements
    if chosen.shape[0] > most:
        chosen = chosen[torch.linspace(0, chosen.shape[0] - 1, most).round().long().to(chosen.device)]
    return chosen


def run_check(
    model: Any,
    x: Tensor,
    labels: Optional[Tensor],
    symmetry: Symmetry,
    elements: Tensor,
    options: CheckOptions = CheckOptions(),
    gather: Gather = single_process,
) -> CheckResult:
    """Measure ``model`` on this process's probe ``x`` (and ``labels``) under ``symmetry`` at ``elements``.

    Every process must call it with the same number of samples (the gathers are collectives). Gradient tests need
    autograd: the caller skips them under ``torch.inference_mode``. With ``options.reference="consensus"`` the
    same forwards also give the errors against the consensus (``result.consensus``).
    """
    kw = dict(labels=labels, max_batch=options.max_batch, keep_probs=options.keep_probs, chunking=options.chunking)
    consensus = None
    if options.reference == "consensus":  # one pass of the model: the consensus reuses the orbit's outputs
        orbit, consensus = orbit_errors_with_consensus(model, x, symmetry, elements, **kw)
        consensus = gather_orbit(consensus, gather)
    else:
        orbit = orbit_errors(model, x, symmetry, elements, **kw)
    orbit = gather_orbit(orbit, gather)
    result = CheckResult(symmetry.name, summarize_orbit(orbit), orbit, consensus=consensus)
    if not (options.layerwise or options.gradients):
        return result
    sub_x = x[: options.layer_samples]
    sub_y = None if labels is None else labels[: options.layer_samples]
    sub_el = layer_elements(orbit, elements)
    if options.layerwise:
        layers = layer_errors(model, sub_x, symmetry, sub_el, max_batch=256)
        means = _gathered_means(layers.isolated.double().flatten(1).nanmean(1), gather)
        result.layers, result.layer_values = layers, dict(zip(layers.names, means))
    if options.gradients:
        grads = gradient_errors(model, sub_x, symmetry, sub_el, options.loss_fn, sub_y)
        names = sorted(grads.params)
        stacked = torch.stack([grads.input.double().nanmean()] + [grads.params[n].double().nanmean() for n in names])
        values = _gathered_means(stacked, gather)
        result.gradients = grads
        result.gradient_values = {"grad_input": values[0], **{f"grad_param/{n}": v for n, v in zip(names, values[1:])}}
    return result


def dry_run(
    model: Any, x: Tensor, labels: Optional[Tensor], symmetry: Symmetry, elements: Tensor, options: CheckOptions
) -> None:
    """One tiny probe (2 samples × 2 elements), so that a symmetry that does not fit the model fails before training,
    with what to change, instead of at the first check."""
    try:
        probe = orbit_errors_with_consensus if options.reference == "consensus" else orbit_errors
        probe(model, x[:2], symmetry, elements[:2], max_batch=4, chunking=options.chunking)
        if options.layerwise:
            layer_errors(model, x[:2], symmetry, elements[:2], max_batch=4)
        if options.gradients:
            if labels is None and options.loss_fn is LOSSES["cross_entropy"]:
                raise ValueError(
                    "gradient tests with the cross-entropy loss need class labels in the probe batches; pass "
                    "`label_key=`, or `loss_fn=` that takes `(output, None)`."
                )
            if torch.is_inference_mode_enabled():
                raise RuntimeError("gradient tests cannot run under inference mode.")
    except (ValueError, TypeError, RuntimeError) as err:
        raise type(err)(f"EquivarianceMonitor: the symmetry {symmetry.name!r} does not fit this model: {err}") from err
