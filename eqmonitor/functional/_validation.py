"""The checks every probe (orbit errors, layer-wise errors, gradient errors, the Lie derivative) runs on its
arguments and inputs before touching the model, so that bad input fails early with one message whatever the probe."""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from eqmonitor.functional._isolation import model_device, model_dtype
from eqmonitor.groups.base import as_elements
from eqmonitor.symmetry import Symmetry

__all__: list = []


def check_probe_args(model: Callable, symmetry: Symmetry, max_batch: Union[int, str]) -> None:
    """Check a probe's arguments: a callable model, a :class:`Symmetry`, and ``max_batch`` ``"auto"`` or positive."""
    if not callable(model):
        raise TypeError(f"Expected `model` to be a torch.nn.Module or a callable, but got {type(model).__name__}.")
    if not isinstance(symmetry, Symmetry):
        raise TypeError(
            f"Expected `symmetry` to be an eqmonitor Symmetry, but got {type(symmetry).__name__}; "
            "build one with `Symmetry(group, input_action, output_action)` or `Symmetry.from_spec(...)`."
        )
    if not (max_batch == "auto" or (isinstance(max_batch, int) and not isinstance(max_batch, bool) and max_batch > 0)):
        raise ValueError(f"Expected `max_batch` to be 'auto' or a positive integer, but got {max_batch!r}.")


def check_probe_inputs(
    model: Callable,
    x: Tensor,
    symmetry: Symmetry,
    elements: Union[Tensor, Sequence],
    labels: Optional[Tensor],
) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """Check a probe's inputs (a finite batch of the model's dtype, group elements, labels where the error needs
    them, ``x`` fitting the input action) and return ``x``, ``elements`` and ``labels`` on the model's device."""
    if not isinstance(x, Tensor):
        hint = " (a batch?); pass the input tensor, e.g. `batch[0]`" if isinstance(x, (tuple, list, dict)) else ""
        raise TypeError(f"Expected `x` to be a tensor [N, ...], but got a {type(x).__name__}{hint}.")
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"Expected `x` to hold at least one sample [N, ...], but got shape {tuple(x.shape)}.")
    dtype = model_dtype(model)
    if x.is_floating_point() and dtype is not None and x.dtype != dtype:
        raise TypeError(
            f"Expected `x` to have the model's dtype {dtype}, but got {x.dtype}; cast it with `x.to({dtype})`."
        )
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise ValueError("Expected `x` to be finite, but it contains NaN or Inf; probe with clean inputs.")
    device = model_device(model, x.device)
    elements = as_elements(elements, symmetry.group, device)
    if elements.shape[0] == 0:
        raise ValueError("Expected at least one group element, but got none.")
    if labels is not None:
        if not isinstance(labels, Tensor) or labels.shape[:1] != x.shape[:1]:
            got = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
            raise ValueError(f"Expected `labels` to be a tensor [N] with N = {x.shape[0]}, but got {got}.")
        labels = labels.to(device)
    elif symmetry.needs_labels:
        raise ValueError(f"The `{symmetry.error_name}` error needs `labels`; pass `labels=y`.")
    symmetry.input_action.check(symmetry.group, x, "input")
    return x.to(device), elements, labels
