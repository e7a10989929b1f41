"""Lie derivatives: how fast a model leaves its symmetry under an infinitesimal rotation, shift or scaling.

For a one-parameter subgroup ``g_t = exp(tA)`` (``t``: an angle in radians, a shift in pixels, a log-scale) the Lie
derivative of a model ``h`` at ``x`` (Gruver et al. 2023) is

.. math:: L h(x) = \\frac{d}{dt}\\Big|_{t=0} φ̃\\big(g_t^{-1},\\ h(φ(g_t, x))\\big) = J_h(x)\\, τ_φ(x) - τ_{φ̃}(h(x)),

with ``τ_φ(x) = d/dt φ(g_t, x)`` the tangent of the input and ``τ_φ̃(y)`` that of the output (zero for an invariant
output). It is zero for a model that respects the continuous symmetry. The input tangent is computed from the
image gradient, not by differentiating ``grid_sample`` (biased at ``t = 0``: pixel centres sit on the bilinear
interpolant's kinks), so it carries no interpolation error of a finite angle; what it does carry is the error of
the discrete image gradient, which is the image's error as a sample of a smooth scene, and which matters most when
the model's true derivative is small.

Images move as ``(g·x)(p) = x(M_t⁻¹(p − t_t))``, so ``τ(x)(p) = −∇x(p) · v(p)`` with the generator's vector field
``v(p) = d/dt (M_t p + t_t)`` at ``t = 0`` (pixel units about the image centre; ``x`` along columns, ``y`` down rows):

- ``rotation``: ``v = (−y, x)`` (``M_t = [[cos t, −sin t], [sin t, cos t]]``), so ``τ = y ∂_x x − x ∂_y x``;
- ``translation_x`` / ``translation_y``: ``v = e_x`` / ``e_y``, so ``τ = −∂_x x`` / ``−∂_y x``;
- ``scale``: ``v = p``, so ``τ = −(x ∂_x x + y ∂_y x)``.

Vector fields (:class:`~eqmonitor.actions.VectorField`) also turn their vectors: ``τ(F) = A F − ∇F · v`` with ``A``
the generator's matrix (the rotation generator ``[[0, −1], [1, 0]]``, the identity for scaling, zero for shifts).

The image gradient ``∇x`` is taken by **eighth-order finite differences** by default (``tangent="fd8"``; within
four pixels of the border, narrower central and then fourth-order inward-biased stencils that read nothing outside,
so the image is read as a window onto a smooth scene; wrapping around for ``padding="circular"``); ``"fd6"``,
``"fd4"``, ``"spectral"`` and the former default ``"central"`` (``(x[i+1] − x[i−1]) / 2``, zeros outside) are offered
too (see :mod:`~eqmonitor.functional.tangents`).
The tangent is pushed through the model with one forward-mode ``torch.func.jvp``; layers without forward-mode AD
(``grid_sample``) fall back to the double-backward trick (``J v = ∂/∂w ⟨J^T w, v⟩``).

Accuracy, against a ground truth: smooth scenes (sums of Gaussian bumps) rendered analytically at each angle, shift or
scale, and central differences of the model's output in that parameter (float64, Richardson-checked); 64×64, float64,
``benchmarks/bench_lie_accuracy.py``. With ``"fd8"``, the per-sample vector error ``‖L − L_true‖ / ‖L_true‖`` was at
most 0.9% on plain CNNs and on a nearly SO(2)-invariant escnn model (``FourierELU``; true relative derivative ~1e-5 to
1e-4), for rotations, both shifts and scalings, on images that vanish at the border and on images that do not. The
former ``"central"`` default read 1.6–2.1× the truth on the escnn model (vector errors 280–1060%), was 2–3% off on
plain CNNs, and where images do not vanish at the border read their edge as moving (shifts 1.6–5.3× the truth). The
former tangent agrees with finite differences of eqmonitor's bilinear action within a few percent: it inherits that
action's interpolation, not the scene's motion.

Masks. Where the input action masks images to the inscribed disc (SO(2) with ``mask="auto"``), the model is evaluated
at the masked image ``m·x`` and the input tangent is ``m·τ(x)``, the exact tangent of the masked continuous image for
rotations (the disc is rotation-invariant); a difference across the mask's staircase edge would instead add spurious
motion at the rim. For other generators the mask's own edge term is left out (a property of the mask, not of the
model). For disc-masked image outputs the derivative is compared inside the disc less the ring its stencils reach
across the edge (4 pixels for ``"fd8"``, 1 for ``"central"``, where ``τ_φ̃`` would difference across the edge).

Chain rule (per-layer attribution). For a chain ``h = f_n ∘ … ∘ f_1`` with features ``h_m`` and feature tangents
``τ_m`` (``τ_0`` the input's, ``τ_n`` the output's), each layer has its own Lie derivative on its actual input,
``L_m = J_{f_m} τ_{m−1} − τ_m``, and the sum telescopes:

.. math:: \\sum_m J_{f_n ∘ … ∘ f_{m+1}} L_m = J_h τ_0 − τ_n = L h(x).

Feature tangents follow the feature actions of the layer-wise tests: maps ``[B, C, h, w]`` (``h, w > 1``) move like
the image at their own resolution (shifts scaled by ``w / W``, ``h / H``), pooled or flattened features (``[B, D]``,
``[B, C, 1, 1]``) are invariant (zero tangent).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from eqmonitor.actions.fields import VectorField
from eqmonitor.actions.image import ImageAction
from eqmonitor.functional._isolation import isolated, model_device
from eqmonitor.functional._validation import check_probe_args as _orbit_errors_arg_validation
from eqmonitor.functional._validation import check_probe_inputs as _orbit_errors_tensor_validation
from eqmonitor.functional.distances import EPS
from eqmonitor.functional.tangents import (
    GENERATORS,
    TANGENTS,
    _default_generator,
    _feature_tangent,
    _mask_output,
    _output_tangent,
    image_tangent,
)
from eqmonitor.symmetry import Symmetry

__all__ = ["GENERATORS", "TANGENTS", "LieDerivative", "image_tangent", "lie_derivative"]

_F64 = torch.float64


@dataclass(frozen=True)
class LieDerivative:
    """The Lie derivative ``L h(x)`` of a model at ``N`` samples, and its per-layer chain-rule contributions.

    Attributes:
        total: ``[N]`` the *relative* Lie derivative ``‖L h(x)‖₂ / ‖h(x)‖₂`` per sample (norms over all output
            components; ``h(x)`` masked like the output action masks it): how fast the output leaves the symmetry per
            unit of the generator's parameter (radian, pixel, log-scale), relative to the output's size.
        derivative: ``[N, ...]`` the raw ``L h(x)``, shaped like the output (float64; for disc-masked image outputs,
            zero outside the disc and on its edge pixels).
        output_norm: ``[N]`` ``‖h(x)‖₂``, the denominator of ``total``.
        generator: ``"rotation"``, ``"translation_x"``, ``"translation_y"`` or ``"scale"``.
        contributions: ``{layer: [N, ...]}`` in forward order, ``J_{after m} L_m``: they sum to ``derivative``
            (empty unless ``layers`` were given).
        local: ``{layer: [N]}`` each layer's own relative Lie derivative ``‖L_m‖ / ‖h_m‖`` on its actual input (the
            layer alone, like the isolated layer-wise error).
        method: ``"jvp"`` (forward mode) or ``"double_backward"`` (the fallback).
        symmetry: the symmetry's name.
        tangent: how the image tangents were taken, one of :data:`TANGENTS`.
    """

    total: Tensor
    derivative: Tensor
    output_norm: Tensor
    generator: str
    contributions: dict[str, Tensor] = field(default_factory=dict)
    local: dict[str, Tensor] = field(default_factory=dict)
    method: str = "jvp"
    symmetry: str = "symmetry"
    tangent: str = TANGENTS[0]

    @property
    def names(self) -> list[str]:
        """The attributed layers, in forward order."""
        return list(self.contributions)

    def relative(self, layer: Optional[str] = None) -> Tensor:
        """``[N]`` ``‖L h(x)‖ / ‖h(x)‖`` (``layer=None``, i.e. ``total``) or a layer's ``‖J_{after m} L_m‖ / ‖h(x)‖``.

        The contributions sum as vectors, not as norms: their relative norms bound ``total`` from above.
        """
        if layer is None:
            return self.total
        if layer not in self.contributions:
            raise KeyError(f"Unknown layer {layer!r}; the attributed layers are {self.names}.")
        return self.contributions[layer].flatten(1).norm(dim=1) / (self.output_norm + EPS)

    def residual(self) -> Tensor:
        """``[N, ...]`` ``L h(x) − Σ_m contributions`` (rounding error only, for a chain of layers)."""
        if not self.contributions:
            raise ValueError("No layer contributions; pass `layers=[...]` to `lie_derivative`.")
        return self.derivative - sum(self.contributions.values())

    def to(self, device: torch.device | str) -> "LieDerivative":
        moved = {
            f.name: getattr(self, f.name).to(device) for f in fields(self) if isinstance(getattr(self, f.name), Tensor)
        }
        return replace(
            self,
            **moved,
            contributions={k: v.to(device) for k, v in self.contributions.items()},
            local={k: v.to(device) for k, v in self.local.items()},
        )

    def cpu(self) -> "LieDerivative":
        return self.to("cpu")


# ------------------------------------------------------------------------------------------------ forward mode
def _jvp(fn: Callable[[Tensor], Tensor], primal: Tensor, tangent: Tensor) -> tuple[Tensor, Tensor, str]:
    """``(fn(u), J_fn(u) · t, method)``: forward mode, or double backward for ops without forward-mode AD."""
    tangent = tangent.to(primal.dtype)
    try:
        out, jv = torch.func.jvp(fn, (primal.clone(),), (tangent,))
        return out, jv, "jvp"
    except NotImplementedError:
        pass
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "The model has an op without forward-mode AD (e.g. grid_sample), and the double-backward fallback needs "
            "autograd, but this was called under `torch.inference_mode()`; call it outside (Lightning: "
            "`Trainer(inference_mode=False)`)."
        )
    with torch.enable_grad():
        u = primal.detach().clone().requires_grad_(True)
        out = fn(u)
        w = torch.zeros_like(out, requires_grad=True)
        (vjp,) = torch.autograd.grad(out, u, grad_outputs=w, create_graph=True, allow_unused=True)
        if vjp is None or not vjp.requires_grad:  # the output does not depend on the input
            return out.detach(), torch.zeros_like(out), "double_backward"
        (jv,) = torch.autograd.grad(vjp, w, grad_outputs=tangent, allow_unused=True)
    return out.detach(), torch.zeros_like(out) if jv is None else jv, "double_backward"


def _compose(modules: Sequence[nn.Module]) -> Callable[[Tensor], Tensor]:
    def run(u: Tensor) -> Tensor:
        for m in modules:
            u = m(u)
        return u

    return run


def _chain(
    model: nn.Module, symmetry: Symmetry, x0: Tensor, names: Sequence[str]
) -> tuple[list[tuple[str, nn.Module]], Tensor]:
    """The chosen layers in forward order, checked to form the model's whole forward ``f_n ∘ … ∘ f_1`` (up to the
    selected output: a model returning ``{"logits": f_n(…)}`` with ``output_key="logits"`` is a chain)."""
    named = dict(model.named_modules())
    calls: list[tuple[str, tuple, dict, object]] = []

    def hook(name: str) -> Callable:
        def record(module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
            calls.append((name, args, kwargs, output))

        return record

    handles = [named[n].register_forward_hook(hook(n), with_kwargs=True) for n in names]
    try:
        y = symmetry.select_output(model(x0))
    finally:
        for h in handles:
            h.remove()
    hint = (
        "Attribution needs the layers to be the model's whole forward, one after the other (e.g. the children of an "
        "nn.Sequential, with functional steps such as `.flatten(1)` wrapped in modules like nn.Flatten)."
    )
    nested = [(a, b) for a in names for b in names if a != b and b.startswith(a + ".")]
    if nested:
        raise ValueError(
            f"Expected `layers` not to contain one another, but {nested[0][1]!r} is inside {nested[0][0]!r}."
        )
    counts = {n: sum(c[0] == n for c in calls) for n in names}
    bad = {n: c for n, c in counts.items() if c != 1}
    if bad:
        raise ValueError(f"Expected each layer to run exactly once per forward, but got call counts {bad}. {hint}")
    prev: object = x0
    for name, args, kwargs, output in calls:
        if kwargs or len(args) != 1 or args[0] is not prev or not isinstance(output, Tensor):
            where = "the model's input" if prev is x0 else "the previous layer's output"
            raise ValueError(f"The input of layer {name!r} is not {where} (or it is not one tensor). {hint}")
        prev = output
    if y is not prev:
        last = calls[-1][0]
        raise ValueError(f"The model's output is not the output of the last layer {last!r} (as `output_key` picks it). "
                         f"{hint}")  # fmt: skip
    return [(c[0], named[c[0]]) for c in calls], y


# ------------------------------------------------------------------------------------------------ the probe
def _lie_derivative_arg_validation(
    model: Callable, symmetry: Symmetry, generator: Optional[str], layers: Optional[Sequence[str]], tangent: str
) -> None:
    _orbit_errors_arg_validation(model, symmetry, "auto")
    phi, phi_out = symmetry.input_action, symmetry.output_action
    if not isinstance(phi, ImageAction):
        raise TypeError(
            f"Expected the symmetry's input action to be an image action (ImageAction, VectorField), but got {phi!r}; "
            "the Lie derivative needs the input's tangent, which eqmonitor derives for images only."
        )
    if not (phi_out.is_identity or isinstance(phi_out, ImageAction)):
        raise NotImplementedError(
            f"Lie derivatives support invariant outputs and image / vector-field outputs, but the output action is "
            f"{phi_out!r}; use `orbit_errors` for this symmetry."
        )
    if generator is not None and generator not in GENERATORS:
        raise ValueError(f"Expected `generator` to be one of {GENERATORS} or None, but got {generator!r}.")
    if tangent not in TANGENTS:
        raise ValueError(f"Expected `tangent` to be one of {TANGENTS}, but got {tangent!r}.")
    if layers is not None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"Per-layer attribution needs an nn.Module (hooks), but got {type(model).__name__}.")
        if isinstance(layers, str) or not all(isinstance(n, str) for n in layers) or len(layers) == 0:
            raise ValueError(f"Expected `layers` to be a non-empty list of module names, but got {layers!r}.")
        named = dict(model.named_modules())
        missing = [n for n in layers if n not in named or not n]
        if missing:
            raise ValueError(f"Unknown layer names {missing}; the model has {sorted(n for n in named if n)}.")
        if len(set(layers)) != len(layers):
            raise ValueError(f"Expected distinct layer names, but got {list(layers)}.")


def _lie_derivative_update(
    model: Callable,
    x: Tensor,
    symmetry: Symmetry,
    generator: str,
    layers: Optional[Sequence[str]],
    tangent: str = TANGENTS[0],
) -> dict:
    """``L h(x)``, ``h(x)`` and, for a chain of ``layers``, each layer's contribution; runs inside :func:`isolated`."""
    group, phi, phi_out = symmetry.group, symmetry.input_action, symmetry.output_action
    x0 = phi.prepare(group, x)
    vector_field = isinstance(phi, VectorField)
    tau0 = phi.prepare(
        group, image_tangent(x, generator, padding=phi.padding, vector_field=vector_field, method=tangent)
    )
    y, jv, method = _jvp(lambda u: symmetry.select_output(model(u)), x0, tau0)
    phi_out.check(group, y, "output")
    derivative = _mask_output(symmetry, jv.to(_F64) - _output_tangent(symmetry, generator, y, tangent), tangent)
    state = {"derivative": derivative, "output": phi_out.prepare(group, y.to(_F64)), "method": method}
    contributions, local = {}, {}
    if layers is not None:
        chain, _ = _chain(model, symmetry, x0, layers)
        u, tau_in, steps = x0, tau0, []
        for i, (name, module) in enumerate(chain):
            out, jt, m = _jvp(module, u, tau_in)
            last = i == len(chain) - 1
            tau_out = (
                _output_tangent(symmetry, generator, out, tangent)
                if last
                else _feature_tangent(out, x.shape[1:], generator, phi.padding, name, tangent)
            )
            own = jt.to(_F64) - tau_out
            local[name] = own.flatten(1).norm(dim=1) / (out.to(_F64).flatten(1).norm(dim=1) + EPS)
            steps.append((name, out, own))
            u, tau_in, method = out, tau_out, m if m != "jvp" else method
        for i, (name, out, own) in enumerate(steps):
            suffix = [module for _, module in chain[i + 1 :]]
            c = _jvp(_compose(suffix), out, own)[1].to(_F64) if suffix else own
            contributions[name] = _mask_output(symmetry, c, tangent)
        state["method"] = method
    state["contributions"], state["local"] = contributions, local
    return state


