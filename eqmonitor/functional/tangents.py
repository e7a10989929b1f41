"""Input, output and feature tangents ``τ = d/dt|₀ (g_t · x)`` of the plane's one-parameter subgroups, analytic.

Images move as ``(g·x)(p) = x(M_t⁻¹(p − t_t))``, so ``τ(x)(p) = −∇x(p) · v(p)`` with the generator's vector field
``v`` (rotation ``(−y, x)``, shifts ``e_x`` / ``e_y``, scaling ``p``; pixel units about the image centre) and ``∇`` by
central differences; vector fields also turn their vectors. See :mod:`eqmonitor.functional.lie` for why the tangent is
analytic rather than a derivative of ``grid_sample``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from eqmonitor.actions.fields import VectorField
from eqmonitor.actions.image import ImageAction, disc_mask
from eqmonitor.groups import SO2, Cyclic, Dihedral, Group, Scale, Translation
from eqmonitor.symmetry import Symmetry

__all__ = ["GENERATORS", "image_tangent"]

_F64 = torch.float64
#: the one-parameter subgroups of the plane's affine maps that :func:`~eqmonitor.functional.lie_derivative` knows
GENERATORS = ("rotation", "translation_x", "translation_y", "scale")
_GENERATOR_MATRIX = {"rotation": ((0.0, -1.0), (1.0, 0.0)), "scale": ((1.0, 0.0), (0.0, 1.0))}


def _central_difference(x: Tensor, dim: int, circular: bool) -> Tensor:
    """``(x[i+1] − x[i−1]) / 2`` along ``dim``, with zeros outside (or wrapping around if ``circular``)."""
    if circular:
        return (torch.roll(x, -1, dim) - torch.roll(x, 1, dim)) / 2
    n = x.shape[dim]
    zero = torch.zeros_like(x.narrow(dim, 0, 1))
    ahead = torch.cat([x.narrow(dim, 1, n - 1), zero], dim)
    behind = torch.cat([zero, x.narrow(dim, 0, n - 1)], dim)
    return (ahead - behind) / 2


def image_tangent(
    x: Tensor,
    generator: str,
    *,
    padding: str = "zeros",
    shift_scale: tuple[float, float] = (1.0, 1.0),
    vector_field: bool = False,
) -> Tensor:
    """The analytic tangent ``τ(x) = d/dt|₀ (g_t·x)`` of images ``x [B, ..., H, W]`` under a one-parameter subgroup.

    .. math:: τ(x)(p) = −∇x(p) · v(p) \\quad (+\\, A\\, x(p) \\text{ for vector fields})

    with ``v = (−y, x)`` (rotation, per radian), ``e_x`` / ``e_y`` (shifts, per pixel) or ``p`` (scaling, per unit of
    log-scale), in pixel units about the image centre, and ``∇`` by central differences (see the module docstring).

    Args:
        x: ``[B, ..., H, W]`` images.
        generator: one of :data:`GENERATORS`.
        padding: ``"zeros"`` (zeros outside the image) or ``"circular"`` (periodic images).
        shift_scale: ``(sx, sy)``, the size of one shift step in this tensor's pixels (``w / W``, ``h / H`` for a
            feature map of an image ``W`` wide, ``H`` high); rotations and scalings do not depend on it.
        vector_field: channels are ``(v_x, v_y)`` pairs that turn with the plane (``[B, ..., 2k, H, W]``).

    Returns:
        ``[B, ..., H, W]`` the tangent, float64.

    Example:
        >>> import torch
        >>> x = torch.zeros(1, 1, 5, 5, dtype=torch.float64); x[0, 0, 2, 3] = 1.0  # one bright pixel right of centre
        >>> t = image_tangent(x, "rotation")  # turning +x towards +y moves it down: it grows below, fades above
        >>> float(t[0, 0, 3, 3]), float(t[0, 0, 1, 3])
        (0.5, -0.5)
    """
    if generator not in GENERATORS:
        raise ValueError(f"Expected `generator` to be one of {GENERATORS}, but got {generator!r}.")
    xd = x.to(_F64)
    h, w = xd.shape[-2:]
    circular = padding == "circular"
    dx, dy = _central_difference(xd, -1, circular), _central_difference(xd, -2, circular)
    cols = torch.arange(w, dtype=_F64, device=x.device) - (w - 1) / 2
    rows = (torch.arange(h, dtype=_F64, device=x.device) - (h - 1) / 2)[:, None]
    if generator == "rotation":
        tangent = rows * dx - cols * dy
    elif generator == "translation_x":
        tangent = -shift_scale[0] * dx
    elif generator == "translation_y":
        tangent = -shift_scale[1] * dy
    else:
        tangent = -(cols * dx + rows * dy)
    if vector_field and generator in _GENERATOR_MATRIX:
        a = torch.tensor(_GENERATOR_MATRIX[generator], dtype=_F64, device=x.device)
        pairs = xd.reshape(*xd.shape[:-3], -1, 2, h, w)
        tangent = tangent + torch.einsum("ij,...jhw->...ihw", a, pairs).reshape(xd.shape)
    return tangent


def _default_generator(group: Group) -> str:
    if isinstance(group, (SO2, Cyclic, Dihedral)):
        return "rotation"
    if isinstance(group, Translation) and group.space_dim == 2:
        return "translation_x"
    if isinstance(group, Scale):
        return "scale"
    raise ValueError(f"Cannot infer a one-parameter subgroup of {group!r}; pass `generator=` one of {GENERATORS}.")


def _inner_disc(height: int, width: int, device: torch.device) -> Tensor:
    """``[H, W]`` the inscribed disc less its edge pixels: those whose four neighbours all lie in the disc too."""
    m = disc_mask(height, width, device, _F64)
    inner = m.clone()
    inner[1:] *= m[:-1]
    inner[:-1] *= m[1:]
    inner[:, 1:] *= m[:, :-1]
    inner[:, :-1] *= m[:, 1:]
    return inner


def _mask_output(symmetry: Symmetry, d: Tensor) -> Tensor:
    """Mask a derivative like the output action masks outputs; for disc-masked image outputs, also leave out the
    disc's edge pixels, where the central differences of ``τ_φ̃`` would read across the mask's edge."""
    phi_out, group = symmetry.output_action, symmetry.group
    if isinstance(phi_out, ImageAction) and phi_out.uses_mask(group):
        return d * _inner_disc(d.shape[-2], d.shape[-1], d.device)
    return phi_out.prepare(group, d)


def _output_tangent(symmetry: Symmetry, generator: str, y: Tensor) -> Tensor:
    """``τ_φ̃(y)``: zero for an invariant output, the image (or vector-field) tangent for an image output action."""
    phi_out = symmetry.output_action
    if phi_out.is_identity:
        return torch.zeros_like(y, dtype=_F64)
    return image_tangent(y, generator, padding=phi_out.padding, vector_field=isinstance(phi_out, VectorField))


def _feature_tangent(feature: Tensor, input_shape: torch.Size, generator: str, padding: str, name: str) -> Tensor:
    """The tangent of an intermediate feature, by its shape (the feature actions of the layer-wise tests)."""
    shape = feature.shape[1:]
    if len(shape) <= 1 or (len(shape) >= 3 and shape[-2:] == (1, 1)):
        return torch.zeros_like(feature, dtype=_F64)
    if len(shape) >= 3 or tuple(shape) == tuple(input_shape):
        factor = (shape[-1] / input_shape[-1], shape[-2] / input_shape[-2])
        return image_tangent(feature, generator, padding=padding, shift_scale=factor)
    raise RuntimeError(
        f"Cannot derive a tangent for the output of layer {name!r}, of shape {tuple(feature.shape)}: only feature "
        "maps [B, C, h, w] and pooled features [B, D] are supported. Attribute to coarser layers that skip it."
    )
