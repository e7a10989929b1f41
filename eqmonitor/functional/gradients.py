r"""Gradient tests: does training itself respect the symmetry?

For a loss ``ℓ`` that the symmetry leaves unchanged (``ℓ(φ̃(g, a), φ̃(g, b)) = ℓ(a, b)``, true of cross-entropy on
invariant logits and of MSE under orthogonal actions):

- *input gradients*: ``∇_z ℓ(h(z), φ̃(g, y))|_{z = φ(g, x)} = φ(g) · ∇_x ℓ(h(x), y)`` for an orthogonal input
  action (exact for index maps: quarter turns, flips, integer shifts);
- *parameter gradients*: ``∇_θ ℓ(h(φ(g, x)), φ̃(g, y)) = ∇_θ ℓ(h(x), y)``, per parameter tensor, so a user sees
  which layer's updates pull the model off the symmetry.

Both use ``torch.autograd.grad`` on the whole probe batch (summed loss, as in training) once per element and never
touch any parameter's ``.grad``. Each element's forward holds the whole probe moved by that element, so a model
coupled across its batch is measured on the batch it was given.

**Normalisation.** Input gradients are compared against the probe's gradient scale, not each sample's own: a
confidently classified sample has an input gradient near 1e-5, and its own relative error is then rounding or a
small absolute change divided by almost nothing (on the digits CNN trained for 10 epochs the per-sample relative
error had a median of 293 and a mean of 4.3e5). With ``a_nk = ∇_z ℓ|_{z = φ(g_k, x_n)}`` and
``b_nk = φ(g_k) · ∇_x ℓ|_{x_n}``, both restricted to the action's domain (``prepare``: the disc under a disc mask),

.. math:: e_{nk} = \frac{\lVert a_{nk} - b_{nk} \rVert}{s_k}, \qquad
          s_k = \sqrt{\tfrac{1}{2N} \textstyle\sum_n \big(\lVert a_{nk} \rVert^2 + \lVert b_{nk} \rVert^2\big)}

so ``sqrt(mean_n e_nk²) = ‖A_k − B_k‖_F / sqrt((‖A_k‖²_F + ‖B_k‖²_F) / 2)``, the relative error of the probe's
whole input-gradient field at ``g_k``; it is at most 2, and the mean over samples (the logged ``grad_input``) is at
most that. Parameter gradients (one per tensor, of the summed loss) use the same symmetric scale,
``‖a − b‖ / sqrt((‖a‖² + ‖b‖²) / 2)``. Reading the numbers: float rounding (about 1e-7 to 1e-6 in float32) for a
model whose gradients respect the symmetry on exact elements; below the dtype's ``excellent`` band (1e-4 in
float32) is good; 1e-2 and above is broken; about √2 ≈ 1.41 means the gradients at ``g·x`` are unrelated to those at
``x``, and 2 that they are opposite.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from eqmonitor._verdicts import default_tolerance
from eqmonitor.functional._isolation import isolated, model_dtype
from eqmonitor.functional._validation import check_probe_args as _orbit_errors_arg_validation
from eqmonitor.functional._validation import check_probe_inputs as _orbit_errors_tensor_validation
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


def _symmetric_scale(sq_a: Tensor, sq_b: Tensor, n: int) -> Tensor:
    """``sqrt((Σ‖a‖² + Σ‖b‖²) / 2n)``: the RMS norm of both sides (1 where both are zero, so that 0 / 1 = 0)."""
    scale = ((sq_a + sq_b) / (2 * n)).sqrt()
    return torch.where(scale > 0, scale, torch.ones_like(scale))


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
    """Input- and parameter-gradient errors of ``model`` under ``symmetry``, normalised by the probe's gradient scale
(see the module docstring: float rounding is good, 1e-2 and above is broken, √2 means unrelated gradients).

    Args:
        model: the model (left exactly as found: ``.grad``, flags, RNG).
        x: ``[N, ...]`` samples; ``elements``: ``[K, p]``.
        loss_fn: ``loss_fn(output, target) -> scalar or [N]``, on the output the symmetry's ``output_key`` selects;
            ``target`` is ``labels`` moved by the output action (``None`` stays ``None``: e.g.
            ``lambda out, _: out.square().sum()``).
        labels: ``[N, ...]`` targets for the loss.
        tolerance: relative error above which a gradient counts as broken (default: the dtype's ``excellent`` top).

    Returns:
        :class:`~eqmonitor.results.GradientErrors`: ``input [N, K]`` (each sample's gradient error over the probe's
        gradient scale at that element), its raw parts ``input_abs [N, K]`` (``‖a_nk − b_nk‖``) and
        ``input_scale [K]`` (``s_k``), and ``params {name: [K]}``.

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
        input_abs = torch.empty(n, k, dtype=_F64, device=x.device)
        input_scale = torch.empty(k, dtype=_F64, device=x.device)
        param_err = torch.empty(len(params), k, dtype=_F64, device=x.device)
        for i in range(k):
            g = elements[i : i + 1].expand(n, -1)
            target = labels
            if labels is not None and not phi_out.is_identity:
                target = phi_out(group, g, labels)
            gz, gp = _loss_and_grads(model, symmetry, phi(group, g, x0), target, loss_fn, params)
            actual = phi.prepare(group, gz).to(_F64).flatten(1)  # the gradient within the action's domain
            expected = phi(group, g, gx_ref).to(_F64).flatten(1)
            input_abs[:, i] = (actual - expected).norm(dim=1)
            input_scale[i] = _symmetric_scale(actual.square().sum(), expected.square().sum(), n)
            for j, (a, b) in enumerate(zip(gp, gp_ref)):
                a, b = a.to(_F64).flatten(), b.to(_F64).flatten()
                param_err[j, i] = (a - b).norm() / _symmetric_scale(a.square().sum(), b.square().sum(), 1)
    return GradientErrors(
        input=input_abs / input_scale,
        input_abs=input_abs,
        input_scale=input_scale,
        params={name: param_err[j] for j, (name, _) in enumerate(named)},
        elements=elements,
        exact=phi.exact_elements(group, elements, x.shape),
        tolerance=default_tolerance(dtype) if tolerance is None else tolerance,
        symmetry=symmetry.name,
        dtype=dtype,
    )