def _lie_derivative_compute(
    state: dict, generator: str, symmetry: Symmetry, tangent: str = TANGENTS[0]
) -> LieDerivative:
    norm = state["output"].flatten(1).norm(dim=1)
    return LieDerivative(
        total=state["derivative"].flatten(1).norm(dim=1) / (norm + EPS),
        derivative=state["derivative"],
        output_norm=norm,
        generator=generator,
        contributions=state["contributions"],
        local=state["local"],
        method=state["method"],
        symmetry=symmetry.name,
        tangent=tangent,
    )


def lie_derivative(
    model: Callable,
    x: Tensor,
    symmetry: Symmetry,
    *,
    generator: Optional[str] = None,
    layers: Optional[Sequence[str]] = None,
    tangent: str = TANGENTS[0],
    validate_args: bool = True,
) -> LieDerivative:
    """The Lie derivative ``L h(x) = J_h(x) τ_φ(x) − τ_φ̃(h(x))`` of ``model`` at image inputs ``x [N, ..., H, W]``.

    .. math:: L h(x) = \\frac{d}{dt}\\Big|_{t=0} φ̃\\big(g_t^{-1}, h(φ(g_t, x))\\big),
        \\qquad \\text{total} = \\frac{\\lVert L h(x) \\rVert_2}{\\lVert h(x) \\rVert_2}

    The input tangent ``τ_φ(x)`` is the image gradient (by ``tangent``) times the generator's vector field (see the
    module docstring), masked like the input action masks images; ``h`` is pushed forward with
    ``torch.func.jvp``. With ``layers``, the derivative is split by the chain rule into per-layer contributions
    ``J_{f_n∘…∘f_{m+1}} L_m`` that sum to it (the layers must be the model's whole forward, in order).

    Args:
        model: an ``nn.Module`` (or a callable; attribution needs a module), left exactly as found.
        x: ``[N, ..., H, W]`` images in the model's dtype (moved to its device).
        symmetry: a symmetry whose input action is an :class:`~eqmonitor.actions.ImageAction` (or
            :class:`~eqmonitor.actions.VectorField`) and whose output action is invariant or an image action (image
            outputs move in their own pixel units, as the output action moves them in :func:`orbit_errors`).
        generator: ``"rotation"`` (per radian), ``"translation_x"`` / ``"translation_y"`` (per pixel) or ``"scale"``
            (per unit of log-scale); default from the group: SO2, ``C_n``, ``D_n`` → rotation, translations →
            ``translation_x``, ``Scale`` → scale. It need not belong to the symmetry's group.
        layers: module names forming the model's forward chain (e.g. the children of an ``nn.Sequential``); ``None``
            skips attribution.
        tangent: how image gradients are taken, one of :data:`TANGENTS`: ``"fd8"`` (default, the most accurate
            measured), ``"fd6"``, ``"fd4"``, ``"spectral"`` or the former default ``"central"``.
        validate_args: check arguments and tensors.

    Returns:
        :class:`LieDerivative` (``total [N]``, ``derivative [N, ...]`` float64, ``contributions``).

    Raises:
        TypeError: non-image input action, ``x`` not a tensor or not in the model's dtype, a non-tensor output
            that no ``output_key`` selects a tensor from.
        ValueError: unknown generator or layer names; layers that are not the model's forward chain; bad ``x``.
        NotImplementedError: an output action other than invariant or image (e.g. points, boxes).
        RuntimeError: a layer output whose tangent cannot be derived; an output the output action cannot act on.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> import eqmonitor as eqm
        >>> sym = eqm.Symmetry.from_spec(group="translation", input_kwargs={"padding": "circular"})
        >>> conv = nn.Conv2d(1, 4, 3, padding=1, padding_mode="circular", dtype=torch.float64)
        >>> model = nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> res = lie_derivative(model, torch.randn(2, 1, 16, 16, dtype=torch.float64), sym, layers=["0", "1", "2"])
        >>> res.generator, bool(res.total.max() < 1e-12), res.names
        ('translation_x', True, ['0', '1', '2'])
    """
    if validate_args:
        _lie_derivative_arg_validation(model, symmetry, generator, layers, tangent)
        x, _, _ = _orbit_errors_tensor_validation(model, x, symmetry, symmetry.group.identity(), None)
    else:
        x = x.to(model_device(model, x.device))
    generator = _default_generator(symmetry.group) if generator is None else generator
    with isolated(model):
        state = _lie_derivative_update(model, x, symmetry, generator, layers, tangent)
    return _lie_derivative_compute(state, generator, symmetry, tangent)
