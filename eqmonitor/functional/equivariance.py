"""``equivariance_error``: the functional twin of :class:`~eqmonitor.metric.EquivarianceError`.

As torchmetrics pairs ``mean_squared_error`` with ``MeanSquaredError``: one call measures ``model`` on ``x`` at
``elements`` and returns the scalar that the Metric's ``compute()`` returns after one ``update`` of the same batch,
and that the monitor logs as ``equivariance/<symmetry>/error_<reduction>``.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

from torch import Tensor

from eqmonitor.functional.orbit import orbit_errors
from eqmonitor.results import OrbitErrors
from eqmonitor.summary import REDUCTIONS, summarize
from eqmonitor.symmetry import Symmetry

__all__ = ["equivariance_error"]

_WHICH = ("errors", "abs_errors", "rel_errors")


def _equivariance_error_arg_validation(symmetry: Union[Symmetry, dict], reduction: str, which: str) -> Symmetry:
    if isinstance(symmetry, dict):
        symmetry = Symmetry.from_spec(**symmetry)
    if reduction not in REDUCTIONS:
        raise ValueError(f"Expected `reduction` to be one of {tuple(REDUCTIONS)}, but got {reduction!r}.")
    if which not in _WHICH:
        raise ValueError(f"Expected `which` to be one of {_WHICH}, but got {which!r}.")
    return symmetry


def _equivariance_error_compute(orbit: OrbitErrors, reduction: str, which: str) -> Tensor:
    """The ``reduction`` of the finite pairs of ``orbit``'s ``which`` table (0-d float64; NaN if none).

    Example:
        >>> import torch, eqmonitor as eqm
        >>> sym = eqm.Symmetry.from_spec(group="c4", error="max_abs")
        >>> res = eqm.functional.orbit_errors(lambda x: x[:, :, 0, 0], torch.eye(2)[None, None], sym, [0, 1])
        >>> _equivariance_error_compute(res, "max", "errors")
        tensor(1., dtype=torch.float64)
    """
    return summarize(orbit, which).reduce(reduction)


def equivariance_error(
    model: Callable,
    x: Tensor,
    symmetry: Union[Symmetry, dict],
    elements: Union[Tensor, Sequence],
    *,
    labels: Optional[Tensor] = None,
    reduction: str = "mean",
    which: str = "errors",
    max_batch: Union[int, str] = "auto",
    validate_args: bool = True,
) -> Tensor:
    """Orbit error of ``model`` on ``x [N, ...]`` under ``symmetry`` at ``elements [K, p]``, reduced to a scalar.

    .. math:: \\text{mean} = \\frac{1}{\\#\\{(n, k)\\}} \\sum_{n,k} d\\big(h(φ(g_k, x_n)),\\ φ̃(g_k, h(x_n))\\big)

    over the pairs with finite outputs (``"max"``: the largest; ``"p95"``: the 95th percentile).

    Args:
        model: the model (left exactly as found).
        x: ``[N, ...]`` samples.
        symmetry: a :class:`~eqmonitor.symmetry.Symmetry`, or a dict of ``Symmetry.from_spec`` arguments.
        elements: ``[K, p]`` elements (e.g. ``metric.elements``, or ``symmetry.group.grid(K)``).
        labels: ``[N]`` true classes (for the ``confidence`` distance).
        reduction: ``"mean"`` | ``"max"`` | ``"p95"``.
        which: the table reduced: ``"errors"`` (the symmetry's distance), ``"rel_errors"`` or ``"abs_errors"``.
        max_batch: see :func:`~eqmonitor.functional.orbit_errors`.
        validate_args: check arguments and tensors.

    Returns:
        0-d float64 tensor on the model's device; NaN when every pair was non-finite.

    Raises:
        ValueError: a bad ``reduction`` or ``which``; and what :func:`~eqmonitor.functional.orbit_errors` raises.

    Example:
        >>> import torch
        >>> from eqmonitor.functional import equivariance_error
        >>> spec = {"group": "c4", "output": "invariant", "error": "max_abs"}
        >>> x = torch.arange(1.0, 17.0).reshape(1, 1, 4, 4)
        >>> equivariance_error(lambda x: x[:, :, 0, 0], x, spec, [0, 1, 2, 3])  # the top-left pixel
        tensor(7.5000, dtype=torch.float64)
    """
    if validate_args or isinstance(symmetry, dict):
        symmetry = _equivariance_error_arg_validation(symmetry, reduction, which)
    orbit = orbit_errors(model, x, symmetry, elements, labels=labels, max_batch=max_batch, validate_args=validate_args)
    return _equivariance_error_compute(orbit, reduction, which)
