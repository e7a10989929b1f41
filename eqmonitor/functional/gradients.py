"""Gradient tests: does training itself respect the symmetry?

For a loss ``ℓ`` that the symmetry leaves unchanged (``ℓ(φ̃(g, a), φ̃(g, b)) = ℓ(a, b)``, true of cross-entropy on
invariant logits and of MSE under orthogonal actions):

- *input gradients*: ``∇_z ℓ(h(z), φ̃(g, y))|_{z = φ(g, x)} = φ(g) · ∇_x ℓ(h(x), y)`` for an orthogonal input
  action (exact for index maps: quarter turns, flips, integer shifts);
- *parameter gradients*: ``∇_θ ℓ(h(φ(g, x)), φ̃(g, y)) = ∇_θ ℓ(h(x), y)``, per parameter tensor, so a user sees
  which layer's updates pull the model off the symmetry.

Both use ``torch.autograd.grad`` on the whole probe batch (summed loss, as in training) once per element and never
touch any parameter's ``.grad``.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from eqmonitor._verdicts import default_tolerance
from eqmonitor.functional._isolation import isolated, model_dtype
from eqmonitor.functional._validation import check_probe_args as _orbit_errors_arg_validation
from eqmonitor.functional._validation import check_probe_inputs as _orbit_errors_tensor_validation
from eqmonitor.functional.distances import relative
from eqmonitor.results import GradientErrors
from eqmonitor.symmetry import Symmetry

__all__ = ["gradient_errors"]

_F64 = torch.float64
INFERENCE_MODE_MESSAGE = (
    "Gradient tests need autograd, but they were called under `torch.inference_mode()`. In Lightning, pass "
    "`Trainer(inference_mode=False)` (validation then runs under `torch.no_grad()` instead)."
)


def _loss_and_grads(
    model: nn.Module, symmetry: Symmetry, z: Tensor, target: Optional[Tensor], loss_fn: Callable, params: list[Tensor]
) -> tuple[Tensor, list[Tensor]]:
    z = z.detach().requires_grad_(True)
    loss = loss_fn(symmetry.select_output(model(z)), target)
    if loss.ndim:
        loss = loss.sum()
    grads = torch.autograd.grad(loss, [z, *params], allow_unused=True)
    return grads[0], [g if g is not None else torch.zeros_like(p) for g, p in zip(grads[1:], params)]


def gradient_errors(
    model: nn.Module,
    x: Tensor,
    symmetry: Symmetry,
    elements: Union[Tensor, Sequence],
    loss_fn: Callable[[Tensor, Optional[Tensor]], Tensor],
    labels: Optional[Tensor] = None,
    *,
    tolerance: Optional[float] = None,
    validate_args: bool = True,
) -> GradientErrors:
    """Input- and parameter-gradient errors of ``model`` under ``symmetry``.

    Args:
        model: the model (left exactly as found: ``.grad``, flags, RNG).
        x: ``[N, ...]`` samples; ``elements``: ``[K, p]``.
        loss_fn: ``loss_fn(output, target) -> scalar or [N]``, on the output the symmetry's ``output_key`` selects;
            ``target`` is ``labels`` moved by the output action (``None`` stays ``None``: e.g.
            ``lambda out, _: out.square().sum()``).
        labels: ``[N, ...]`` targets for the loss.
        tolerance: relative error above which a gradient counts as broken (default: the dtype's ``excellent`` top).

    Returns:
        :class:`~eqmonitor.results.GradientErrors`: ``input [N, K]`` and ``params {name: [K]}``.

    Raises:
        RuntimeError: under ``torch.inference_mode()`` (see the message for Lightning).
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError(INFERENCE_MODE_MESSAGE)
    if not isinstance(model, nn.Module):
        raise TypeError(f"Expected `model` to be a torch.nn.Module, got {type(model).__name__}.")
    if validate_args:
        _orbit_errors_arg_validation(model, symmetry, "auto")
    x, elements, _ = _orbit_errors_tensor_validation(model, x, symmetry, elements, None)
    if labels is not None:
        labels = labels.to(x.device)
    group, phi, phi_out = symmetry.group, symmetry.input_action, symmetry.output_action
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    n, k = x.shape[0], elements.shape[0]
    dtype = model_dtype(model) or x.dtype
    with isolated(model, grad=True):
        x0 = phi.prepare(group, x)
        gx_ref, gp_ref = _loss_and_grads(model, symmetry, x0, labels, loss_fn, params)
        input_err = torch.empty(n, k, dtype=_F64, device=x.device)
        param_err = torch.empty(len(params), k, dtype=_F64, device=x.device)
        for i in range(k):
            g = elements[i : i + 1].expand(n, -1)
            target = labels
            if labels is not None and not phi_out.is_identity:
                target = phi_out(group, g, labels)
            gz, gp = _loss_and_grads(model, symmetry, phi(group, g, x0), target, loss_fn, params)
            expected = phi(group, g, gx_ref)
            input_err[:, i] = relative(gz.to(_F64), expected.to(_F64))
            for j, (a, b) in enumerate(zip(gp, gp_ref)):
                param_err[j, i] = relative(a.to(_F64).reshape(1, -1), b.to(_F64).reshape(1, -1))[0]
    return GradientErrors(
        input=input_err,
        params={name: param_err[j] for j, (name, _) in enumerate(named)},
        elements=elements,
        exact=phi.exact_elements(group, elements, x.shape),
        tolerance=default_tolerance(dtype) if tolerance is None else tolerance,
        symmetry=symmetry.name,
        dtype=dtype,
    )
