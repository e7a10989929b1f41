"""One-shot checks outside training: ``audit()`` returns a report, ``assert_equivariant()`` raises for pytest."""

from __future__ import annotations

import logging
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from eqmonitor.functional._isolation import model_dtype
from eqmonitor.functional.consensus import check_reference, orbit_errors_with_consensus
from eqmonitor.functional.gradients import gradient_errors
from eqmonitor.functional.layerwise import layer_errors
from eqmonitor.functional.orbit import orbit_errors
from eqmonitor.groups import Group
from eqmonitor.report import AuditReport, default_tolerance
from eqmonitor.results import OrbitErrors
from eqmonitor.symmetry import OutputKey, Symmetry

__all__ = ["assert_equivariant", "audit", "default_elements"]

log = logging.getLogger(__name__)


def _default_loss(output: Tensor, labels: Optional[Tensor]) -> Tensor:
    if labels is not None and output.ndim == 2 and not labels.is_floating_point():
        return torch.nn.functional.cross_entropy(output, labels, reduction="sum")
    return output.square().sum()


def default_elements(group: Group, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """``group.default_elements(n, generator)``: the elements an audit probes with by default (see
    :meth:`Group.default_elements <eqmonitor.groups.Group.default_elements>`)."""
    return group.default_elements(n, generator)


def _with_key(symmetry: Symmetry, output_key: OutputKey) -> Symmetry:
    """``symmetry`` with the caller's ``output_key`` (a non-Symmetry is left for the probes to reject)."""
    return symmetry.with_output_key(output_key) if isinstance(symmetry, Symmetry) else symmetry


def audit(
    model: Callable,
    x: Tensor,
    symmetry: Symmetry,
    *,
    labels: Optional[Tensor] = None,
    elements: Optional[Union[Tensor, Sequence]] = None,
    n_elements: int = 32,
    seed: int = 0,
    max_batch: Union[int, str] = "auto",
    chunking: str = "mixed",
    layers: Union[bool, Sequence[str]] = False,
    gradients: bool = False,
    loss_fn: Optional[Callable] = None,
    output_key: OutputKey = None,
    progress: bool = True,
    reference: str = "identity",
) -> AuditReport:
    """Measure ``model`` under ``symmetry`` on ``x`` and summarise it as an :class:`AuditReport`.

    Args:
        model: the model (left exactly as found).
        x: ``[N, ...]`` samples.
        symmetry: what to check.
        labels: ``[N]`` true classes (for the ``confidence`` error).
        elements: ``[K, p]`` elements; default ``group.default_elements`` with ``n_elements`` and ``seed``.
        n_elements: how many elements when ``elements`` is not given.
        seed: seed of the dedicated generator for sampled elements (the global RNG is not touched).
        max_batch, chunking: see :func:`~eqmonitor.functional.orbit_errors` (``chunking="per_sample"`` or
            ``"per_element"`` for a model whose output for one sample depends on the rest of its batch).
        layers: add the layer-wise section (``True``: leaf modules; or a list of module names).
        gradients: add the gradient section, with ``loss_fn(output, labels)`` (default: cross-entropy with
            ``labels`` when given, else the squared output).
        output_key: which part of the model's output to compare (a key, an index or a callable; see
            :class:`~eqmonitor.symmetry.Symmetry`), replacing the symmetry's own when given.
        progress: show progress bars (``tqdm``) for the parts that run longer than a couple of seconds.
        reference: what each output ``h(g·x)`` is compared with. ``"identity"`` (default): ``g·h(x)``, the model's
            own output at the identity moved forward (the equivariance error). ``"consensus"``: ``g·c(x)``, the
            consensus ``c(x) = ⟨g⁻¹·h(g·x)⟩_g`` over the elements moved forward (NERO's stand-in for ground truth on
            unlabelled data; the mean of the probabilities for class scores, compared as log-probabilities; see
            :func:`~eqmonitor.functional.orbit_errors_with_consensus`). The report's kind says which.

    Raises:
        ValueError: an unknown ``reference``, or ``reference="consensus"`` with the ``confidence`` error (it needs
            labels, which the consensus stands in for).

    Example:
        >>> import torch, eqmonitor as eqm
        >>> model = eqm.demos.GroupAveraged(eqm.demos.SmallCNN(), eqm.groups.Cyclic(4))
        >>> sym = eqm.Symmetry.from_spec(name="c4", group="c4", input="image", output="invariant")
        >>> eqm.audit(model, torch.randn(8, 1, 28, 28), sym).verdict
        'exact'
    """
    check_reference(reference)
    symmetry = _with_key(symmetry, output_key)
    if elements is None:
        elements = symmetry.group.default_elements(n_elements, torch.Generator().manual_seed(seed))
    probe = orbit_errors if reference == "identity" else orbit_errors_with_consensus
    orbit = probe(model, x, symmetry, elements, labels=labels, max_batch=max_batch, chunking=chunking,
                  progress=progress)  # fmt: skip
    orbit = orbit if reference == "identity" else orbit[1]
    kind = symmetry.kind if reference == "identity" else f"{symmetry.kind}, against the consensus"
    report = AuditReport.from_orbit(orbit, kind=kind)
    if layers:
        names = None if layers is True else list(layers)
        report.add_layers(layer_errors(model, x, symmetry, orbit.elements, layers=names, progress=progress))
    if gradients:
        report.add_gradients(gradient_errors(model, x, symmetry, orbit.elements, loss_fn or _default_loss, labels))
    log.info("eqmonitor audit of %s: %s (max relative error %.3e)", symmetry.name, report.verdict,
             report.stats["relative"]["error_max"])  # fmt: skip
    return report


def format_failure(orbit: OrbitErrors, tolerance: float) -> str:
    """The assertion message: worst error, where it occurred, and the per-element table."""
    report = AuditReport.from_orbit(orbit)
    n, k, value = orbit.worst("rel_errors")
    where = orbit.group.describe(orbit.elements[k].cpu())
    head = (
        f"{orbit.symmetry}: relative error {value:.3e} > tolerance {tolerance:.1e} at {where}, sample {n}"
        if orbit.n_nonfinite == 0
        else f"{orbit.symmetry}: {orbit.n_nonfinite} (sample, element) pairs gave NaN/Inf outputs"
    )
    return head + "\n" + report.to_text()


def assert_equivariant(
    model: Callable,
    x: Tensor,
    symmetry: Symmetry,
    *,
    elements: Optional[Union[Tensor, Sequence]] = None,
    tolerance: Optional[float] = None,
    labels: Optional[Tensor] = None,
    max_batch: Union[int, str] = "auto",
    output_key: OutputKey = None,
    chunking: str = "mixed",
) -> OrbitErrors:
    """Assert that ``model`` respects ``symmetry`` on ``x``; return the errors.

    The relative error of every (sample, element) pair must be below ``tolerance``, by default the top of the
    ``excellent`` band for the **model's** dtype (1e-4 for float32, 1e-9 for float64). Elements default to the
    group's ``testing_elements()`` (for image rotations, the exact quarter turns). ``output_key`` selects the
    compared part of the model's output, and ``chunking`` which pairs may share a forward, as in :func:`audit`.

    Raises:
        AssertionError: with the worst element, its error and the per-element table.
    """
    __tracebackhide__ = True
    symmetry = _with_key(symmetry, output_key)
    if elements is None:
        elements = symmetry.group.testing_elements()
    orbit = orbit_errors(model, x, symmetry, elements, labels=labels, max_batch=max_batch, chunking=chunking)
    tol = default_tolerance(model_dtype(model) or x.dtype) if tolerance is None else tolerance
    worst = orbit.max("rel_errors")
    if orbit.n_nonfinite or not bool(worst <= tol):
        raise AssertionError(format_failure(orbit, tol))
    log.info("eqmonitor: %s holds (max relative error %.3e <= %.1e)", symmetry.name, float(worst), tol)
    return orbit
